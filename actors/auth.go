package actors

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/netip"
	"time"
)

// Device admission (Options.Auth): which identities Open and UData let in. It is decided from
// the device metadata (the fleet sync.Map, no lock) before anything of the device is created:
// a refused identity gets no registry entry, no actor and nothing stored.

// Device auth modes (Options.Auth).
const (
	AuthOpen  = "open"  // every identity, no token checked (the default)
	AuthKnown = "known" // only identities with metadata: the config's fleet or the registry
	AuthToken = "token" // only identities with metadata and a token, presenting that token
)

// Refusal reasons: the reason label of fleetrelay_device_auth_refusals_total.
const (
	RefusedUnknown  = "unknown"   // no metadata for the identity
	RefusedNoToken  = "no_token"  // token mode: the device presented no token, or has none set
	RefusedBadToken = "bad_token" // token mode: the token does not match
	RefusedLimited  = "limited"   // the source address failed too many token checks lately
)

// ErrRefused is what Open returns for a device it does not admit: netio answers ERROR 401.
var ErrRefused = errors.New("device not admitted")

// AuthLimiter limits failed token checks per source address (access.Limiter implements it). A
// source it limits is refused without its token being checked. Implementations are safe for
// concurrent use.
type AuthLimiter interface {
	// Active reports whether any address is remembered (none is limited otherwise). It must be
	// cheap: it is asked for every frame that needs a token.
	Active() bool
	// Limited reports whether addr is over its budget, charging nothing.
	Limited(addr string, now time.Time) bool
	// Fail charges a failed check to addr.
	Fail(addr string, now time.Time) time.Duration
}

// TokenHash is what a device token is kept and compared as: its SHA-256. Device tokens are
// meant to be random secrets (like API keys), so a fast hash is enough at rest.
func TokenHash(token []byte) [32]byte { return sha256.Sum256(token) }

// admit decides whether device id, from remote and presenting token, is admitted: "" if it is,
// else the refusal reason, counted. It takes no lock unless an address failed token checks
// lately, and hashes the token only in token mode.
func (s *System) admit(id string, token []byte, remote netip.AddrPort) string {
	mode := s.opts.Auth
	if mode == "" || mode == AuthOpen {
		return ""
	}
	reason := s.check(mode, id, token, remote)
	if reason != "" {
		s.opts.Metrics.refused(reason)
		if held, ok := s.authLog.Allow(); ok {
			s.log.Warn("device refused", "device", id, "remote", remote.String(), "reason", reason, "suppressed", held)
		}
	}
	return reason
}

func (s *System) check(mode, id string, token []byte, remote netip.AddrPort) string {
	lim := s.opts.AuthLimit
	var addr string
	if mode == AuthToken && lim != nil && lim.Active() {
		addr = remote.Addr().Unmap().String()
		if lim.Limited(addr, time.Now()) {
			return RefusedLimited
		}
	}
	m := s.meta(id)
	switch {
	case m == nil:
		return RefusedUnknown
	case mode != AuthToken:
		return ""
	case len(token) == 0 || m.TokenHash == ([32]byte{}):
		return RefusedNoToken
	}
	h := TokenHash(token)
	if subtle.ConstantTimeCompare(h[:], m.TokenHash[:]) == 1 {
		return ""
	}
	if lim != nil {
		if addr == "" {
			addr = remote.Addr().Unmap().String()
		}
		lim.Fail(addr, time.Now())
	}
	return RefusedBadToken
}
