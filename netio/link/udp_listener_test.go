package link

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
)

// deviceListener stands for the relay's UDP device listener (netio's, tested with the relay in
// internal/relay): a real UDP socket whose reader offers every datagram to the carrier as
// netio's tap does, and counts those no link takes (the listener would drop them).
type deviceListener struct {
	c      *net.UDPConn
	strays atomic.Uint64
	where  sync.Map // device → netip.AddrPort: its last UDP source, for Locate
}

func listenDevices(t *testing.T, h *udpCarrier) *deviceListener {
	t.Helper()
	dl := &deviceListener{c: udpSocket(t, "127.0.0.1")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, src, err := dl.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !h.fromListener(unmap(src), buf[:n]) {
				dl.strays.Add(1)
			}
		}
	}()
	t.Cleanup(func() { _ = dl.c.Close(); <-done })
	h.dl = DeviceListener{
		Sender: func(dst netip.AddrPort) (func([]byte) error, error) {
			return func(b []byte) error { _, err := dl.c.WriteToUDPAddrPort(b, dst); return err }, nil
		},
		Locate: func(device string) (netip.AddrPort, bool) {
			a, ok := dl.where.Load(device)
			if !ok {
				return netip.AddrPort{}, false
			}
			return a.(netip.AddrPort), true
		},
	}
	return dl
}

func (dl *deviceListener) addr() netip.AddrPort { return addrOf(dl.c) }

// openVia opens a link via the listener on port to device (its last UDP source).
func openVia(h *udpCarrier, port uint16, device *net.UDPConn, spec Spec) (*entry, error) {
	spec.Device, spec.Protocol, spec.DeviceAddr, spec.Via = "DEV-1", UDP, addrOf(device), ViaListener
	e := newEntry("token-via-"+device.LocalAddr().String(), spec, port, time.Now())
	return e, h.open(e)
}

// A link via the device listener: the client's datagrams (encrypted, as on a link's own socket)
// reach the device in clear from the listener's address, and the device's datagrams to the
// listener reach the client sealed; datagrams from other sources stay the listener's; the link
// follows the device to a new source; once closed, the device's datagrams are the listener's.
func TestUDPLinkViaListener(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	dl := listenDevices(t, h)
	device, moved, other, client := udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1"), udpSocket(t, "127.0.0.1")
	var key [32]byte
	var iv [16]byte
	_, _ = rand.Read(key[:])
	_, _ = rand.Read(iv[:])
	ci := newTestCTR(key, iv)
	dl.where.Store("DEV-1", addrOf(device))
	e, err := openVia(h, h.first, device, Spec{Cipher: ci})
	if err != nil {
		t.Fatalf("open: %v", err)
	}

	send(t, client, linkAddr(h, e), ctrSeal(ci.block, iv, clientToRelay, 0, []byte("hello")))
	got, from := recv(t, device)
	if string(got) != "hello" || from != dl.addr() {
		t.Fatalf("device got %q from %s, want %q from the listener %s", got, from, "hello", dl.addr())
	}
	send(t, other, dl.addr(), []byte("not the link's device"))
	waitCount(t, "strays", &dl.strays, 1)
	send(t, device, dl.addr(), []byte("reply"))
	dg, from := recv(t, client)
	if n, p, err := ctrOpen(ci.block, iv, relayToClient, dg); err != nil || n != 0 || string(p) != "reply" || from != linkAddr(h, e) {
		t.Fatalf("client got number %d %q (%v) from %s, want 0 %q from %s", n, p, err, from, "reply", linkAddr(h, e))
	}
	if bytes.Contains(dg, []byte("reply")) {
		t.Fatal("the device's datagram reached the client in clear")
	}

	// The device's NAT mapping changes: the link follows its new source at the next tick.
	dl.where.Store("DEV-1", addrOf(moved))
	waitCount(t, "followed", &h.st.followed, 1)
	if in := e.info(); in.DeviceAddr != addrOf(moved) {
		t.Errorf("info's DeviceAddr = %s after the move, want %s", in.DeviceAddr, addrOf(moved))
	}
	send(t, client, linkAddr(h, e), ctrSeal(ci.block, iv, clientToRelay, 1, []byte("again")))
	if got, from := recv(t, moved); string(got) != "again" || from != dl.addr() {
		t.Fatalf("moved device got %q from %s, want %q from the listener", got, from, "again")
	}
	send(t, device, dl.addr(), []byte("old mapping")) // no longer the link's
	waitCount(t, "strays", &dl.strays, 2)
	send(t, moved, dl.addr(), []byte("moved reply"))
	dg, _ = recv(t, client)
	if n, p, err := ctrOpen(ci.block, iv, relayToClient, dg); err != nil || n != 1 || string(p) != "moved reply" {
		t.Fatalf("client got number %d %q (%v), want 1 %q", n, p, err, "moved reply")
	}

	m := gather(t, h)
	for k, v := range map[string]float64{
		`fleetrelay_devicelink_udp_listener_links`:                         1,
		`fleetrelay_devicelink_udp_followed_total`:                         1,
		`fleetrelay_devicelink_udp_datagrams_total{direction="to_device"}`: 2,
		`fleetrelay_devicelink_udp_datagrams_total{direction="to_client"}`: 2,
	} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if in := e.info(); in.ToDevice != uint64(len("hello")+len("again")) || in.ToClient != uint64(len("reply")+len("moved reply")) {
		t.Errorf("ToDevice, ToClient = %d, %d; want the plaintext bytes", in.ToDevice, in.ToClient)
	}

	h.close(e)
	if h.bySrc.Load() != nil {
		t.Error("a closed link still holds its device source")
	}
	send(t, moved, dl.addr(), []byte("after close"))
	waitCount(t, "strays", &dl.strays, 3)
	if m := gather(t, h); m[`fleetrelay_devicelink_udp_listener_links`] != 0 {
		t.Errorf("listener links after close = %v, want 0", m[`fleetrelay_devicelink_udp_listener_links`])
	}
}

