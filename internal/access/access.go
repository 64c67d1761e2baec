// Package access owns who may do what through the admin API: API keys (made, hashed, checked),
// rights ("resource:action" with wildcards), presets, the principal a request runs as, the
// bootstrap key, and the limiter of failed authentications per client address. It knows
// nothing of HTTP.
package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Errors of [Principal.Grant]: the rights asked for are not well formed (ErrBadRights), or the
// principal may not give them (ErrCannotGrant).
var (
	ErrBadRights   = errors.New("bad rights")
	ErrCannotGrant = errors.New("cannot grant")
)

// Resources and actions of rights.
var (
	Resources = []string{"accounts", "keys", "routes", "devices", "commands", "deviceLink", "deadLetters"}
	Actions   = []string{"create", "read", "update", "delete"}
)

// Presets of rights: super holds everything in every account; dealer holds routes, devices,
// commands, deviceLink and deadLetters, all actions, in its own account.
var Presets = map[string][]string{
	"super":  {"*:*"},
	"dealer": {"routes:*", "devices:*", "commands:*", "deviceLink:*", "deadLetters:*"},
}

// Principal is who a request runs as: the key that authenticated it. A Principal is not changed
// once made and is safe for concurrent use.
type Principal struct {
	KeyID   string
	Account string // "" for a global key: every account
	Rights  []string
}

// Can reports whether p holds resource:action.
func (p *Principal) Can(resource, action string) bool {
	if p == nil {
		return false
	}
	for _, r := range p.Rights {
		if covers(r, resource, action) {
			return true
		}
	}
	return false
}

// covers reports whether the right r ("resource:action", either side "*") covers
// resource:action (either side may be "*" too: then r must have "*" there).
func covers(r, resource, action string) bool {
	rr, ra, ok := strings.Cut(r, ":")
	if !ok {
		return false
	}
	return (rr == "*" || rr == resource) && (ra == "*" || ra == action)
}

// Holds reports whether p holds every right of rights (each may have wildcards: "routes:*" is
// held only by a principal with "routes:*" or "*:*", not by one with the four routes rights
// listed one by one — kept simple and strict).
func (p *Principal) Holds(rights []string) bool {
	for _, r := range rights {
		res, act, _ := strings.Cut(r, ":")
		if !p.Can(res, act) {
			return false
		}
	}
	return true
}

// Super reports whether p is global and holds every right.
func (p *Principal) Super() bool {
	return p != nil && p.Account == "" && p.Can("*", "*")
}

// Sees reports whether p may see a resource of account ("" : a global resource, which only a
// global key sees).
func (p *Principal) Sees(account string) bool {
	return p != nil && (p.Account == "" || p.Account == account)
}

// CheckRight checks that r is "resource:action" with a known resource and action, or "*" on
// either side.
func CheckRight(r string) error {
	res, act, ok := strings.Cut(r, ":")
	if !ok {
		return fmt.Errorf("right %q: want resource:action", r)
	}
	if res != "*" && !slices.Contains(Resources, res) {
		return fmt.Errorf("right %q: unknown resource %q; known: * %s", r, res, strings.Join(Resources, " "))
	}
	if act != "*" && !slices.Contains(Actions, act) {
		return fmt.Errorf("right %q: unknown action %q; known: * %s", r, act, strings.Join(Actions, " "))
	}
	return nil
}

// Grant checks that p may give a new key the given rights (or preset) in account: the rights
// must be well formed and held by p, the account one p sees, and a global key ("" account) only
// a global principal's to give. It returns the rights the new key gets (the preset's when a
// preset is named) or the first reason it may not.
func (p *Principal) Grant(account string, rights []string, preset string) ([]string, error) {
	if preset != "" {
		if len(rights) > 0 {
			return nil, fmt.Errorf("%w: give rights or a preset, not both", ErrBadRights)
		}
		pr, ok := Presets[preset]
		if !ok {
			return nil, fmt.Errorf("%w: unknown preset %q; known: dealer, super", ErrBadRights, preset)
		}
		if preset == "super" && account != "" {
			return nil, fmt.Errorf("%w: preset super is global: it cannot belong to an account", ErrBadRights)
		}
		rights = pr
	}
	if len(rights) == 0 {
		return nil, fmt.Errorf("%w: a key needs rights or a preset", ErrBadRights)
	}
	for _, r := range rights {
		if err := CheckRight(r); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRights, err)
		}
	}
	if account == "" && (p == nil || p.Account != "") {
		return nil, fmt.Errorf("%w: only a global key may create a global key", ErrCannotGrant)
	}
	if !p.Sees(account) {
		return nil, fmt.Errorf("%w: no access to account %q", ErrCannotGrant, account)
	}
	if !p.Holds(rights) {
		return nil, fmt.Errorf("%w: a key cannot grant rights it does not hold", ErrCannotGrant)
	}
	return slices.Clone(rights), nil
}

type ctxKey struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal ctx carries, nil if none.
func From(ctx context.Context) *Principal { p, _ := ctx.Value(ctxKey{}).(*Principal); return p }
