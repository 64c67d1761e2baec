package netio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// The UDP listener's other traffic: device links that reach a device through the listener's own
// socket (a device behind carrier-grade NAT only accepts datagrams from the address its own
// traffic went to). Such a link sends to the device from the listener's socket (UDPSender), and
// the datagrams from the device's source that are not native frames reach it through the tap
// (SetUDPTap).
//
// What is a native frame: a datagram whose first five bytes are a native header announcing
// exactly the rest of the datagram as a UDATA frame (a big-endian u32 length equal to the
// datagram's length − 4, then the type byte 0x13). Such a datagram takes the native path whatever
// the tap, stored or dropped as malformed as before; every other datagram, which the native path
// drops, is offered to the tap before it is dropped and counted. The native path is untouched:
// the tap costs nothing to a datagram the listener stores.

// UDPTap is offered, on the UDP listener's event loop, each datagram that is not a native frame,
// with its source (IPv4 sources unmapped). It returns true when it took the datagram; false lets
// the listener drop and count it as before. It must not block, nor keep b after it returns.
type UDPTap func(src netip.AddrPort, b []byte) bool

// udpTap is the Server's tap, nil when none is set.
type udpTap struct {
	fn atomic.Pointer[UDPTap]
}

// SetUDPTap sets the tap of the UDP listener (nil removes it). Safe for concurrent use.
func (s *Server) SetUDPTap(t UDPTap) {
	if t == nil {
		s.tap.fn.Store(nil)
		return
	}
	s.tap.fn.Store(&t)
}

// tapped offers a datagram that the native path would drop to the tap, unless it is a native
// frame; it reports whether the tap took it.
func (s *Server) tapped(c gnet.Conn, b []byte) bool {
	t := s.tap.fn.Load()
	if t == nil || isUData(b) {
		return false
	}
	src := addrPort(c.RemoteAddr())
	return (*t)(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), b)
}

// isUData reports whether b is a native frame for the UDP listener: a header announcing a UDATA
// frame of exactly b's length.
func isUData(b []byte) bool {
	return len(b) >= native.HeaderLen && binary.BigEndian.Uint32(b) == uint32(len(b)-4) && b[4] == native.TypeUData
}

// ErrNoUDP is UDPSender's error when the server has no UDP listener running.
var ErrNoUDP = errors.New("netio: no UDP listener")

// UDPSender returns a function that sends one datagram to dst from the UDP listener's socket,
// so it arrives from the address devices send their datagrams to. The function never blocks (a
// full socket buffer is an error, EAGAIN), is safe for concurrent use, and must not be called
// after Stop. It fails with ErrNoUDP before Start or without a UDP listener.
func (s *Server) UDPSender(dst netip.AddrPort) (func(b []byte) error, error) {
	if s.udp == nil || !dst.IsValid() {
		return nil, fmt.Errorf("send to %s: %w", dst, ErrNoUDP)
	}
	fd := s.udp.sendFd
	if fd < 0 {
		return nil, fmt.Errorf("send to %s: %w", dst, ErrNoUDP)
	}
	sa := addrPortToSockaddr(dst, s.udp.v6())
	return func(b []byte) error {
		return unix.Sendto(fd, b, unix.MSG_DONTWAIT, sa)
	}, nil
}

// keepSender keeps a duplicate of one of the listener's sockets for UDPSender: every event loop
// binds the same address, so any of them sends from it. Called from OnBoot, before boot.
func (s *udpServer) keepSender(eng gnet.Engine) {
	s.sendFd = -1
	if fd, err := eng.Dup(); err == nil {
		s.sendFd = fd
	}
}

// closeSender closes the duplicate, once the engine stopped.
func (s *udpServer) closeSender() {
	if s.sendFd >= 0 {
		_ = unix.Close(s.sendFd)
		s.sendFd = -1
	}
}
