package link

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
)

// hang bounds every wait of these tests against a hang; it is no speed check.
const hang = 30 * time.Second

// udpNoLeaks fails t if a goroutine started during it outlives it (the carrier's engine,
// its ticker, a polling Stop). gnet's process-wide worker pool, which dials device legs, keeps
// an idle worker for a while after: it belongs to no carrier.
func udpNoLeaks(t *testing.T) {
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// startUDP starts a carrier on listen over a random range of a few ports that are free now
// (gnet binds UDP with SO_REUSEPORT, which would share a port another socket holds the same
// way: check with plain sockets first), and stops it when t ends.
func startUDP(t *testing.T, listen string) *udpCarrier {
	t.Helper()
	udpNoLeaks(t)
	addr := netip.MustParseAddr(listen)
	const ports = 4
	for range 50 {
		first := uint16(20000 + mrand.IntN(39000))
		if !portsFree(addr, first, ports) {
			continue
		}
		h := newUDP(addr, first, first+ports-1, nil)
		h.loops = 2 // a link's two legs may then be on two loops, as they can be in production
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		err := h.start(ctx)
		cancel()
		if err != nil {
			t.Logf("start on %d-%d: %v (next range)", first, first+ports-1, err)
			continue
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			if err := h.stop(ctx); err != nil {
				t.Errorf("stop: %v", err)
			}
		})
		return h
	}
	t.Fatal("no free port range found")
	return nil
}

func portsFree(addr netip.Addr, first uint16, n int) bool {
	var held []*net.UDPConn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	for p := range n {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, first+uint16(p))))
		if err != nil {
			return false
		}
		held = append(held, c)
	}
	return true
}

// udpSocket is a test's device or client: a plain UDP socket on loopback.
func udpSocket(t *testing.T, listen string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(listen), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatalf("send %d bytes to %s: %v", len(b), to, err)
	}
}

func recv(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(hang))
	buf := make([]byte, 1<<16)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("read from %s: %v", c.LocalAddr(), err)
	}
	return buf[:n], unmap(from)
}

// openUDP opens a link on the carrier's first port to device with spec's other fields.
func openUDP(t *testing.T, h *udpCarrier, device *net.UDPConn, spec Spec) *entry {
	t.Helper()
	spec.Device, spec.Protocol, spec.DeviceAddr = "DEV-1", UDP, addrOf(device)
	e := newEntry("token-"+t.Name(), spec, h.first, time.Now())
	if err := h.open(e); err != nil {
		t.Fatalf("open: %v", err)
	}
	return e
}

// linkAddr is where a client reaches e.
func linkAddr(h *udpCarrier, e *entry) netip.AddrPort { return netip.AddrPortFrom(h.listen, e.port) }

