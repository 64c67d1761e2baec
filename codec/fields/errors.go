package fields

import "errors"

// ErrUnknownField is returned (wrapped, naming the field) by Compile and
// CompileURL for a bracketed name that is not a known dynamic field.
var ErrUnknownField = errors.New("unknown dynamic field")
