package relay_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// natDevice is a device behind carrier-grade NAT as the relay sees it: one UDP socket, from
// which it sends UDATA to the relay's UDP listener and answers the link's datagrams, and which
// only the listener's address reaches.
type natDevice struct {
	t      *testing.T
	id     string
	c      *net.UDPConn
	relay  netip.AddrPort // the relay's UDP device listener
	others int            // datagrams received from any other address
}

func newNATDevice(t *testing.T, r *relay.Relay, id string) *natDevice {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ra := r.DeviceUDPAddr().(*net.UDPAddr).AddrPort()
	return &natDevice{t: t, id: id, c: c, relay: netip.AddrPortFrom(ra.Addr().Unmap(), ra.Port())}
}

func (d *natDevice) addr() netip.AddrPort { return d.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// udata sends one UDATA frame to the relay's listener.
func (d *natDevice) udata(seq uint64) {
	d.t.Helper()
	if _, err := d.c.WriteToUDPAddrPort(native.AppendUData(nil, d.id, "", seq, []byte(`{"nat":1}`)), d.relay); err != nil {
		d.t.Fatal(err)
	}
}

// send sends b to the relay's listener (a link datagram, or anything else).
func (d *natDevice) send(b []byte) {
	d.t.Helper()
	if _, err := d.c.WriteToUDPAddrPort(b, d.relay); err != nil {
		d.t.Fatal(err)
	}
}

// recv reads the next datagram (within wait), failing the test if it came from anywhere but the
// relay's UDP listener. ok is false when nothing came.
func (d *natDevice) recv(wait time.Duration) (b []byte, ok bool) {
	d.t.Helper()
	buf := make([]byte, 1<<16)
	_ = d.c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := d.c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, false
	}
	if err != nil {
		d.t.Fatalf("device %s: %v", d.id, err)
	}
	if from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); from != d.relay {
		d.t.Fatalf("device %s received % x from %s, want only the relay's UDP listener %s", d.id, buf[:n], from, d.relay)
	}
	return buf[:n], true
}

// ack reads the next datagram and checks it is the ACK of seq.
func (d *natDevice) ack(seq uint64) {
	d.t.Helper()
	b, ok := d.recv(10 * time.Second)
	if !ok {
		d.t.Fatalf("device %s: no ACK of seq %d", d.id, seq)
	}
	typ, body, n, err := native.Next(b, 1024)
	if err != nil || n != len(b) || typ != native.TypeAck {
		d.t.Fatalf("device %s received % x, want the ACK of seq %d", d.id, b, seq)
	}
	if got, _ := native.ParseAck(body); got != seq {
		d.t.Fatalf("device %s: ACK of seq %d, want %d", d.id, got, seq)
	}
}

func udpSock(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvFrom reads one datagram on c within 10 s and checks where it came from.
func recvFrom(t *testing.T, c *net.UDPConn, from netip.AddrPort) []byte {
	t.Helper()
	buf := make([]byte, 1<<16)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port()); src != from {
		t.Fatalf("client received % x from %s, want from the link port %s", buf[:n], src, from)
	}
	return buf[:n]
}

