package netio

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

// acceptAdmitted accepts on ln until ln is closed and hands each connection the server admits
// to handle; a refused one is closed unanswered (neither NDJSON nor a connection before its TLS
// handshake has a way to say why). A failed accept (e.g. out of file descriptors) is logged as
// "<what> accept", at most once a warn period, and tried again after a pause, so it does not spin.
func (s *Server) acceptAdmitted(ln net.Listener, what string, warn *throttle.Throttle, handle func(c net.Conn, remote netip.AddrPort)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if held, ok := warn.Allow(); ok {
				s.log.Warn(what+" accept", "err", err, "errors_since_last_log", held)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		remote := addrPort(c.RemoteAddr())
		if s.admit(remote) != admitted {
			c.Close()
			continue
		}
		handle(c, remote)
	}
}

// connTable is a goroutine-per-connection listener's (NDJSON, TLS) open connections and the
// goroutines its stop waits for. The zero value is ready to use.
type connTable[C comparable] struct {
	mu     sync.Mutex // guards conns and closed
	conns  map[C]struct{}
	closed bool
	wg     sync.WaitGroup
}

// enroll adds c and counts the goroutine the caller starts for it (which calls wg.Done); false
// once closing began: c is then the caller's to close.
func (t *connTable[C]) enroll(c C) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[C]struct{})
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	return true
}

// drop removes c, whose connection ended.
func (t *connTable[C]) drop(c C) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// each calls fn for every open connection, under the table's lock.
func (t *connTable[C]) each(fn func(C)) {
	t.mu.Lock()
	for c := range t.conns {
		fn(c)
	}
	t.mu.Unlock()
}

// closing refuses connections from now on and calls fn for every open one, under the lock.
func (t *connTable[C]) closing(fn func(C)) {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		fn(c)
	}
	t.mu.Unlock()
}
