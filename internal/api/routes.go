package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// HandleRoutes adds the route resource: POST/GET /api/v1/routes, GET/PUT/PATCH/DELETE
// /api/v1/routes/{name}, applied live by c. The body of a write is the config file's route
// schema as JSON; a PATCH is a JSON merge patch (RFC 7396) of the route's current form. Routes of
// the config file are read-only (409). Must be called before Start.
func (s *Server) HandleRoutes(c *control.Control) {
	h := routeHandlers{s: s, c: c}
	s.HandleAPI("GET /api/v1/routes", "routes:read", h.list)
	s.HandleAPI("POST /api/v1/routes", "routes:create", h.create)
	s.HandleAPI("GET /api/v1/routes/{name}", "routes:read", h.get)
	s.HandleAPI("PUT /api/v1/routes/{name}", "routes:update", h.put)
	s.HandleAPI("PATCH /api/v1/routes/{name}", "routes:update", h.patch)
	s.HandleAPI("DELETE /api/v1/routes/{name}", "routes:delete", h.delete)
}

type routeHandlers struct {
	s *Server
	c *control.Control
}

func (h routeHandlers) list(w http.ResponseWriter, r *http.Request) {
	o, ok := listOptions(w, r)
	if !ok {
		return
	}
	page, more := h.c.Routes(o)
	var next string
	if more && len(page) > 0 {
		next = EncodeCursor(page[len(page)-1].Name)
	}
	WriteJSON(w, http.StatusOK, List[control.RouteView]{Data: page, NextCursor: next})
}

func (h routeHandlers) get(w http.ResponseWriter, r *http.Request) {
	p := access.From(r.Context())
	v, ok := h.c.Route(r.PathValue("name"))
	if !ok || !p.Sees(v.Account) {
		writeNotFound(w, "route", r.PathValue("name"))
		return
	}
	writeResource(w, http.StatusOK, v.Meta.Revision, v)
}

func (h routeHandlers) create(w http.ResponseWriter, r *http.Request) {
	h.write(w, r, control.RouteWrite{Create: true})
}

func (h routeHandlers) put(w http.ResponseWriter, r *http.Request) {
	h.write(w, r, control.RouteWrite{Name: r.PathValue("name")})
}

func (h routeHandlers) patch(w http.ResponseWriter, r *http.Request) {
	h.write(w, r, control.RouteWrite{Name: r.PathValue("name"), Patch: true})
}

func (h routeHandlers) write(w http.ResponseWriter, r *http.Request, rw control.RouteWrite) {
	p := access.From(r.Context())
	body, rev, ok := writeInput(w, r)
	if !ok {
		return
	}
	if rw.Name != "" && !rw.Patch && !p.Can("routes", "create") { // a PUT that would create
		if _, exists := h.c.Route(rw.Name); !exists {
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "creating a route needs the right routes:create"})
			return
		}
	}
	rw.Body, rw.Account, rw.HostSecrets, rw.Revision = body, p.Account, p.Super(), rev
	v, created, err := h.c.WriteRoute(r.Context(), rw)
	if err != nil {
		name := rw.Name
		if name == "" {
			name = "in the body"
		}
		writeError(w, h.s, err, "route", name)
		return
	}
	h.s.answerWrite(w, r, created, "routes", v.Name, v.Meta.Revision, v)
}

func (h routeHandlers) delete(w http.ResponseWriter, r *http.Request) {
	p := access.From(r.Context())
	name := r.PathValue("name")
	force := false
	if f := r.URL.Query().Get("force"); f != "" {
		var err error
		if force, err = strconv.ParseBool(f); err != nil {
			WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "force: want true or false"})
			return
		}
	}
	discarded, err := h.c.DeleteRoute(r.Context(), name, p.Account, force)
	if err != nil {
		writeError(w, h.s, err, "route", name)
		return
	}
	h.s.Audit(r, "delete", "routes", name)
	answer := deleted{Name: name, Deleted: true}
	answer.Discarded.Backlog, answer.Discarded.DeadLetters = discarded.Backlog, discarded.DeadLetters
	WriteJSON(w, http.StatusOK, answer)
}

// deleted answers the DELETE of a route: what it discarded (forced; zero otherwise).
type deleted struct {
	Name      string `json:"name"`
	Deleted   bool   `json:"deleted"`
	Discarded struct {
		Backlog     int `json:"backlog"`
		DeadLetters int `json:"dead_letters"`
	} `json:"discarded"`
}

