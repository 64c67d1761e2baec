package api

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// RegistryError answers a registry write's error: 404 not found, 409 exists or a revision
// conflict, 500 otherwise.
func RegistryError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		WriteProblem(w, Problem{Status: http.StatusNotFound, Detail: "not found"})
	case errors.Is(err, registry.ErrExists):
		WriteProblem(w, Problem{Status: http.StatusConflict, Detail: "already exists"})
	case errors.Is(err, registry.ErrConflict):
		WriteProblem(w, Problem{Status: http.StatusConflict, Detail: "changed by another request meanwhile: read it again"})
	default:
		WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: err.Error()})
	}
}

// notFound answers 404, as for a resource that does not exist: also what another account's
// resources answer, so an account's key learns nothing of them.
func notFound(w http.ResponseWriter, kind, id string) {
	WriteProblem(w, Problem{Status: http.StatusNotFound, Detail: "no " + kind + " " + id})
}

// invalid answers 422 with the field problems.
func invalid(w http.ResponseWriter, errs ...FieldError) {
	WriteProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: "the request is not valid", Errors: errs})
}

// idPattern is what an account ID may be: it is written in device metadata and route specs.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// newID makes a resource ID: prefix and 16 random base32 characters (80 bits).
func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// nextCursor is the cursor after a page whose last ID is last, "" when no more follow.
func nextCursor(more bool, last string) string {
	if !more {
		return ""
	}
	return EncodeCursor(last)
}
