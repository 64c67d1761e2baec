package format

import (
	"errors"
	"fmt"
)

var (
	// ErrUnknownFormat is returned (wrapped, naming the format) by Lookup for a name that is not
	// a built-in format.
	ErrUnknownFormat = errors.New("unknown format")
	// ErrOption is returned (wrapped) by Lookup for a missing required option, or an option set
	// for a format that does not use it.
	ErrOption = errors.New("format option")
	// ErrInvalidTemplate is wrapped by the *TemplateError of a template that is not one valid
	// JSON value (or nests too deep).
	ErrInvalidTemplate = errors.New("invalid template")
	// ErrUnknownPlaceholder is wrapped by the *TemplateError of a template that uses a $$name
	// that is neither a built-in placeholder nor a $$data.<path> record field.
	ErrUnknownPlaceholder = errors.New("unknown placeholder")
)

// TemplateError says where a template went wrong. It wraps ErrInvalidTemplate or
// ErrUnknownPlaceholder.
type TemplateError struct {
	Offset int    // byte offset into the template
	Path   string // JSON path of the enclosing value, e.g. "sensorData.speed" or "a[2]"; "" at the top
	Detail string // what is wrong there
	Err    error  // ErrInvalidTemplate or ErrUnknownPlaceholder
}

func (e *TemplateError) Error() string {
	where := fmt.Sprintf("offset %d", e.Offset)
	if e.Path != "" {
		where += " (" + e.Path + ")"
	}
	return fmt.Sprintf("%v at %s: %s", e.Err, where, e.Detail)
}

func (e *TemplateError) Unwrap() error { return e.Err }