// writeResource answers a route or device with its revision as ETag (what If-Match takes).
func writeResource(w http.ResponseWriter, status int, rev uint64, v any) {
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(rev, 10)))
	WriteJSON(w, status, v)
}

// writeInput reads a write's JSON body and the revision its If-Match expects (0 if none);
// false when it answered a bad request itself.
func writeInput(w http.ResponseWriter, r *http.Request) (json.RawMessage, uint64, bool) {
	var body json.RawMessage
	if !DecodeJSON(w, r, &body) {
		return nil, 0, false
	}
	rev, ok := ifMatch(w, r)
	return body, rev, ok
}

// answerWrite audits a write of a route or device (kind "routes" or "devices") and answers the
// resource: 201 with its Location when the write created it, else 200.
func (s *Server) answerWrite(w http.ResponseWriter, r *http.Request, created bool, kind, id string, rev uint64, v any) {
	status, action := http.StatusOK, "update"
	if created {
		status, action = http.StatusCreated, "create"
		w.Header().Set("Location", "/api/v1/"+kind+"/"+id)
	}
	s.Audit(r, action, kind, id)
	writeResource(w, status, rev, v)
}

// listOptions reads limit, cursor and account of a list; an account-scoped key lists its own
// account only.
func listOptions(w http.ResponseWriter, r *http.Request) (registry.ListOptions, bool) {
	limit, ok := Limit(w, r)
	if !ok {
		return registry.ListOptions{}, false
	}
	after, ok := Cursor(w, r)
	if !ok {
		return registry.ListOptions{}, false
	}
	o := registry.ListOptions{Limit: limit, After: after, Account: r.URL.Query().Get("account")}
	if p := access.From(r.Context()); p.Account != "" {
		if o.Account != "" && o.Account != p.Account {
			o.Match = func(any) bool { return false } // another account's: none it may see
		}
		o.Account = p.Account
	}
	return o, true
}

// ifMatch reads If-Match: the revision a write expects ("3", as the ETag shows it), 0 if absent.
func ifMatch(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" {
		return 0, true
	}
	rev, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(v, "W/"), `"`), 10, 64)
	if err != nil || rev == 0 {
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "If-Match: want a revision as the ETag shows it, e.g. \"3\""})
		return 0, false
	}
	return rev, true
}

func writeNotFound(w http.ResponseWriter, kind, id string) {
	WriteProblem(w, Problem{Status: http.StatusNotFound, Detail: fmt.Sprintf("no %s %q", kind, id)})
}

// writeError answers the error of a route or device write.
func writeError(w http.ResponseWriter, s *Server, err error, kind, id string) {
	var (
		inv  *control.InvalidError
		forb *control.ForbiddenError
		busy *control.BusyError
	)
	switch {
	case errors.As(err, &inv):
		WriteProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: fmt.Sprintf("the %s is not valid", kind), Errors: fieldErrors(inv.Fields)})
	case errors.As(err, &forb):
		WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "the key may not write these values", Errors: fieldErrors(forb.Fields)})
	case errors.As(err, &busy):
		WriteProblem(w, Problem{Status: http.StatusConflict, Title: "Route holds messages", Detail: busy.Error()})
	case errors.Is(err, control.ErrConfigOwned):
		WriteProblem(w, Problem{Status: http.StatusConflict, Title: "Owned by the config file",
			Detail: fmt.Sprintf("%s %q is declared in the config file, which owns it: change it there (the API shows it read-only)", kind, id)})
	case errors.Is(err, registry.ErrNotFound):
		writeNotFound(w, kind, id)
	case errors.Is(err, registry.ErrExists):
		WriteProblem(w, Problem{Status: http.StatusConflict, Detail: fmt.Sprintf("a %s of that name exists", kind)})
	case errors.Is(err, registry.ErrConflict):
		WriteProblem(w, Problem{Status: http.StatusPreconditionFailed, Detail: fmt.Sprintf("the %s changed since the revision in If-Match", kind)})
	default:
		s.log.Error("write", "kind", kind, "id", id, "err", err)
		WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: "the write did not complete"})
	}
}

func fieldErrors(fs []control.Field) []FieldError {
	out := make([]FieldError, len(fs))
	for i, f := range fs {
		out[i] = FieldError{Pointer: f.Pointer, Detail: f.Detail}
	}
	return out
}
