package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// KeyView is a key as the API shows it: never its hash. Key is set once, in the answer that
// created it (POST /api/v1/keys, or a rotation): it is not stored and cannot be shown again.
type KeyView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Account   string    `json:"account,omitempty"`
	Rights    []string  `json:"rights"`
	Preset    string    `json:"preset,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Key       string    `json:"key,omitempty"`
	registry.Meta
}

func viewOf(k registry.Key) KeyView {
	return KeyView{ID: k.ID, Name: k.Name, Account: k.Account, Rights: k.Rights, Preset: k.Preset, ExpiresAt: k.ExpiresAt, Meta: k.Meta}
}

// keyBody is what POST /api/v1/keys takes.
type keyBody struct {
	Name      string    `json:"name"`
	Account   string    `json:"account"`
	Rights    []string  `json:"rights"`
	Preset    string    `json:"preset"`
	ExpiresAt time.Time `json:"expires_at"`
}

// rotateBody is what POST /api/v1/keys/{id}/rotate takes.
type rotateBody struct {
	// How long the old key stays valid (default 0: it ends now).
	Grace string `json:"grace"`
}

// RegisterKeys serves the API keys: POST/GET /api/v1/keys, GET/DELETE /api/v1/keys/{id} and
// POST /api/v1/keys/{id}/rotate, behind the keys rights. A key is shown once, when made; only
// its hash is stored. A key never grants rights, a preset or an account it does not hold
// itself (403); an account's key makes keys of its account (the default) and sees only those.
func (s *Server) RegisterKeys(reg *registry.Registry) {
	s.HandleAPI("POST /api/v1/keys", "keys:create", func(w http.ResponseWriter, r *http.Request) {
		p := access.From(r.Context())
		var b keyBody
		if !DecodeJSON(w, r, &b) {
			return
		}
		if b.Account == "" {
			b.Account = p.Account // an account's key makes keys of its account
		}
		var errs []FieldError
		if b.Name == "" {
			errs = append(errs, FieldError{Pointer: "/name", Detail: "required"})
		}
		if !b.ExpiresAt.IsZero() && !b.ExpiresAt.After(s.opts.now()) {
			errs = append(errs, FieldError{Pointer: "/expires_at", Detail: "must be in the future"})
		}
		rights, err := p.Grant(b.Account, b.Rights, b.Preset)
		switch {
		case errors.Is(err, access.ErrBadRights):
			ptr := "/rights"
			if b.Preset != "" {
				ptr = "/preset"
			}
			errs = append(errs, FieldError{Pointer: ptr, Detail: err.Error()})
		case err != nil:
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: err.Error()})
			return
		}
		if b.Account != "" {
			if _, ok := reg.Account(b.Account); !ok {
				errs = append(errs, FieldError{Pointer: "/account", Detail: "no such account"})
			}
		}
		if len(errs) > 0 {
			invalid(w, errs...)
			return
		}
		key, hash, err := access.NewKey()
		if err != nil {
			WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: err.Error()})
			return
		}
		k := &registry.Key{ID: newID("key_"), Name: b.Name, Account: b.Account, Rights: rights, Preset: b.Preset,
			Hash: hash, ExpiresAt: b.ExpiresAt.UTC(), Meta: registry.Meta{Source: registry.SourceAPI}}
		if err := reg.Create(r.Context(), k); err != nil {
			RegistryError(w, err)
			return
		}
		s.Audit(r, "create", "key", k.ID)
		got, _ := reg.Key(k.ID)
		v := viewOf(got)
		v.Key = key
		WriteJSON(w, http.StatusCreated, v)
	})
	s.HandleAPI("GET /api/v1/keys", "keys:read", func(w http.ResponseWriter, r *http.Request) {
		p := access.From(r.Context())
		limit, ok := Limit(w, r)
		if !ok {
			return
		}
		after, ok := Cursor(w, r)
		if !ok {
			return
		}
		page, more := reg.ListKeys(registry.ListOptions{After: after, Limit: limit, Account: p.Account})
		out := List[KeyView]{Data: make([]KeyView, 0, len(page))}
		for _, k := range page {
			out.Data = append(out.Data, viewOf(k))
		}
		if len(page) > 0 {
			out.NextCursor = nextCursor(more, page[len(page)-1].ID)
		}
		WriteJSON(w, http.StatusOK, out)
	})
	key := func(w http.ResponseWriter, r *http.Request) (registry.Key, bool) {
		id := r.PathValue("id")
		k, ok := reg.Key(id)
		if !ok || !access.From(r.Context()).Sees(k.Account) {
			notFound(w, "key", id)
			return k, false
		}
		return k, true
	}
	s.HandleAPI("GET /api/v1/keys/{id}", "keys:read", func(w http.ResponseWriter, r *http.Request) {
		if k, ok := key(w, r); ok {
			WriteJSON(w, http.StatusOK, viewOf(k))
		}
	})
	s.HandleAPI("DELETE /api/v1/keys/{id}", "keys:delete", func(w http.ResponseWriter, r *http.Request) {
		k, ok := key(w, r)
		if !ok {
			return
		}
		if err := reg.Delete(r.Context(), registry.Keys, k.ID); err != nil {
			RegistryError(w, err)
			return
		}
		s.Audit(r, "delete", "key", k.ID)
		w.WriteHeader(http.StatusNoContent)
	})
	s.HandleAPI("POST /api/v1/keys/{id}/rotate", "keys:create", func(w http.ResponseWriter, r *http.Request) {
		p := access.From(r.Context())
		old, ok := key(w, r)
		if !ok {
			return
		}
		var b rotateBody
		if r.ContentLength != 0 && !DecodeJSON(w, r, &b) {
			return
		}
		var grace time.Duration
		if b.Grace != "" {
			var err error
			if grace, err = time.ParseDuration(b.Grace); err != nil || grace < 0 {
				invalid(w, FieldError{Pointer: "/grace", Detail: "want a duration ≥ 0 such as 24h"})
				return
			}
		}
		if !p.Holds(old.Rights) {
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "a key cannot grant rights it does not hold"})
			return
		}
		now := s.opts.now()
		if !old.ExpiresAt.IsZero() && !now.Before(old.ExpiresAt) {
			WriteProblem(w, Problem{Status: http.StatusConflict, Detail: "the key has expired: make a new one"})
			return
		}
		secret, hash, err := access.NewKey()
		if err != nil {
			WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: err.Error()})
			return
		}
		nk := &registry.Key{ID: newID("key_"), Name: old.Name, Account: old.Account, Rights: old.Rights, Preset: old.Preset,
			Hash: hash, ExpiresAt: old.ExpiresAt, Meta: registry.Meta{Source: registry.SourceAPI}}
		// The old key ends when the grace does, never later than it would have.
		if end := now.Add(grace).UTC(); old.ExpiresAt.IsZero() || end.Before(old.ExpiresAt) {
			old.ExpiresAt = end
		}
		if err := reg.Apply(r.Context(), nk, &old); err != nil {
			RegistryError(w, err)
			return
		}
		s.Audit(r, "rotate", "key", old.ID)
		s.Audit(r, "create", "key", nk.ID)
		got, _ := reg.Key(nk.ID)
		v := viewOf(got)
		v.Key = secret
		WriteJSON(w, http.StatusCreated, v)
	})
}
