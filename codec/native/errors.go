package native

import "errors"

var (
	// ErrShort means the buffer holds only part of a frame; wait for more bytes.
	ErrShort = errors.New("short frame")
	// ErrEmptyFrame is a frame whose len is 0.
	ErrEmptyFrame = errors.New("malformed frame: len 0")
	// ErrTooLarge is a frame whose len exceeds the configured maximum.
	ErrTooLarge = errors.New("frame too large")
	// ErrMalformed is a frame or record that does not follow the protocol.
	ErrMalformed = errors.New("malformed frame")
)
