package ndjson

import "errors"

var (
	// ErrShort means the buffer holds no complete line yet; wait for more bytes.
	ErrShort = errors.New("incomplete line")
	// ErrTooLong is a line longer than the caller's maximum. It is decided from the first
	// maxLine+2 bytes, before the rest of the line has arrived.
	ErrTooLong = errors.New("line too long")
	// ErrBlank is a line holding nothing but whitespace; callers skip it.
	ErrBlank = errors.New("blank line")
	// ErrMalformed is a line that is not valid JSON.
	ErrMalformed = errors.New("not valid JSON")
	// ErrNotObject is a line that is valid JSON but not an object.
	ErrNotObject = errors.New("not a JSON object")
	// ErrNoIdentity is an object without the identity field.
	ErrNoIdentity = errors.New("identity field missing")
	// ErrIdentity is an identity field whose value is not a non-empty string or a number, is
	// longer than MaxIdentity bytes, or, for the field "imei", is not 15 digits.
	ErrIdentity = errors.New("invalid identity")
)
