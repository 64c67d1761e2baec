package actors

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/netip"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
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

// admit decides whether device id, from remote and presenting token, is admitted: reason ""
// if it is (with m, the metadata it was admitted on; nil in mode open), else the refusal
// reason, counted. It takes no lock unless an address failed token checks lately, and hashes
// the token only in token mode.
func (s *System) admit(id string, token []byte, remote netip.AddrPort) (m *DeviceMeta, reason string) {
	mode := s.opts.Auth
	if mode == "" || mode == AuthOpen {
		return nil, ""
	}
	m, reason = s.check(mode, id, token, remote)
	if reason != "" {
		s.opts.Metrics.refused(reason)
		if held, ok := s.authLog.Allow(); ok {
			s.log.Warn("device refused", "device", id, "remote", remote.String(), "reason", reason, "suppressed", held)
		}
	}
	return m, reason
}

// revoked reports whether a TCP connection of device id, admitted on metadata m, is no longer
// admitted: the device was removed (modes known and token) or its token changed (mode token).
// Its sessions check it on every frame; it costs a metadata lookup, and nothing in mode open.
func (s *System) revoked(id string, m *DeviceMeta) bool {
	mode := s.opts.Auth
	if mode == "" || mode == AuthOpen {
		return false
	}
	cur := s.meta(id)
	switch {
	case cur == nil:
		return true
	case mode == AuthToken:
		return m == nil || cur.TokenHash != m.TokenHash
	}
	return false
}

func (s *System) check(mode, id string, token []byte, remote netip.AddrPort) (*DeviceMeta, string) {
	lim := s.opts.AuthLimit
	var addr string
	if mode == AuthToken && lim != nil && lim.Active() {
		addr = remote.Addr().Unmap().String()
		if lim.Limited(addr, time.Now()) {
			return nil, RefusedLimited
		}
	}
	m := s.meta(id)
	switch {
	case m == nil:
		return nil, RefusedUnknown
	case mode != AuthToken:
		return m, ""
	case len(token) == 0 || m.TokenHash == ([32]byte{}):
		return nil, RefusedNoToken
	}
	h := TokenHash(token)
	if subtle.ConstantTimeCompare(h[:], m.TokenHash[:]) == 1 {
		return m, ""
	}
	if lim != nil {
		if addr == "" {
			addr = remote.Addr().Unmap().String()
		}
		lim.Fail(addr, time.Now())
	}
	return nil, RefusedBadToken
}

// stillAdmitted reports whether ss's device is still admitted; if not, it fails the connection
// with ERROR 401 (the frame in hand is dropped: nothing more of the connection is stored).
func (ss *session) stillAdmitted() bool {
	if !ss.sys.revoked(ss.e.id, ss.admitted) {
		return true
	}
	ss.conn.Fail(native.CodeUnauthorized, "device no longer admitted")
	if held, ok := ss.sys.authLog.Allow(); ok {
		ss.sys.log.Warn("device connection closed: no longer admitted", "device", ss.e.id, "remote", ss.conn.Remote().String(), "suppressed", held)
	}
	return false
}
