package control

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fleetrelay/fleetrelay/actors"
)

// Errors of the writes, beside the registry's (registry.ErrNotFound, ErrExists, ErrConflict).
var (
	// ErrConfigOwned: the resource is declared in the config file, which owns it.
	ErrConfigOwned = errors.New("owned by the config file")
)

// Field is one problem of a request body at its JSON pointer (RFC 6901): "/batch/max_messages".
type Field struct {
	Pointer string
	Detail  string
}

// InvalidError lists every problem of a body (the API answers 422).
type InvalidError struct{ Fields []Field }

func (e *InvalidError) Error() string { return "invalid: " + joinFields(e.Fields) }

// ForbiddenError lists the parts of a body the caller's key may not write (the API answers 403):
// secrets read from the relay host ({env:}, {file:}) need a super key.
type ForbiddenError struct{ Fields []Field }

func (e *ForbiddenError) Error() string { return "forbidden: " + joinFields(e.Fields) }

// BusyError: the route still holds messages or dead letters and the delete was not forced.
type BusyError struct{ Holdings actors.RouteHoldings }

func (e *BusyError) Error() string {
	return fmt.Sprintf("the route holds %d undelivered messages and %d dead letters: disable it instead, let it drain, or delete with force=true to discard them",
		e.Holdings.Backlog, e.Holdings.DeadLetters)
}

func joinFields(fs []Field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Pointer + ": " + f.Detail
	}
	return strings.Join(parts, "; ")
}

// fields turns problems "dotted.path: message" (a leading '.' for a route compiled at path "")
// into JSON pointers; a problem without a path is at the body's root ("").
func fields(problems []string) []Field {
	out := make([]Field, 0, len(problems))
	for _, p := range problems {
		path, detail, ok := strings.Cut(p, ": ")
		if !ok || strings.ContainsAny(path, " \t") {
			out = append(out, Field{Pointer: "", Detail: p})
			continue
		}
		out = append(out, Field{Pointer: Pointer(path), Detail: detail})
	}
	return out
}

// Pointer turns a config path ("batch.max_messages", ".sign.webhooks.secrets[1]",
// "headers.X-Api.Key") into a JSON pointer ("/batch/max_messages", "/sign/webhooks/secrets/1",
// "/headers/X-Api.Key"): a header's name is one token, dots and all.
func Pointer(path string) string {
	path = strings.TrimPrefix(path, ".")
	if path == "" {
		return ""
	}
	var b strings.Builder
	esc := strings.NewReplacer("~", "~0", "/", "~1")
	tok := func(t string) { b.WriteByte('/'); b.WriteString(esc.Replace(t)) }
	if rest, ok := strings.CutPrefix(path, "headers."); ok {
		tok("headers")
		tok(rest)
		return b.String()
	}
	for _, part := range strings.Split(path, ".") {
		name, idx, _ := strings.Cut(part, "[")
		tok(name)
		for idx != "" { // "1]" or "1][2]"
			n, rest, _ := strings.Cut(idx, "]")
			tok(n)
			idx = strings.TrimPrefix(rest, "[")
		}
	}
	return b.String()
}
