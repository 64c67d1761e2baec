package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/route"
)

// Redacted is what a literal secret shows in a route's JSON form; written back, it keeps the
// stored secret.
const Redacted = "[redacted]"

// RouteView is a route as the API shows it.
type RouteView struct {
	Name string `json:"name"`
	// Spec is the route in the config file's schema as JSON: a literal secret shows
	// "[redacted]", one read from the host shows its source ({"env": "NAME"}).
	Spec json.RawMessage `json:"spec"`
	Meta registry.Meta   `json:"meta"`
	// Holdings is what the store holds for the route; null when the route does not run.
	Holdings *actors.RouteHoldings `json:"holdings"`
	Status   RouteStatus           `json:"status"`
	// Account is the spec's account (for the API's checks; the spec shows it).
	Account string `json:"-"`
}

// Route returns the named route's view.
func (c *Control) Route(name string) (RouteView, bool) {
	rt, ok := c.reg.Route(name)
	if !ok {
		return RouteView{}, false
	}
	return c.routeView(&rt), true
}

// Routes returns a page of routes (see registry.ListOptions).
func (c *Control) Routes(o registry.ListOptions) (page []RouteView, more bool) {
	rts, more := c.reg.ListRoutes(o)
	page = make([]RouteView, len(rts))
	for i := range rts {
		page[i] = c.routeView(&rts[i])
	}
	return page, more
}

func (c *Control) routeView(rt *registry.Route) RouteView {
	v := RouteView{Name: rt.Name(), Meta: rt.Meta, Status: c.Status(rt.Name()), Account: rt.Spec.Account}
	if h, ok := c.sys.Holdings(rt.Name()); ok {
		v.Holdings = &h
	}
	spec, err := SpecJSON(&rt.Spec)
	if err != nil { // a config.Route always encodes; this would be a bug
		c.log.Error("route JSON form", "route", rt.Name(), "err", err)
		spec = json.RawMessage("{}")
	}
	v.Spec = spec
	return v
}

// SpecJSON is r in the config file's schema as JSON (the YAML names, durations as "50ms",
// sizes as "1MiB"), a literal secret as "[redacted]".
func SpecJSON(r *config.Route) (json.RawMessage, error) { return yamlAsJSON(r) }

// yamlAsJSON encodes v as the YAML the config file would hold, then that YAML as JSON.
func yamlAsJSON(v any) (json.RawMessage, error) {
	y, err := yaml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode as YAML: %w", err)
	}
	var tree any
	if err := yaml.Unmarshal(y, &tree); err != nil {
		return nil, fmt.Errorf("decode own YAML: %w", err)
	}
	if tree == nil {
		tree = map[string]any{}
	}
	return json.Marshal(tree)
}

// RouteWrite is one write of a route through the API.
type RouteWrite struct {
	// Name is the route in the path; "" for a create (POST), whose body names it.
	Name string
	// Body is the route as JSON (the config file's schema), or with Patch a JSON merge patch
	// (RFC 7396) of its current JSON form.
	Body  []byte
	Patch bool
	// Create refuses a name that exists (registry.ErrExists); without it a write replaces the
	// route, or creates it.
	Create bool
	// Account is the caller key's account ("" for a global key): its routes belong to it.
	Account string
	// HostSecrets allows secrets read from the relay host ({env:}, {file:}): a super key.
	HostSecrets bool
	// Revision, when not 0, must be the route's current one (registry.ErrConflict otherwise).
	Revision uint64
}

// WriteRoute checks a route written through the API as the config file's routes are checked
// (every problem at once, *InvalidError), stores it and applies it: it runs, with its queue and
// dead letters kept if it existed, by the time WriteRoute returns. A route of the config file
// fails with ErrConfigOwned, another account's with registry.ErrNotFound, secrets from the host
// without HostSecrets with *ForbiddenError.
func (c *Control) WriteRoute(ctx context.Context, w RouteWrite) (v RouteView, created bool, err error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()

	var cur registry.Route
	exists := false
	if w.Name != "" {
		if cur, exists, err = c.visibleRoute(w.Name, w.Account); err != nil {
			return RouteView{}, false, err
		}
		if w.Patch && !exists {
			return RouteView{}, false, registry.ErrNotFound
		}
	}
	body := w.Body
	if w.Patch {
		if body, err = patchJSON(&cur.Spec, body); err != nil {
			return RouteView{}, false, err
		}
	}
	spec, err := config.ParseRoute(body)
	if err != nil {
		return RouteView{}, false, invalid(err)
	}
	if w.Name == "" { // a create: the body names the route
		if spec.Name == "" {
			return RouteView{}, false, &InvalidError{Fields: []Field{{"/name", "required"}}}
		}
		if cur, exists, err = c.visibleRoute(spec.Name, w.Account); err != nil {
			if errors.Is(err, registry.ErrNotFound) { // another account's: its name is taken
				err = registry.ErrExists
			}
			return RouteView{}, false, err
		}
	}
	if w.Create && exists {
		return RouteView{}, false, registry.ErrExists
	}
	name := w.Name
	if name == "" {
		name = spec.Name
	}
	var bad []Field
	switch {
	case spec.Name == "":
		spec.Name = name
	case spec.Name != name:
		bad = append(bad, Field{"/name", fmt.Sprintf("%q is not the route's name %q: the name is the route's identity and cannot change (create a route of the new name, then delete this one)", spec.Name, name)})
	}
	bad = append(bad, c.checkAccount(&spec.Account, w.Account)...)
	forbidden, secretBad := keepSecrets(&spec, &cur.Spec, exists, w.HostSecrets)
	bad = append(bad, secretBad...)
	if len(forbidden) > 0 {
		return RouteView{}, false, &ForbiddenError{Fields: forbidden}
	}
	check := c.deps
	check.Clients = nil // check only: read the files and secrets, build no client
	if _, err := route.Compile(resolved(spec, &c.deps.Delivery), "", check); err != nil {
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			return RouteView{}, false, err
		}
		bad = append(bad, fields(ve.Problems)...)
	}
	if len(bad) > 0 {
		return RouteView{}, false, &InvalidError{Fields: bad}
	}

	rt := &registry.Route{Spec: spec}
	if exists {
		rt.Meta = cur.Meta
		err = c.reg.Update(ctx, rt, w.Revision)
	} else {
		err = c.reg.Create(ctx, rt)
	}
	if err != nil {
		return RouteView{}, false, err
	}
	stored, ok := c.reg.Route(name)
	if !ok {
		return RouteView{}, false, registry.ErrNotFound // deleted meanwhile by another node
	}
	return c.routeView(&stored), !exists, nil
}

