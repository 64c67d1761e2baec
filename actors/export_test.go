package actors

import "net/netip"

// Admit exposes admission (auth.go) to the benchmarks.
func (s *System) Admit(id string, token []byte, remote netip.AddrPort) string {
	_, reason := s.admit(id, token, remote)
	return reason
}