// devLeg is the address of e's device socket, which the device sends to.
func devLeg(t *testing.T, h *udpCarrier, e *entry) netip.AddrPort {
	t.Helper()
	h.mu.Lock()
	l := h.links[e]
	h.mu.Unlock()
	if l == nil {
		t.Fatal("no link")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dev == nil {
		t.Fatal("no device leg")
	}
	return unmap(l.dev.LocalAddr().(*net.UDPAddr).AddrPort())
}

func waitCount(t *testing.T, name string, v interface{ Load() uint64 }, want uint64) {
	t.Helper()
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if got := v.Load(); got != want {
			return fmt.Errorf("%s = %d, want %d", name, got, want)
		}
		return nil
	})
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// Datagrams go both ways one for one and byte-exact, from sizes 0 to the largest IPv4 (or
// IPv6) datagram; the first client inherits the link; the entry and metrics count it all.
func TestUDPLinkForwardsBothWays(t *testing.T) {
	for _, tc := range []struct{ listen string }{{"127.0.0.1"}, {"::1"}} {
		t.Run(tc.listen, func(t *testing.T) {
			h := startUDP(t, tc.listen)
			device, client := udpSocket(t, tc.listen), udpSocket(t, tc.listen)
			e := openUDP(t, h, device, Spec{})
			if st := e.info().State; st != StateWaiting {
				t.Fatalf("state before any client = %q, want %q", st, StateWaiting)
			}
			largest := 65507
			if tc.listen == "::1" {
				largest = 65527
			}
			sizes := []int{0, 1, 100, 1400, 9000, largest}
			var up, down uint64
			for i, n := range sizes {
				out := payload(n, byte(i))
				send(t, client, linkAddr(h, e), out)
				got, leg := recv(t, device)
				if !bytes.Equal(got, out) {
					t.Fatalf("device got %d bytes, want the client's %d", len(got), n)
				}
				back := payload(max(n, 1), byte(100+i)) // an empty datagram would end the device leg
				send(t, device, leg, back)
				got, from := recv(t, client)
				if !bytes.Equal(got, back) {
					t.Fatalf("client got %d bytes, want the device's %d", len(got), len(back))
				}
				if from != linkAddr(h, e) {
					t.Fatalf("client got the answer from %s, want the link's %s", from, linkAddr(h, e))
				}
				up, down = up+uint64(n), down+uint64(len(back))
			}
			// A burst: every datagram arrives whole and alone (the order is the network's).
			var burst [][]byte
			for i := range 50 {
				burst = append(burst, payload(10+i, byte(i)))
				send(t, client, linkAddr(h, e), burst[i])
				up += uint64(10 + i)
			}
			for range burst {
				got, _ := recv(t, device)
				i := slices.IndexFunc(burst, func(b []byte) bool { return bytes.Equal(b, got) })
				if i < 0 {
					t.Fatalf("device got a datagram of %d bytes that the client did not send", len(got))
				}
				burst = slices.Delete(burst, i, i+1)
			}

			in := e.info()
			if in.State != StateOpen || in.Client != addrOf(client) {
				t.Errorf("state, client = %q, %s; want %q, %s", in.State, in.Client, StateOpen, addrOf(client))
			}
			if in.ToDevice != up || in.ToClient != down {
				t.Errorf("ToDevice, ToClient = %d, %d; want %d, %d", in.ToDevice, in.ToClient, up, down)
			}
			if !in.LastActive.After(in.CreatedAt) {
				t.Errorf("LastActive %v not after CreatedAt %v", in.LastActive, in.CreatedAt)
			}
			want := map[string]float64{
				`fleetrelay_devicelink_udp_datagrams_total{direction="to_device"}`: float64(len(sizes) + 50),
				`fleetrelay_devicelink_udp_datagrams_total{direction="to_client"}`: float64(len(sizes)),
				`fleetrelay_devicelink_udp_bytes_total{direction="to_device"}`:     float64(up),
				`fleetrelay_devicelink_udp_bytes_total{direction="to_client"}`:     float64(down),
				`fleetrelay_devicelink_udp_dropped_total{reason="no_link"}`:        0,
				`fleetrelay_devicelink_udp_links`:                                  1,
			}
			got := gather(t, h)
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

// gather reads the carrier's collectors as name{label="value"} → value.
func gather(t *testing.T, h *udpCarrier) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := mf.GetName()
			for _, lp := range m.GetLabel() {
				k += fmt.Sprintf("{%s=%q}", lp.GetName(), lp.GetValue())
			}
			switch {
			case m.Counter != nil:
				out[k] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[k] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// Unpinned, the first client holds the link: a second one's datagrams are dropped and it
// gets nothing of the device's.
func TestUDPLinkSecondClientNotAdmitted(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	device, a, b := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
	e := openUDP(t, h, device, Spec{})

	send(t, a, linkAddr(h, e), []byte("from a"))
	got, leg := recv(t, device)
	if string(got) != "from a" {
		t.Fatalf("device got %q", got)
	}
	send(t, b, linkAddr(h, e), []byte("from b"))
	waitCount(t, "dropped source", &h.st.dropped[dropSource], 1)
	send(t, device, leg, []byte("to a"))
	if got, _ := recv(t, a); string(got) != "to a" {
		t.Fatalf("client a got %q", got)
	}
	if n := h.st.datagrams[toDeviceDir].Load(); n != 1 {
		t.Errorf("datagrams to the device = %d, want 1 (b's dropped)", n)
	}
	if c := e.info().Client; c != addrOf(a) {
		t.Errorf("client = %s, want a %s", c, addrOf(a))
	}
}

// Pinned to Source, the link sends the device's datagrams there before the client sent
// anything, and forwards nothing from another source.
func TestUDPLinkPinnedSource(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	device, pinned, other := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
	e := openUDP(t, h, device, Spec{Source: addrOf(pinned)})
	if in := e.info(); in.State != StateOpen || in.Client != addrOf(pinned) {
		t.Fatalf("state, client = %q, %s; want %q, %s", in.State, in.Client, StateOpen, addrOf(pinned))
	}

	send(t, device, devLeg(t, h, e), []byte("first word is the device's"))
	got, from := recv(t, pinned)
	if string(got) != "first word is the device's" || from != linkAddr(h, e) {
		t.Fatalf("pinned client got %q from %s", got, from)
	}
	send(t, other, linkAddr(h, e), []byte("intruder"))
	waitCount(t, "dropped source", &h.st.dropped[dropSource], 1)
	send(t, pinned, linkAddr(h, e), []byte("pinned"))
	if got, _ := recv(t, device); string(got) != "pinned" {
		t.Fatalf("device got %q, want the pinned client's datagram", got)
	}
	waitCount(t, "datagrams to the device", &h.st.datagrams[toDeviceDir], 1) // counted just after the send
}

// Spec.Timeout closes a link that carried nothing for that long: its state is closed, its
// device socket gone, and its port drops datagrams.
func TestUDPLinkTimeout(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	device, client := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
	e := openUDP(t, h, device, Spec{Timeout: 50 * time.Millisecond})
	if n := h.eng.CountConnections(); n != 1 {
		t.Fatalf("device sockets = %d, want 1", n)
	}
	send(t, client, linkAddr(h, e), []byte("hello"))
	if got, _ := recv(t, device); string(got) != "hello" {
		t.Fatalf("device got %q", got)
	}
	checkfor.Check(t, hang, 5*time.Millisecond, func() error {
		if st := e.info().State; st != StateClosed {
			return fmt.Errorf("state %q, want %q", st, StateClosed)
		}
		return nil
	})
	waitCount(t, "timeouts", &h.st.timeouts, 1)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := h.eng.CountConnections(); n != 0 {
			return fmt.Errorf("device sockets = %d, want 0", n)
		}
		return nil
	})
	if n := h.openLinks(); n != 0 {
		t.Errorf("open links = %d, want 0", n)
	}
	send(t, client, linkAddr(h, e), []byte("too late"))
	waitCount(t, "dropped no_link", &h.st.dropped[dropNoLink], 1)
	waitCount(t, "datagrams to the device", &h.st.datagrams[toDeviceDir], 1) // counted just after the send
}

// close stops the forwarding at once and closes the device socket; it is idempotent. A port
// without a link drops what it gets.
func TestUDPLinkClose(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	device, client := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
	send(t, client, netip.AddrPortFrom(h.listen, h.first+1), []byte("nobody here"))
	waitCount(t, "dropped no_link", &h.st.dropped[dropNoLink], 1)

	e := openUDP(t, h, device, Spec{})
	send(t, client, linkAddr(h, e), []byte("one"))
	if got, _ := recv(t, device); string(got) != "one" {
		t.Fatalf("device got %q", got)
	}
	h.close(e)
	if st := e.info().State; st != StateClosed {
		t.Fatalf("state after close = %q", st)
	}
	h.close(e)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := h.eng.CountConnections(); n != 0 {
			return fmt.Errorf("device sockets = %d, want 0", n)
		}
		return nil
	})
	send(t, client, linkAddr(h, e), []byte("two"))
	waitCount(t, "dropped no_link", &h.st.dropped[dropNoLink], 2)
	waitCount(t, "datagrams to the device", &h.st.datagrams[toDeviceDir], 1) // counted just after the send

	// The port takes a new link.
	e2 := newEntry("token-2", e.spec, e.port, time.Now())
	if err := h.open(e2); err != nil {
		t.Fatalf("reopen the port: %v", err)
	}
	send(t, client, linkAddr(h, e2), []byte("three"))
	if got, _ := recv(t, device); string(got) != "three" {
		t.Fatalf("device got %q through the new link", got)
	}
}

// With a Cipher, the client's datagrams are opened and the device's sealed with the numbers
// 0, 1, 2…; datagrams the cipher refuses are dropped and do not make their sender the client;
// lost and reordered datagrams do not matter, each stands alone.
func TestUDPLinkCipher(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	device, client, stranger := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
	var key [32]byte
	var iv [16]byte
	_, _ = rand.Read(key[:])
	_, _ = rand.Read(iv[:])
	ci := newTestCTR(key, iv)
	e := openUDP(t, h, device, Spec{Cipher: ci})

	send(t, stranger, linkAddr(h, e), []byte("short"))
	waitCount(t, "dropped cipher", &h.st.dropped[dropCipher], 1)
	if in := e.info(); in.State != StateWaiting || in.Client.IsValid() {
		t.Fatalf("a refused datagram made %s the client (state %q)", in.Client, in.State)
	}

	// The client numbers its datagrams; some are lost (0, 1, 3…), the rest come out of order.
	plain := map[uint64][]byte{5: []byte("five"), 2: []byte("two"), 9: payload(3000, 9)}
	for _, n := range []uint64{5, 2, 9} {
		sealed := ctrSeal(ci.block, iv, clientToRelay, n, plain[n])
		if bytes.Contains(sealed, plain[n]) {
			t.Fatal("the test's sealing left the plaintext")
		}
		send(t, client, linkAddr(h, e), sealed)
	}
	var leg netip.AddrPort
	for range plain {
		var got []byte
		got, leg = recv(t, device)
		found := false
		for _, p := range plain {
			found = found || bytes.Equal(got, p)
		}
		if !found {
			t.Fatalf("device got %d bytes that are none of the client's plaintexts", len(got))
		}
	}

	replies := [][]byte{[]byte("r0"), []byte("reply one"), payload(2000, 2)}
	for _, r := range replies {
		send(t, device, leg, r)
	}
	seen := map[uint64]bool{}
	for range replies {
		dg, _ := recv(t, client)
		n, p, err := ctrOpen(ci.block, iv, relayToClient, dg)
		if err != nil {
			t.Fatal(err)
		}
		if seen[n] || !slices.ContainsFunc(replies, func(r []byte) bool { return bytes.Equal(r, p) }) {
			t.Fatalf("datagram number %d (seen before: %v) opens to %d bytes that the device did not send", n, seen[n], len(p))
		}
		if bytes.Equal(dg[8:], p) {
			t.Fatalf("datagram %d reached the client in clear", n)
		}
		seen[n] = true
	}
	if !seen[0] || !seen[1] || !seen[2] {
		t.Errorf("the relay numbered its datagrams %v, want 0, 1, 2", seen)
	}

	// A datagram that cannot be sent once sealed is dropped (and uses up its number).
	send(t, device, leg, make([]byte, 65507))
	waitCount(t, "dropped too_large", &h.st.dropped[dropTooLarge], 1)
	send(t, device, leg, []byte("after"))
	dg, _ := recv(t, client)
	if n, p, err := ctrOpen(ci.block, iv, relayToClient, dg); err != nil || n != 4 || string(p) != "after" {
		t.Fatalf("after the dropped one: number %d, %q, %v; want 4, %q", n, p, err, "after")
	}

	in := e.info()
	if want := uint64(len("five") + len("two") + 3000); in.ToDevice != want {
		t.Errorf("ToDevice = %d, want the plaintext bytes %d", in.ToDevice, want)
	}
	if in.Cipher != nil {
		t.Error("info shows the cipher")
	}
}

// The test's cipher, written here from its construction rather than taken from the relay:
// AES-256-CTR; a datagram is its number n (8 bytes, big endian, in clear) then the ciphertext;
// the initial counter block of datagram n in direction d is the IV with its first byte XORed
// with d and its bytes 1–8 with n, so that no two datagrams of a link share keystream as long
// as each is shorter than 2^56 blocks.
type testCTR struct {
	block cipher.Block
	iv    [16]byte
}

const (
	clientToRelay = 0
	relayToClient = 1
)

func newTestCTR(key [32]byte, iv [16]byte) *testCTR {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	return &testCTR{block: b, iv: iv}
}

func ctrBlock(iv [16]byte, dir byte, n uint64) []byte {
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], n)
	iv[0] ^= dir
	for i := range x {
		iv[1+i] ^= x[i]
	}
	return iv[:]
}