// DeleteRoute stops and removes a route. While it holds undelivered messages or dead letters
// it fails with *BusyError, unless force, which discards them; it returns what it discarded.
func (c *Control) DeleteRoute(ctx context.Context, name, account string, force bool) (actors.RouteHoldings, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	cur, exists, err := c.visibleRoute(name, account)
	if err != nil {
		return actors.RouteHoldings{}, err
	}
	if !exists {
		return actors.RouteHoldings{}, registry.ErrNotFound
	}
	h, err := c.sys.RemoveRoute(ctx, name, force)
	switch {
	case errors.Is(err, actors.ErrRouteBusy):
		return actors.RouteHoldings{}, &BusyError{Holdings: h}
	case errors.Is(err, actors.ErrNoRoute): // it did not compile: nothing runs
	case err != nil:
		return actors.RouteHoldings{}, fmt.Errorf("remove route %q: %w", name, err)
	}
	if err := c.reg.Delete(ctx, registry.Routes, name); err != nil {
		c.applyRoute(&cur) // it runs again (empty if it was forced)
		return actors.RouteHoldings{}, err
	}
	c.log.Info("route deleted", "route", name, "forced", force, "discarded_backlog", h.Backlog, "discarded_dead_letters", h.DeadLetters)
	return h, nil
}

// visibleRoute is the named route if the caller of account may write it: a route of the config
// file is ErrConfigOwned, another account's is registry.ErrNotFound.
func (c *Control) visibleRoute(name, account string) (registry.Route, bool, error) {
	rt, ok := c.reg.Route(name)
	switch {
	case !ok:
		return registry.Route{}, false, nil
	case account != "" && rt.Spec.Account != account:
		return registry.Route{}, false, registry.ErrNotFound
	case rt.Source == registry.SourceConfig:
		return registry.Route{}, false, ErrConfigOwned
	}
	return rt, true, nil
}

// checkAccount fills or checks the account a resource is written with: a key of an account
// writes only that account's resources; a global key names any account that exists (or none).
func (c *Control) checkAccount(account *string, caller string) []Field {
	switch {
	case caller != "" && *account == "":
		*account = caller
	case caller != "" && *account != caller:
		return []Field{{"/account", fmt.Sprintf("a key of account %q writes only resources of that account, not of %q", caller, *account)}}
	case *account != "":
		if _, ok := c.reg.Account(*account); !ok {
			return []Field{{"/account", fmt.Sprintf("no account %q", *account)}}
		}
	}
	return nil
}

// keepSecrets puts back the stored secret wherever the body sent "[redacted]", and lists the
// secrets read from the host that the caller may not set (without hostSecrets, only one equal
// to the stored secret at the same place is kept): a dealer could otherwise send any file or
// variable of the relay host to a URL of its choosing.
func keepSecrets(spec, cur *config.Route, exists, hostSecrets bool) (forbidden, bad []Field) {
	var old map[string]*config.Secret
	if exists {
		old = cur.SecretFields("")
	}
	for path, s := range spec.SecretFields("") {
		prev := old[path]
		switch {
		case *s == config.SecretValue(Redacted):
			if prev == nil {
				bad = append(bad, Field{Pointer(path), `"[redacted]" keeps the stored secret, and none is stored here: send the secret's value`})
				continue
			}
			*s = *prev
		case s.IsHostSource() && !hostSecrets && (prev == nil || *prev != *s):
			forbidden = append(forbidden, Field{Pointer(path), "a secret read from the relay host ({env:} or {file:}) needs a super key; send the secret's value"})
		}
	}
	return forbidden, bad
}

// patchJSON applies a JSON merge patch to cur's JSON form.
func patchJSON(cur any, patch []byte) ([]byte, error) {
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, &InvalidError{Fields: []Field{{"", "invalid JSON merge patch: " + err.Error()}}}
	}
	form, err := yamlAsJSON(cur)
	if err != nil {
		return nil, err
	}
	var target any
	if err := json.Unmarshal(form, &target); err != nil {
		return nil, fmt.Errorf("decode own JSON: %w", err)
	}
	return json.Marshal(MergePatch(target, p))
}

// MergePatch applies patch to target as RFC 7396 says: objects merge key by key, a null
// removes a key, anything else replaces. target may be changed.
func MergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = MergePatch(t[k], v)
	}
	return t
}

// invalid turns a *config.ValidationError into an *InvalidError.
func invalid(err error) error {
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		return &InvalidError{Fields: fields(ve.Problems)}
	}
	return err
}
