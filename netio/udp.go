package netio

import (
	"net/netip"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

var _ gnet.EventHandler = (*udpServer)(nil)

// udpServer is the gnet handler of UDATA datagrams. Malformed datagrams are counted and dropped
// without an answer, so the relay never amplifies spoofed traffic; those that are not native
// frames are first offered to the device links' tap (udptap.go).
type udpServer struct {
	gnet.BuiltinEventEngine
	engineHolder
	srv    *Server
	sendFd int // a duplicate of a listener socket, for UDPSender (-1: none); set by OnBoot
}

func (s *udpServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.keepSender(eng)
	s.boot(eng, "udp")
	return gnet.None
}

func (s *udpServer) OnTraffic(c gnet.Conn) gnet.Action {
	st := &s.srv.st
	buf, _ := c.Peek(-1)
	typ, body, n, err := native.Next(buf, s.srv.opts.MaxFrame)
	if err != nil || n != len(buf) || typ != native.TypeUData || s.srv.draining.Load() {
		if s.srv.tapped(c, buf) { // a device link's (udptap.go)
			return gnet.None
		}
		st.udpDropped.Add(1)
		return gnet.None
	}
	frame := append([]byte(nil), body...)
	u, err := native.ParseUData(frame, nil)
	if err != nil || len(u.Identity) > native.MaxIdentity {
		st.udpDropped.Add(1)
		return gnet.None
	}
	st.frames.Add(1)
	st.bytes.Add(int64(n))
	uc := &udpConn{fd: c.Fd(), st: st, remote: addrPort(c.RemoteAddr()), size: n}
	uc.sa = addrPortToSockaddr(uc.remote, s.v6())
	s.srv.d.UData(uc, &u, frame)
	return gnet.None
}

// udpConn answers one device source address. gnet releases its per-datagram connection when
// OnTraffic returns, so replies are sent later with sendto(2) on the listener's socket: a
// datagram send is atomic and safe from any goroutine.
type udpConn struct {
	fd     int
	st     *counters
	remote netip.AddrPort
	sa     unix.Sockaddr
	size   int // the datagram's length: an ERROR answer is never longer
}

func (u *udpConn) Write(frame []byte) {
	if err := unix.Sendto(u.fd, frame, unix.MSG_DONTWAIT, u.sa); err != nil {
		u.st.udpSendErrors.Add(1)
	}
}

// Fail answers the datagram with an ERROR frame (e.g. 503 when the store refuses new data), cut
// to the datagram's own length so that a spoofed source never gets more than it sent. There is
// no connection to close.
func (u *udpConn) Fail(code uint16, msg string) {
	room := u.size - native.HeaderLen - 2
	if room < 0 {
		return
	}
	if len(msg) > room {
		msg = msg[:room]
	}
	u.Write(native.AppendError(nil, code, msg))
}

func (u *udpConn) Close()                 {}
func (u *udpConn) Remote() netip.AddrPort { return u.remote }
func (u *udpConn) Datagram() bool         { return true }

// v6 reports whether the listener is an AF_INET6 socket (then IPv4 peers are v4-mapped).
func (s *udpServer) v6() bool {
	return !addrPort(s.addr).Addr().Unmap().Is4()
}

func addrPortToSockaddr(ap netip.AddrPort, v6 bool) unix.Sockaddr {
	a := ap.Addr()
	if !v6 {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	}
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}