func ctrSeal(b cipher.Block, iv [16]byte, dir byte, n uint64, plain []byte) []byte {
	out := binary.BigEndian.AppendUint64(nil, n)
	out = append(out, make([]byte, len(plain))...)
	cipher.NewCTR(b, ctrBlock(iv, dir, n)).XORKeyStream(out[8:], plain)
	return out
}

func ctrOpen(b cipher.Block, iv [16]byte, dir byte, dg []byte) (uint64, []byte, error) {
	if len(dg) < 8 {
		return 0, nil, errors.New("datagram shorter than its number")
	}
	n := binary.BigEndian.Uint64(dg)
	p := make([]byte, len(dg)-8)
	cipher.NewCTR(b, ctrBlock(iv, dir, n)).XORKeyStream(p, dg[8:])
	return n, p, nil
}

func (c *testCTR) Streams() (in, out cipher.Stream) {
	return cipher.NewCTR(c.block, ctrBlock(c.iv, clientToRelay, 0)), cipher.NewCTR(c.block, ctrBlock(c.iv, relayToClient, 0))
}

func (c *testCTR) Seal(dst []byte, n uint64, plain []byte) []byte {
	return append(dst, ctrSeal(c.block, c.iv, relayToClient, n, plain)...)
}

func (c *testCTR) Open(dst []byte, dg []byte) ([]byte, error) {
	_, p, err := ctrOpen(c.block, c.iv, clientToRelay, dg)
	if err != nil {
		return nil, err
	}
	return append(dst, p...), nil
}

