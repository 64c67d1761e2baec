// Package access owns who may do what through the admin API: API keys (made, hashed, checked),
// rights ("resource:action" with wildcards), presets, the principal a request runs as, and the
// limiter of failed authentications per client address. It knows nothing of HTTP.
package access

import "context"

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

// Principal is who a request runs as: the key that authenticated it.
type Principal struct {
	KeyID   string
	Account string // "" for a global key: every account
	Rights  []string
}

// Can reports whether p holds resource:action.
func (p *Principal) Can(resource, action string) bool { panic("access: not implemented") }

// Super reports whether p is global and holds every right.
func (p *Principal) Super() bool { panic("access: not implemented") }

// Sees reports whether p may see a resource of account ("" : a global resource, which only a
// global key sees).
func (p *Principal) Sees(account string) bool { panic("access: not implemented") }

type ctxKey struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal ctx carries, nil if none.
func From(ctx context.Context) *Principal { p, _ := ctx.Value(ctxKey{}).(*Principal); return p }