// A UDP link via the relay's UDP device listener, to a device that speaks the native protocol
// over UDP from one socket and answers the link's datagrams on the same socket (as a device
// behind carrier NAT must): a request without devicePort takes the listener path; what the
// pinned client sends reaches the device byte-exact, from the listener's address only, and the
// answers come back byte-exact; native UDATA from the same socket is still stored and acked
// while the link is open (the client sees nothing of it); a datagram that is a native frame of
// another type is the link's; a stray non-native datagram from an address without a link is
// dropped and counted; the link follows the device to a new source; DELETE ends it, and the
// device's datagrams are strays again.
func TestDeviceLinkUDPViaListener(t *testing.T) {
	r, boot, _ := linkRelay(t, 2)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-nat", map[string]any{})
	dev := newNATDevice(t, r, "sn-nat")
	dev.udata(1)
	dev.ack(1)

	client, stranger, stray := udpSock(t), udpSock(t), udpSock(t)
	cport := client.LocalAddr().(*net.UDPAddr).Port
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-nat", map[string]any{"protocol": "udp",
		"timeout": 60000, "source": map[string]any{"host": "127.0.0.1", "port": cport}})
	if v["via"] != "listener" || v["devicePort"] != float64(dev.addr().Port()) {
		t.Fatalf("POST devicelink without devicePort for a device seen over UDP = %v, want via listener to its source port %d", v, dev.addr().Port())
	}
	linkPort := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(v["port"].(float64)))
	if got := metric(t, r, "fleetrelay_devicelink_udp_listener_links"); got != 1 {
		t.Errorf("fleetrelay_devicelink_udp_listener_links = %v, want 1", got)
	}

	if _, err := stranger.WriteToUDPAddrPort([]byte("not pinned"), linkPort); err != nil {
		t.Fatal(err)
	}
	dropped := metric(t, r, "fleetrelay_udp_dropped_total")
	payload := func(i int) []byte {
		b := make([]byte, 1+i*37)
		pattern(b, 0, byte(i))
		return b
	}
	exchange := func(i int, msg []byte) {
		t.Helper()
		if _, err := client.WriteToUDPAddrPort(msg, linkPort); err != nil {
			t.Fatal(err)
		}
		got, ok := dev.recv(10 * time.Second)
		if !ok || !bytes.Equal(got, msg) {
			t.Fatalf("exchange %d: the device received % x (%v), want % x (nothing of the unpinned source)", i, got, ok, msg)
		}
		reply := append([]byte("re:"), msg...)
		dev.send(reply)
		if got := recvFrom(t, client, linkPort); !bytes.Equal(got, reply) {
			t.Fatalf("exchange %d: the client received % x, want % x", i, got, reply)
		}
	}
	sent, seq := 0, uint64(1)
	for i := range 30 {
		exchange(i, payload(i))
		sent++
		switch i {
		case 10: // native UDATA from the link's source: stored and acked, not the link's
			seq++
			dev.udata(seq)
			dev.ack(seq)
		case 15: // a native frame, but not UDATA: the listener drops it, so it is the link's
			exchange(i, native.AppendFrame(nil, native.TypePing, []byte("p")))
			sent++
		case 20: // a stray from an address without a link: dropped and counted
			if _, err := stray.WriteToUDPAddrPort([]byte("stray"), dev.relay); err != nil {
				t.Fatal(err)
			}
			waitMetric(t, r, "fleetrelay_udp_dropped_total", dropped+1)
		}
	}
	d := boot.must(http.StatusOK, "GET", "/api/v1/devices/sn-nat", nil)
	if field(d, "state", "last_seq") != float64(seq) {
		t.Errorf("device state = %v, want last_seq %d: the UDATA sent while the link is open is stored", field(d, "state"), seq)
	}
	for _, dir := range []string{"to_device", "to_client"} {
		name := fmt.Sprintf(`fleetrelay_devicelink_udp_datagrams_total{direction=%q}`, dir)
		if got := metric(t, r, name); got != float64(sent) {
			t.Errorf("%s = %v, want %d", name, got, sent)
		}
	}
	if got := metric(t, r, `fleetrelay_devicelink_udp_dropped_total{reason="source"}`); got != 1 {
		t.Errorf(`dropped{reason="source"} = %v, want 1 (the stranger's datagram)`, got)
	}
	if got := metric(t, r, "fleetrelay_udp_dropped_total"); got != dropped+1 {
		t.Errorf("fleetrelay_udp_dropped_total = %v, want %v: only the stray is dropped", got, dropped+1)
	}

	// The device's NAT mapping changes: its datagrams come from a new source, which the link
	// follows at the carrier's next tick.
	moved := newNATDevice(t, r, "sn-nat")
	seq++
	moved.udata(seq)
	moved.ack(seq)
	waitMetric(t, r, "fleetrelay_devicelink_udp_followed_total", 1)
	if _, err := client.WriteToUDPAddrPort([]byte("where are you"), linkPort); err != nil {
		t.Fatal(err)
	}
	if got, ok := moved.recv(10 * time.Second); !ok || string(got) != "where are you" {
		t.Fatalf("the moved device received %q (%v), want %q", got, ok, "where are you")
	}
	moved.send([]byte("here"))
	if b := recvFrom(t, client, linkPort); string(b) != "here" {
		t.Fatalf("the client received %q from the moved device, want %q", b, "here")
	}
	l := boot.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
	if lv := l["data"].([]any)[0].(map[string]any); lv["devicePort"] != float64(moved.addr().Port()) || lv["via"] != "listener" {
		t.Errorf("listed link = %v, want via listener to the new source port %d", lv, moved.addr().Port())
	}
	dropped = metric(t, r, "fleetrelay_udp_dropped_total")
	dev.send([]byte("from the old mapping")) // no link carries that source any more
	waitMetric(t, r, "fleetrelay_udp_dropped_total", dropped+1)

	boot.must(http.StatusNoContent, "DELETE", "/api/v1/devicelink/"+v["token"].(string), nil)
	waitMetric(t, r, "fleetrelay_devicelink_udp_listener_links", 0)
	moved.send([]byte("after the link"))
	waitMetric(t, r, "fleetrelay_udp_dropped_total", dropped+2)
	seq++
	moved.udata(seq)
	moved.ack(seq)
}

