package netio

import (
	"net/netip"
	"sync"
)

// sources counts the open TCP connections (native and NDJSON) of each source address, for
// Options.MaxConnsPerSource. IPv6 peers are counted by their /64, the block one subscriber
// usually holds; IPv4 peers (v4-mapped ones too) by their address. Safe for concurrent use; the
// lock is held for a map update only.
type sources struct {
	mu sync.Mutex
	m  map[netip.Addr]int32
}

// sourceKey is the address a connection from a counts against.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// take counts a connection from a unless the source holds max already (max <= 0: no limit).
func (s *sources) take(a netip.Addr, max int) bool {
	if max <= 0 {
		return true
	}
	k := sourceKey(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[netip.Addr]int32)
	}
	if int(s.m[k]) >= max {
		return false
	}
	s.m[k]++
	return true
}

// release uncounts a connection take counted.
func (s *sources) release(a netip.Addr, max int) {
	if max <= 0 {
		return
	}
	k := sourceKey(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.m[k] - 1; n > 0 {
		s.m[k] = n
	} else {
		delete(s.m, k) // the map holds only sources with connections
	}
}
