package link

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// startManagerWith starts a Manager on n ports of a random range of loopback, with set's
// changes to its Config, trying other ranges while a port is taken.
func startManagerWith(t testing.TB, n int, set func(*Config)) *Manager {
	t.Helper()
	var last error
	for range 30 {
		first := uint16(20000 + rand.IntN(39000))
		cfg := Config{Listen: loopback, PortFirst: first, PortLast: first + uint16(n) - 1, EventLoops: 2, DialTimeout: 5 * time.Second}
		set(&cfg)
		m, err := NewManager(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if last = m.Start(context.Background()); last == nil {
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := m.Stop(ctx); err != nil {
					t.Errorf("Stop: %v", err)
				}
			})
			return m
		}
		_ = m.Stop(context.Background())
	}
	t.Fatalf("no free port range: %v", last)
	return nil
}

// bindable reports, for each port of m's range on loopback, whether a socket of network ("tcp"
// or "udp") can be bound there now: the port holds no socket of the manager's for it (its
// sockets are bound with SO_REUSEPORT, which a socket without it cannot share).
func bindable(t *testing.T, m *Manager, network string) (free, taken []uint16) {
	t.Helper()
	return bindableRange(m.cfg.PortFirst, m.cfg.PortLast, network)
}

// bindableRange is bindable for the ports first to last.
func bindableRange(first, last uint16, network string) (free, taken []uint16) {
	for p := int(first); p <= int(last); p++ {
		addr := netip.AddrPortFrom(loopback, uint16(p)).String()
		var c interface{ Close() error }
		var err error
		if network == "udp" {
			c, err = net.ListenPacket("udp", addr)
		} else {
			c, err = net.Listen("tcp", addr)
		}
		if err != nil {
			taken = append(taken, uint16(p))
			continue
		}
		free = append(free, uint16(p))
		_ = c.Close()
	}
	return free, taken
}

// probeRange sets c's range to n ports below the kernel's ephemeral range (so no outgoing
// connection of this machine takes one meanwhile) that are free now for TCP and for UDP, for the
// tests that probe which protocols the manager bound.
func probeRange(t testing.TB, n int) func(*Config) {
	t.Helper()
	for range 50 {
		first := 20000 + rand.IntN(12000)
		if free, _ := bindableRange(uint16(first), uint16(first+n-1), "tcp"); len(free) != n {
			continue
		}
		if free, _ := bindableRange(uint16(first), uint16(first+n-1), "udp"); len(free) != n {
			continue
		}
		return func(c *Config) { c.PortFirst, c.PortLast = uint16(first), uint16(first+n-1) }
	}
	t.Fatal("no free port range below 32000")
	return nil
}

// With both protocols (the default), every port of the range holds the manager's TCP listener
// and UDP socket: neither can be bound by another socket. This is what the probes of the
// single-protocol tests below would see if the unlisted protocol were bound after all.
func TestManagerBindsBothProtocolsByDefault(t *testing.T) {
	m := startManagerWith(t, 4, probeRange(t, 4))
	for _, network := range []string{"tcp", "udp"} {
		if free, _ := bindable(t, m, network); len(free) != 0 {
			t.Errorf("%s ports %v of the range are free, want every one held by the manager", network, free)
		}
	}
}

// With TCP only, no UDP socket is bound on the range (a UDP bind to each of its ports
// succeeds) while TCP links still work; a UDP link is refused with ErrProtocolOff.
func TestManagerTCPOnlyBindsNoUDP(t *testing.T) {
	inRange := probeRange(t, 8)
	m := startManagerWith(t, 8, func(c *Config) { inRange(c); c.Protocols = []string{TCP} })
	if free, taken := bindable(t, m, "udp"); len(taken) != 0 || len(free) != 8 {
		t.Errorf("UDP ports taken %v (free %d), want all 8 free", taken, len(free))
	}
	if free, _ := bindable(t, m, "tcp"); len(free) != 0 {
		t.Errorf("TCP ports %v free, want every one listened on", free)
	}
	dev, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	_, err = m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: UDP, DeviceAddr: dev.LocalAddr().(*net.UDPAddr).AddrPort()})
	if !errors.Is(err, ErrProtocolOff) {
		t.Fatalf("Open udp = %v, want ErrProtocolOff", err)
	}
	if got := m.List(); len(got) != 0 {
		t.Errorf("after the refused UDP link, List = %+v, want none", got)
	}
	if m.DeviceDatagram(dev.LocalAddr().(*net.UDPAddr).AddrPort(), []byte("x")) {
		t.Error("DeviceDatagram without UDP links reported the datagram taken")
	}
	// A TCP link carries bytes both ways.
	d := newDevice(t)
	in := openLink(t, m, Spec{DeviceAddr: d.addr()})
	client := dialLink(t, in, nil)
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	leg := d.accept(t)
	buf := make([]byte, 4)
	_ = leg.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := leg.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("device read %q, %v", buf, err)
	}
	if _, err := leg.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
}

// With UDP only, no TCP listener is bound on the range, and a TCP link is refused.
func TestManagerUDPOnlyBindsNoTCP(t *testing.T) {
	inRange := probeRange(t, 4)
	m := startManagerWith(t, 4, func(c *Config) { inRange(c); c.Protocols = []string{UDP} })
	if free, taken := bindable(t, m, "tcp"); len(taken) != 0 || len(free) != 4 {
		t.Errorf("TCP ports taken %v (free %d), want all 4 free", taken, len(free))
	}
	if free, _ := bindable(t, m, "udp"); len(free) != 0 {
		t.Errorf("UDP ports %v free, want every one bound", free)
	}
	_, err := m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: TCP, DeviceAddr: netip.MustParseAddrPort("127.0.0.1:7")})
	if !errors.Is(err, ErrProtocolOff) {
		t.Fatalf("Open tcp = %v, want ErrProtocolOff", err)
	}
}

// NewManager refuses a protocol it does not know.
func TestManagerUnknownProtocol(t *testing.T) {
	_, err := NewManager(Config{Listen: loopback, PortFirst: 40000, PortLast: 40001, Protocols: []string{TCP, "sctp"}})
	if err == nil {
		t.Fatal("NewManager with protocol sctp: no error")
	}
}

// The Manager hands UDP links to the UDP engine: a datagram each way through one opened with
// Open, and Close ends it.
func TestManagerOpensUDPLinks(t *testing.T) {
	m := startManager(t, 4, 0)
	dev, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	in, err := m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: UDP, DeviceAddr: dev.LocalAddr().(*net.UDPAddr).AddrPort()})
	if err != nil {
		t.Fatalf("Open udp: %v", err)
	}
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, in.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("to the device")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, leg, err := dev.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "to the device" {
		t.Fatalf("device read %q, %v", buf[:n], err)
	}
	if _, err := dev.WriteToUDPAddrPort([]byte("to the client"), leg); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err = client.Read(buf); err != nil || string(buf[:n]) != "to the client" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	if err := m.Close(in.Token); err != nil {
		t.Fatal(err)
	}
	if s := linkState(m, in.Token).State; s != StateClosed {
		t.Errorf("after Close: %s, want closed", s)
	}
}