// A link via the listener closes after its timeout as any UDP link; one device source carries
// one such link at a time; without a listener none opens.
func TestUDPLinkViaListenerLimits(t *testing.T) {
	h := startUDP(t, "127.0.0.1")
	device := udpSocket(t, "127.0.0.1")
	if _, err := openVia(h, h.first, device, Spec{}); !errors.Is(err, ErrNoListener) {
		t.Fatalf("open without a listener: %v, want ErrNoListener", err)
	}
	listenDevices(t, h)
	e, err := openVia(h, h.first, device, Spec{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openVia(h, h.first+1, device, Spec{}); !errors.Is(err, ErrSourceBusy) {
		t.Fatalf("a second link to the same source: %v, want ErrSourceBusy", err)
	}
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := e.info().State; st != StateClosed {
			return errors.New("the link is " + st + ", want closed by its timeout")
		}
		return nil
	})
	waitCount(t, "timeouts", &h.st.timeouts, 1)
	if _, err := openVia(h, h.first+1, device, Spec{}); err != nil {
		t.Fatalf("a link to the source its timed-out link held: %v", err)
	}
}

// What the device listener's tap costs a datagram that is not a native frame and that no link
// takes (a stray), with no link via the listener and with 10,000: one atomic load, then one map
// lookup. Native datagrams never reach it.
func BenchmarkUDPLinkListenerStray(b *testing.B) {
	for _, links := range []int{0, 10000} {
		b.Run(fmt.Sprintf("links=%d", links), func(b *testing.B) {
			h := newUDP(netip.MustParseAddr("127.0.0.1"), 40000, 40000, nil)
			h.mu.Lock()
			for i := range links {
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5000)
				h.setSource(&udpLink{e: &entry{}}, netip.AddrPort{}, src)
			}
			h.mu.Unlock()
			stray := netip.MustParseAddrPort("192.0.2.1:5000")
			data := []byte("a stray datagram")
			b.ReportAllocs()
			for b.Loop() {
				if h.fromListener(stray, data) {
					b.Fatal("a stray was taken")
				}
			}
		})
	}
}
