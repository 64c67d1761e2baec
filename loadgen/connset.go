package loadgen

import (
	"net"
	"sync"
)

// connSet is what a small server of the link floors (LinkEcho, LinkProxy) owns besides its
// listener: the connections its Close closes and the goroutines Close waits for. The zero value
// is ready to use.
type connSet struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
	done bool
}

// track adds c to the connections closeAll closes; false once closeAll ran (c is then closed).
func (s *connSet) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		_ = c.Close()
		return false
	}
	if s.conn == nil {
		s.conn = make(map[net.Conn]struct{})
	}
	s.conn[c] = struct{}{}
	return true
}

// forget closes c and drops it from the set.
func (s *connSet) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conn, c)
	s.mu.Unlock()
	_ = c.Close()
}

// closeAll closes every tracked connection; tracking refuses connections from then on.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.done = true
	for c := range s.conn {
		_ = c.Close()
	}
	s.mu.Unlock()
}
