package netio

import (
	"errors"
	"net"
	"net/netip"
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