// Which way a UDP link reaches its device: via the listener when asked, or by default for a
// device last seen over UDP when no devicePort is given nor configured; via a socket otherwise.
// A request for the listener path that cannot have it is refused at its field; one device
// source carries one link via the listener at a time.
func TestDeviceLinkUDPViaChoice(t *testing.T) {
	r, boot, _ := linkRelay(t, 8)
	for _, id := range []string{"sn-u", "sn-t"} {
		boot.must(http.StatusCreated, "PUT", "/api/v1/devices/"+id, map[string]any{})
	}
	dev := newNATDevice(t, r, "sn-u")
	dev.udata(1)
	dev.ack(1)
	connectNative(t, r, "sn-t")

	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-u", map[string]any{"protocol": "udp", "devicePort": 7000})
	if v["via"] != "socket" || v["devicePort"] != float64(7000) {
		t.Errorf("UDP link with devicePort = %v, want via socket to 7000", v)
	}
	v = boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-u", map[string]any{"protocol": "udp", "via": "listener"})
	if v["via"] != "listener" || v["devicePort"] != float64(dev.addr().Port()) {
		t.Errorf("UDP link via listener = %v, want the device's source port %d", v, dev.addr().Port())
	}
	boot.must(http.StatusConflict, "POST", "/api/v1/devicelink/sn-u", map[string]any{"protocol": "udp"})
	v = boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-t", map[string]any{"protocol": "tcp", "devicePort": 7000})
	if _, has := v["via"]; has {
		t.Errorf("TCP link = %v, want no via", v)
	}
	for _, c := range []struct {
		id       string
		body     map[string]any
		pointers []string
	}{
		{"sn-t", map[string]any{"protocol": "udp"}, []string{"/devicePort"}},                            // seen over TCP: a socket, which needs a port
		{"sn-t", map[string]any{"protocol": "udp", "via": "listener"}, []string{"/via"}},                // seen over TCP: no UDP source
		{"sn-u", map[string]any{"protocol": "tcp", "via": "listener"}, []string{"/devicePort", "/via"}}, // UDP only; and a TCP link needs a port
		{"sn-u", map[string]any{"protocol": "udp", "via": "socket"}, []string{"/devicePort"}},           // a socket needs a port
		{"sn-u", map[string]any{"protocol": "udp", "via": "listener", "devicePort": 7000}, []string{"/devicePort"}},
	} {
		if st, v := boot.do("POST", "/api/v1/devicelink/"+c.id, c.body); st != http.StatusUnprocessableEntity || !slices.Equal(pointers(v), c.pointers) {
			t.Errorf("POST %s %v = %d %v, want 422 at %v", c.id, c.body, st, v, c.pointers)
		}
	}

	// With devicelink.device_port set, a request without devicePort keeps its meaning: a socket
	// to that port.
	r2, boot2, _ := linkRelay(t, 2, func(c *config.Config) { c.DeviceLink.DevicePort = 7000 })
	boot2.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-u", map[string]any{})
	dev2 := newNATDevice(t, r2, "sn-u")
	dev2.udata(1)
	dev2.ack(1)
	v = boot2.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-u", map[string]any{"protocol": "udp"})
	if v["via"] != "socket" || v["devicePort"] != float64(7000) {
		t.Errorf("UDP link with devicelink.device_port set = %v, want via socket to 7000", v)
	}
}

