package api

import (
	"net/http"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// accountBody is what POST and PUT /api/v1/accounts take.
type accountBody struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// RegisterAccounts serves the accounts: POST/GET /api/v1/accounts and GET/PUT/DELETE
// /api/v1/accounts/{id}, behind the accounts rights. Only a global key creates accounts; an
// account's key sees only its own (others answer 404). An account is deleted only when no key,
// route or device belongs to it (409).
func (s *Server) RegisterAccounts(reg *registry.Registry) {
	s.HandleAPI("POST /api/v1/accounts", "accounts:create", func(w http.ResponseWriter, r *http.Request) {
		p := access.From(r.Context())
		var b accountBody
		if !DecodeJSON(w, r, &b) {
			return
		}
		if p.Account != "" {
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "only a global key may create accounts"})
			return
		}
		if !idPattern.MatchString(b.ID) {
			invalid(w, FieldError{Pointer: "/id", Detail: "want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"})
			return
		}
		if b.Name == "" {
			b.Name = b.ID
		}
		a := &registry.Account{ID: b.ID, Name: b.Name, Meta: registry.Meta{Source: registry.SourceAPI}}
		if err := reg.Create(r.Context(), a); err != nil {
			RegistryError(w, err)
			return
		}
		s.Audit(r, "create", "account", a.ID)
		got, _ := reg.Account(a.ID)
		WriteJSON(w, http.StatusCreated, got)
	})
	s.HandleAPI("GET /api/v1/accounts", "accounts:read", func(w http.ResponseWriter, r *http.Request) {
		p := access.From(r.Context())
		limit, ok := Limit(w, r)
		if !ok {
			return
		}
		after, ok := Cursor(w, r)
		if !ok {
			return
		}
		o := registry.ListOptions{After: after, Limit: limit}
		if p.Account != "" {
			o.Match = func(v any) bool { a, _ := v.(*registry.Account); return a != nil && a.ID == p.Account }
		}
		page, more := reg.ListAccounts(o)
		out := List[registry.Account]{Data: page}
		if out.Data == nil {
			out.Data = []registry.Account{}
		}
		if len(page) > 0 {
			out.NextCursor = nextCursor(more, page[len(page)-1].ID)
		}
		WriteJSON(w, http.StatusOK, out)
	})
	account := func(w http.ResponseWriter, r *http.Request) (registry.Account, bool) {
		id := r.PathValue("id")
		a, ok := reg.Account(id)
		if !ok || !access.From(r.Context()).Sees(a.ID) {
			notFound(w, "account", id)
			return a, false
		}
		return a, true
	}
	s.HandleAPI("GET /api/v1/accounts/{id}", "accounts:read", func(w http.ResponseWriter, r *http.Request) {
		if a, ok := account(w, r); ok {
			WriteJSON(w, http.StatusOK, a)
		}
	})
	s.HandleAPI("PUT /api/v1/accounts/{id}", "accounts:update", func(w http.ResponseWriter, r *http.Request) {
		a, ok := account(w, r)
		if !ok {
			return
		}
		var b accountBody
		if !DecodeJSON(w, r, &b) {
			return
		}
		if b.ID != "" && b.ID != a.ID {
			invalid(w, FieldError{Pointer: "/id", Detail: "an account's id cannot change"})
			return
		}
		if b.Name == "" {
			invalid(w, FieldError{Pointer: "/name", Detail: "required"})
			return
		}
		a.Name = b.Name
		if err := reg.Update(r.Context(), &a, a.Revision); err != nil {
			RegistryError(w, err)
			return
		}
		s.Audit(r, "update", "account", a.ID)
		got, _ := reg.Account(a.ID)
		WriteJSON(w, http.StatusOK, got)
	})
	s.HandleAPI("DELETE /api/v1/accounts/{id}", "accounts:delete", func(w http.ResponseWriter, r *http.Request) {
		a, ok := account(w, r)
		if !ok {
			return
		}
		one := registry.ListOptions{Account: a.ID, Limit: 1}
		keys, _ := reg.ListKeys(one)
		routes, _ := reg.ListRoutes(one)
		devices, _ := reg.ListDevices(one)
		if len(keys)+len(routes)+len(devices) > 0 {
			WriteProblem(w, Problem{Status: http.StatusConflict,
				Detail: "the account still has keys, routes or devices: delete them first"})
			return
		}
		if err := reg.Delete(r.Context(), registry.Accounts, a.ID); err != nil {
			RegistryError(w, err)
			return
		}
		s.Audit(r, "delete", "account", a.ID)
		w.WriteHeader(http.StatusNoContent)
	})
}
