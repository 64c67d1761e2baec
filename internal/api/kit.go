package api

import (
	"net/http"
)

// FieldError is one problem of a request body, at its JSON pointer ("/batch/max_messages").
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// Problem is an RFC 9457 problem detail, as every API error answers (application/problem+json).
type Problem struct {
	Type   string       `json:"type,omitempty"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
}

// WriteProblem answers p as application/problem+json with p.Status (Title defaults to the
// status text).
func WriteProblem(w http.ResponseWriter, p Problem) { panic("api: not implemented") }

// WriteJSON answers v as application/json with status.
func WriteJSON(w http.ResponseWriter, status int, v any) { panic("api: not implemented") }

// DecodeJSON reads r's body (at most 1 MiB) into v. A body that is not JSON, or not one JSON
// value, answers 400 (or 415 for another Content-Type) itself and returns false.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) bool { panic("api: not implemented") }

// EncodeCursor and DecodeCursor make a list's opaque cursor from the last ID of a page and back;
// DecodeCursor reports false for a cursor it did not make.
func EncodeCursor(lastID string) string              { panic("api: not implemented") }
func DecodeCursor(c string) (lastID string, ok bool) { panic("api: not implemented") }

// Limit reads the limit query parameter: default 100, 1..1000; false (400 answered) otherwise.
func Limit(w http.ResponseWriter, r *http.Request) (int, bool) { panic("api: not implemented") }

// HandleAPI adds an endpoint of the authenticated API: pattern is a net/http ServeMux pattern
// with its method ("GET /api/v1/routes/{name}"); right is the "resource:action" the caller's key
// must hold (403 otherwise, after the server authenticated the request: 401). h finds the
// principal with access.From(r.Context()). Must be called before Start.
func (s *Server) HandleAPI(pattern, right string, h http.HandlerFunc) { panic("api: not implemented") }

// Audit logs a change at info level (who: the key id; what: action, kind, id) and counts it in
// fleetrelay_api_changes_total{kind,action}.
func (s *Server) Audit(r *http.Request, action, kind, id string) { panic("api: not implemented") }
