// Package udpport owns the choice of a UDP listener's port: a port that no other socket shares.
//
// gnet sets SO_REUSEPORT on every UDP socket it binds, and Linux lets a socket with
// SO_REUSEPORT bind a port that sockets of the same user with SO_REUSEPORT hold, also when it
// asks for port 0: the kernel then hands out a port such a socket holds, and from then on
// spreads the datagrams sent to that port over both sockets by a hash of their source. Two
// processes of one user (two relays, a relay and a loadgen floor, two test binaries) can so
// serve one UDP port without an error, each answering the share of devices the hash gives it: a
// device's datagram acknowledged by a server that does not deliver it. And gnet binds one
// socket per event loop, each to the address as given: with port 0, every loop but the first got
// a port of its own, which nobody sends to but which may be another server's.
//
// Claim binds the address first with a socket that has neither SO_REUSEPORT nor SO_REUSEADDR:
// the kernel refuses it a port any other socket holds (an explicit one fails with EADDRINUSE,
// as a TCP listener's would; port 0 picks one nobody holds). It then allows SO_REUSEADDR on
// that socket, which lets the engine's sockets (SO_REUSEADDR and SO_REUSEPORT) bind the same
// port beside it while every other claim still finds the port taken, and returns the address
// with the port, for every event loop to bind. Once the engine's first socket is bound, the
// claim is released: the engine's sockets hold the port from then on, against every claim.
// (Software that binds with SO_REUSEPORT without claiming can still join a port; only servers
// that claim their ports are kept apart.)
package udpport

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/panjf2000/gnet/v2/pkg/socket"
	"golang.org/x/sys/unix"
)

// Claim claims addr ("host:port"; port 0 for any free one) for a UDP listener, resolved as gnet
// resolves a "udp://" address. It returns the address with the claimed port, to be bound by the
// listener, and release, to be called once the listener's first socket is bound (or it failed):
// until then the claim socket holds the port, and a datagram that reaches it is dropped
// unanswered, like one lost on the way. Safe for concurrent use.
func Claim(addr string) (bound string, release func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("claim udp port %s: %w", addr, err)
	}
	sa, family, _, v6only, err := socket.GetUDPSockAddr("udp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("claim udp port %s: %w", addr, err)
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return "", nil, fmt.Errorf("claim udp port %s: %w", addr, os.NewSyscallError("socket", err))
	}
	fail := func(call string, err error) (string, func(), error) {
		_ = unix.Close(fd)
		return "", nil, fmt.Errorf("claim udp port %s: %w", addr, os.NewSyscallError(call, err))
	}
	if family == unix.AF_INET6 && v6only {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err) // EADDRINUSE: another socket holds the port
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	default:
		return fail("getsockname", unix.EAFNOSUPPORT)
	}
	// Set after the bind: the bind above was exclusive, and from now on sockets that set
	// SO_REUSEADDR themselves (the engine's) may bind beside this one; one that does not (another
	// claim) may not.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt", err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), func() { _ = unix.Close(fd) }, nil
}
