package linkcrypt

import "errors"

// Errors of New and NewHex (wrapped with the field and what was wrong with it).
var (
	// ErrKey: the key is not 32 bytes (64 hex digits), or not hex.
	ErrKey = errors.New("linkcrypt: bad key")
	// ErrIV: the initialization vector is not 16 bytes (32 hex digits), or not hex.
	ErrIV = errors.New("linkcrypt: bad initializationVector")
)

// Errors of Open and ClientOpen.
var (
	// ErrShort: the datagram is shorter than its datagram number.
	ErrShort = errors.New("linkcrypt: datagram shorter than its 8-byte number")
	// ErrLong: the datagram carries more than MaxPlain bytes after its number.
	ErrLong = errors.New("linkcrypt: datagram longer than its counter range")
)