// The device leg is a connected socket in gnet: an ICMP "port unreachable" from the device's
// address, or an empty datagram from the device (gnet reads it as the end of the stream),
// closes it, and that ends the link.
func TestUDPLinkDeviceLegEnds(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	t.Run("unreachable", func(t *testing.T) {
		gone := udpSocket(t, "127.0.0.1")
		client := udpSocket(t, "127.0.0.1")
		e := openUDP(t, h, gone, Spec{})
		_ = gone.Close() // nobody listens on the device's port any more
		// The first datagram draws the ICMP error; a later one may be refused with it.
		send(t, client, linkAddr(h, e), []byte("anyone?"))
		checkfor.Check(t, hang, time.Millisecond, func() error {
			if st := e.info().State; st != StateClosed {
				send(t, client, linkAddr(h, e), []byte("anyone?"))
				return fmt.Errorf("state %q, want %q", st, StateClosed)
			}
			return nil
		})
	})
	t.Run("empty datagram", func(t *testing.T) {
		device, client := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
		e := newEntry("token-2", Spec{Device: "DEV-1", Protocol: UDP, DeviceAddr: addrOf(device)}, h.first+1, time.Now())
		if err := h.open(e); err != nil {
			t.Fatal(err)
		}
		send(t, client, linkAddr(h, e), []byte("hi"))
		_, leg := recv(t, device)
		send(t, device, leg, nil)
		checkfor.Check(t, hang, time.Millisecond, func() error {
			if st := e.info().State; st != StateClosed {
				return fmt.Errorf("state %q, want %q", st, StateClosed)
			}
			return nil
		})
	})
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := h.eng.CountConnections(); n != 0 {
			return fmt.Errorf("device sockets = %d, want 0", n)
		}
		return nil
	})
}

