// Package netutil owns the glue between gnet and the relay's socket packages (netio, netio/link):
// gnet's logs routed through slog, and a socket address as gnet's callbacks hand it over
// (unix.Sockaddr) turned into a netip.AddrPort.
package netutil

import (
	"fmt"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/unix"
)

// GnetLogger routes gnet's logs through L (gnet.WithLogger). gnet's Fatalf is logged as an
// error: the relay decides itself whether to end.
type GnetLogger struct{ L *slog.Logger }

func (g GnetLogger) Debugf(f string, a ...any) { g.L.Debug(fmt.Sprintf(f, a...)) }
func (g GnetLogger) Infof(f string, a ...any)  { g.L.Info(fmt.Sprintf(f, a...)) }
func (g GnetLogger) Warnf(f string, a ...any)  { g.L.Warn(fmt.Sprintf(f, a...)) }
func (g GnetLogger) Errorf(f string, a ...any) { g.L.Error(fmt.Sprintf(f, a...)) }
func (g GnetLogger) Fatalf(f string, a ...any) { g.L.Error(fmt.Sprintf(f, a...)) }

// AddrPort is sa's address and port (an IPv4 peer of an AF_INET6 socket stays v4-mapped); the
// zero AddrPort for a socket address of another family.
func AddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}
