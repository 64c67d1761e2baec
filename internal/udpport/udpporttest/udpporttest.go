// Package udpporttest owns the stand-in for another process's UDP engine in the tests of port
// claims: a socket bound as gnet binds each event loop's UDP socket, which a claim (package
// udpport) must refuse to share.
//
// Only tests import it.
package udpporttest

import (
	"context"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// EngineSocket binds addr (udp4) as gnet binds each event loop's UDP socket (SO_REUSEADDR and
// SO_REUSEPORT): what a relay, a loadgen floor or any gnet UDP engine of another process holds.
// The socket is closed when t ends.
func EngineSocket(t testing.TB, addr string) (net.PacketConn, error) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if err == nil {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err == nil {
		t.Cleanup(func() { pc.Close() })
	}
	return pc, err
}
