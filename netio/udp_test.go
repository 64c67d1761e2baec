package netio

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// A UDP device whose datagram the store refuses gets ERROR with the code, cut to the
// datagram's own length: a spoofed source never receives more than was sent.
func TestUDPFail(t *testing.T) {
	dev, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	remote := dev.LocalAddr().(*net.UDPAddr).AddrPort()
	f := func(size int, wantMsg string) {
		t.Helper()
		u := &udpConn{fd: fd, st: &counters{}, remote: remote, size: size}
		u.sa = addrPortToSockaddr(netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()), false)
		u.Fail(native.CodeUnavailable, "relay cannot store data")
		buf := make([]byte, 256)
		_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := dev.Read(buf)
		if err != nil {
			t.Fatalf("no answer to a %d-byte datagram: %v", size, err)
		}
		if n > size {
			t.Fatalf("answer of %d bytes to a %d-byte datagram", n, size)
		}
		typ, body, _, err := native.Next(buf[:n], 1024)
		if err != nil || typ != native.TypeError {
			t.Fatalf("answer % x, want ERROR", buf[:n])
		}
		code, msg, _ := native.ParseError(body)
		if code != native.CodeUnavailable || msg != wantMsg {
			t.Fatalf("ERROR %d %q, want %d %q", code, msg, native.CodeUnavailable, wantMsg)
		}
	}
	f(200, "relay cannot store data")
	f(22, "relay cannot st")
	f(7, "")
}
