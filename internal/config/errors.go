package config

import (
	"fmt"
	"strings"
)

// ValidationError lists every problem found in a configuration, each in the form
// "dotted.path: message" (problems found while decoding also carry their line).
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	switch len(e.Problems) {
	case 0:
		return "invalid configuration"
	case 1:
		return "invalid configuration: " + e.Problems[0]
	}
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p)
	}
	return b.String()
}

// problems collects validation problems under dotted paths.
type problems []string

func (p *problems) add(path, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	if path == "" {
		*p = append(*p, msg)
		return
	}
	*p = append(*p, path+": "+msg)
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: p}
}
