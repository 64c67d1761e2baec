package netio_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/netio"
)

// The UDP listener's tap (a device link's way in) is offered exactly the datagrams that are not
// native frames — not a header announcing a UDATA frame of the datagram's length — and takes
// those of its sources; native datagrams from the same source are stored and acknowledged as
// before, a UDATA that fails to parse stays the listener's to drop, and what the tap does not
// take is dropped and counted. UDPSender sends from the listener's own address.
func TestUDPTap(t *testing.T) {
	f := newFleet(t)
	srv := start(t, netio.Options{}, f)
	listener := srv.UDPAddr().(*net.UDPAddr).AddrPort()
	dev, stray := udpPeer(t), udpPeer(t)
	devAddr := dev.LocalAddr().(*net.UDPAddr).AddrPort()

	var mu sync.Mutex
	var tapped [][]byte
	srv.SetUDPTap(func(src netip.AddrPort, b []byte) bool {
		if src != devAddr {
			return false
		}
		mu.Lock()
		tapped = append(tapped, bytes.Clone(b))
		mu.Unlock()
		return true
	})

	good := native.AppendUData(nil, "U1", "", 1, []byte(`{"a":1}`))
	toLink := [][]byte{
		[]byte("a link's datagram"),
		good[:len(good)-3], // its header announces more than it holds: not a native frame
		native.AppendHello(nil, &native.Hello{Serial: "U1"}),
		native.AppendFrame(nil, native.TypePing, []byte("p")),
	}
	for _, b := range toLink {
		sendTo(t, dev, listener, b)
	}
	sendTo(t, dev, listener, native.AppendUData(nil, "U1", "", 2, []byte(`[1]`))) // a UDATA frame, malformed: dropped
	sendTo(t, dev, listener, good)
	sendTo(t, stray, listener, []byte("a stray"))
	if b, from := recvOn(t, dev); from != listener || !slices.Equal(b, native.AppendAck(nil, 1)) {
		t.Fatalf("device got % x from %s, want the ACK of seq 1 from the listener %s", b, from, listener)
	}
	checkfor.Check(t, hang, time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if st := srv.Stats(); len(tapped) != len(toLink) || st.UDPDropped != 2 || st.Frames != 1 {
			return fmt.Errorf("tapped %d, stats %+v; want %d tapped, 2 dropped, 1 frame", len(tapped), st, len(toLink))
		}
		return nil
	})
	mu.Lock()
	for _, b := range toLink {
		if !slices.ContainsFunc(tapped, func(x []byte) bool { return bytes.Equal(x, b) }) {
			t.Errorf("the tap did not get % x", b)
		}
	}
	mu.Unlock()
	if calls := f.udataCalls(); len(calls) != 1 || calls[0].seq != 1 {
		t.Errorf("UData calls %+v, want seq 1 only", calls)
	}

	send, err := srv.UDPSender(devAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := send([]byte("from the listener")); err != nil {
		t.Fatal(err)
	}
	if b, from := recvOn(t, dev); from != listener || string(b) != "from the listener" {
		t.Fatalf("device got %q from %s, want %q from the listener %s", b, from, "from the listener", listener)
	}

	srv.SetUDPTap(nil)
	sendTo(t, dev, listener, []byte("no tap"))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := srv.Stats(); st.UDPDropped != 3 {
			return fmt.Errorf("dropped %d, want 3", st.UDPDropped)
		}
		return nil
	})
}

func udpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sendTo(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

func recvOn(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(hang))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}