// BenchmarkUDPLinkRoundTrip measures a 64-byte request and its answer from a client to an echoing
// device: directly (the floor), through a link, through a link with the test's AES-CTR
// cipher, and through a link on a carrier of two event loops. The difference is what the relay
// adds to a round trip.
func BenchmarkUDPLinkRoundTrip(b *testing.B) {
	var key [32]byte
	var iv [16]byte
	ci := newTestCTR(key, iv)
	for _, mode := range []string{"direct", "link", "link-ctr", "link-2loops"} {
		b.Run(mode, func(b *testing.B) {
			device := benchSocket(b)
			client := benchSocket(b)
			done := make(chan struct{})
			go func() { // the echoing device, ended by closing its socket
				defer close(done)
				buf := make([]byte, 1<<16)
				for {
					n, from, err := device.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					_, _ = device.WriteToUDPAddrPort(buf[:n], from)
				}
			}()
			defer func() { _ = device.Close(); <-done }()

			to := addrOf(device)
			var c *testCTR
			if mode != "direct" {
				loops := udpLoops
				if mode == "link-2loops" {
					loops = 2
				}
				h := benchCarrier(b, loops)
				spec := Spec{Device: "DEV-1", Protocol: UDP, DeviceAddr: addrOf(device)}
				if mode == "link-ctr" {
					spec.Cipher, c = ci, ci
				}
				e := newEntry("bench", spec, h.first, time.Now())
				if err := h.open(e); err != nil {
					b.Fatal(err)
				}
				to = linkAddr(h, e)
			}
			req := payload(64, 1)
			buf := make([]byte, 1<<16)
			b.SetBytes(int64(2 * len(req)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				out := req
				if c != nil {
					out = ctrSeal(c.block, iv, clientToRelay, uint64(i), req)
				}
				if _, err := client.WriteToUDPAddrPort(out, to); err != nil {
					b.Fatal(err)
				}
				_ = client.SetReadDeadline(time.Now().Add(hang))
				if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchSocket(b *testing.B) *net.UDPConn {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func benchCarrier(b *testing.B, loops int) *udpCarrier {
	for range 50 {
		first := uint16(20000 + mrand.IntN(39000))
		if !portsFree(netip.MustParseAddr("127.0.0.1"), first, 1) {
			continue
		}
		h := newUDP(netip.MustParseAddr("127.0.0.1"), first, first, nil)
		h.loops = loops
		if err := h.start(context.Background()); err != nil {
			continue
		}
		b.Cleanup(func() { _ = h.stop(context.Background()) })
		return h
	}
	b.Fatal("no free port")
	return nil
}

// A port of the range that another server's socket holds with SO_REUSEPORT (as gnet binds every
// UDP socket) is not shared: the carrier does not start, rather than take a share of that
// server's datagrams.
func TestUDPRangeNotShared(t *testing.T) {
	other := startUDP(t, "127.0.0.1") // another carrier holds its range
	h := newUDP(other.listen, other.first+2, other.first+2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := h.start(ctx); err == nil {
		_ = h.stop(ctx)
		t.Fatalf("a carrier started on port %d, which another carrier holds", other.first+2)
	} else if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("start on a held port: %v, want EADDRINUSE", err)
	}
}