// The round trip of a 64-byte datagram from a client through a UDP link to an echoing device
// and back, via the device listener and via a socket of the link's own, beside the same
// exchange sent straight to the device (the floor, measured in the same run). Run with
// go test ./internal/relay -run '^$' -bench DeviceLinkUDPRoundTrip; LOOPS=n sets
// devices.event_loops. Via the listener, two gnet engines take part in each round trip (the
// links' and the device listener's) instead of one, each loop blocking in epoll_wait with a P
// of the Go runtime until sysmon takes it back: on 2 cores that costs more than the copy.
func BenchmarkDeviceLinkUDPRoundTrip(b *testing.B) {
	cfg := testConfig(b, nil)
	if n := os.Getenv("LOOPS"); n != "" {
		cfg.Devices.EventLoops, _ = strconv.Atoi(n)
	}
	cfg.DeviceLink.Listen = "127.0.0.1"
	first := 0
	for p := 20000 + rand.IntN(12000); first == 0 && p < 32000; p += 2 { // two ports free for TCP and UDP
		free := true
		for q := p; q < p+2 && free; q++ {
			tl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			ul, uerr := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", q))
			free = err == nil && uerr == nil
			if err == nil {
				_ = tl.Close()
			}
			if uerr == nil {
				_ = ul.Close()
			}
		}
		if free {
			first = p
		}
	}
	if first == 0 {
		b.Fatal("no two free ports")
	}
	cfg.DeviceLink.Ports = fmt.Sprintf("%d-%d", first, first+1)
	r := startRelay(b, cfg)
	key, err := os.ReadFile(cfg.DataDir + "/admin.key")
	if err != nil {
		b.Fatal(err)
	}
	api := func(method, path, body string, want int) map[string]any {
		req, err := http.NewRequest(method, "http://"+r.AdminAddr().String()+path, strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		if resp.StatusCode != want {
			b.Fatalf("%s %s = %d %v, want %d", method, path, resp.StatusCode, v, want)
		}
		return v
	}
	api("PUT", "/api/v1/devices/sn-bench", `{}`, http.StatusCreated)

	// The device: one socket, known to the relay by a UDATA, then echoing whatever comes.
	dev, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	ra := r.DeviceUDPAddr().(*net.UDPAddr).AddrPort()
	if _, err := dev.WriteToUDPAddrPort(native.AppendUData(nil, "sn-bench", "", 1, []byte(`{}`)), ra); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := dev.ReadFromUDPAddrPort(buf); err != nil { // the ACK
		b.Fatal(err)
	}
	_ = dev.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := dev.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = dev.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	defer func() { _ = dev.Close(); <-done }()

	for _, mode := range []string{"direct", "socket", "listener"} {
		b.Run(mode, func(b *testing.B) {
			client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			to := dev.LocalAddr().(*net.UDPAddr).AddrPort()
			if mode != "direct" {
				body := `{"protocol":"udp","via":"listener"}`
				if mode == "socket" {
					body = fmt.Sprintf(`{"protocol":"udp","via":"socket","devicePort":%d}`, to.Port())
				}
				v := api("POST", "/api/v1/devicelink/sn-bench", body, http.StatusCreated)
				defer api("DELETE", "/api/v1/devicelink/"+v["token"].(string), "", http.StatusNoContent)
				to = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(v["port"].(float64)))
			}
			req := bytes.Repeat([]byte{'x'}, 64)
			buf := make([]byte, 1<<16)
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := client.WriteToUDPAddrPort(req, to); err != nil {
					b.Fatal(err)
				}
				_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(took)
			q := func(p float64) float64 { return float64(took[int(p*float64(len(took)-1))].Nanoseconds()) / 1e3 }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(float64(took[len(took)-1].Nanoseconds())/1e3, "max-µs")
		})
	}
}
