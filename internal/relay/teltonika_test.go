package relay_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// telSink is an HTTP endpoint that keeps the records it receives (the envelope format's
// "data" of each message), by their "ts" and the serial (IMEI) of their device.
type telSink struct {
	mu      sync.Mutex
	records []map[string]any // every record received, duplicates too
	status  int              // answer; 0: 200
	bodies  int
	srv     *httptest.Server
}

func newTelSink(t *testing.T) *telSink {
	s := &telSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var msgs []map[string]any
		if err := json.Unmarshal(b, &msgs); err != nil {
			http.Error(w, fmt.Sprintf("not a JSON array: %s", b), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.bodies++
		if s.status != 0 {
			w.WriteHeader(s.status)
			return
		}
		for _, m := range msgs {
			rec, _ := m["data"].(map[string]any)
			if rec == nil {
				rec = m
			}
			rec["_imei"] = m["imei"]
			s.records = append(s.records, rec)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *telSink) setStatus(code int) {
	s.mu.Lock()
	s.status = code
	s.mu.Unlock()
}

func (s *telSink) got() ([]map[string]any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.records...), s.bodies
}

// telConfig is a relay with both Teltonika listeners on port 0 and an envelope route to s.
func telConfig(t *testing.T, s *telSink) *config.Config {
	cfg := relaytest.Config(t, "")
	cfg.Devices.Teltonika.TCP = "127.0.0.1:0"
	cfg.Devices.Teltonika.UDP = "127.0.0.1:0"
	rt := config.DefaultRoute()
	rt.Name, rt.URL = "tel", s.srv.URL+"/ingest"
	rt.Batch.Linger = config.Duration(2 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, rt)
	return cfg
}

const telIMEI = "356307042441013"

// telRecords are n Codec 8 records from base on, a second apart, with an ignition and an
// odometer IO element and a negative latitude.
func telRecords(base time.Time, n int) []teltonika.Record {
	recs := make([]teltonika.Record, n)
	for i := range recs {
		recs[i] = teltonika.Record{Codec: teltonika.Codec8, Time: base.Add(time.Duration(i) * time.Second), Priority: 1,
			Lon: 251234567 + int32(i), Lat: -546543210, Alt: -12, Angle: 90, Satellites: 9, Speed: uint16(40 + i), EventID: 0,
			IO: []teltonika.IO{{ID: 239, Size: 1, Value: 1}, {ID: 16, Size: 4, Value: uint64(100000 + i)}}}
	}
	return recs
}

// telDial connects to addr and sends imei's handshake; it returns the connection and the
// relay's answer (1 or 0).
func telDial(t *testing.T, addr, imei string) (net.Conn, byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(teltonika.AppendIMEI(nil, imei)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("handshake answer: %v", err)
	}
	return c, b[0]
}

// readAck reads a TCP answer: the count of records accepted.
func readAck(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [4]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return binary.BigEndian.Uint32(b[:])
}

// noAnswer checks that c has nothing to read for a short while.
func noAnswer(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [64]byte
	if n, err := c.Read(b[:]); err == nil {
		t.Fatalf("unexpected answer % x", b[:n])
	} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v", err)
	}
}

// byTS indexes records by their "ts".
func byTS(recs []map[string]any) map[string]int {
	m := map[string]int{}
	for _, r := range recs {
		ts, _ := r["ts"].(string)
		m[ts]++
	}
	return m
}

// Through the real relay to an HTTP endpoint: the handshake is answered 01; a packet of 3
// records is answered 3 and its decoded fields arrive; a packet with a bad CRC is answered 0 and
// the connection goes on; a packet split at every byte with pings between, and two packets in one
// write, are answered; a packet resent (as after a lost answer) is answered with its full count
// but its records arrive once.
func TestTeltonikaTCP(t *testing.T) {
	sink := newTelSink(t)
	r := startRelay(t, telConfig(t, sink))
	c, ok := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI)
	if ok != 1 {
		t.Fatalf("handshake answered %d, want 1", ok)
	}
	base := time.Date(2026, 12, 7, 10, 0, 0, 123e6, time.UTC)
	first := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base, 3))
	send := func(b []byte) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	send(first)
	if n := readAck(t, c); n != 3 {
		t.Fatalf("answer to 3 records = %d", n)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if recs, _ := sink.got(); len(recs) < 3 {
			return fmt.Errorf("%d records delivered, want 3", len(recs))
		}
		return nil
	})
	recs, _ := sink.got()
	rec := recs[0]
	for k, want := range map[string]any{"ts": "2026-12-07T10:00:00.123Z", "lat": -54.654321, "lon": 25.1234567, "alt": -12.0,
		"speed": 40.0, "satellites": 9.0, "angle": 90.0, "ignition": true, "odometer": 100000.0, "_imei": telIMEI} {
		if rec[k] != want {
			t.Errorf("delivered %s = %v (%T), want %v; record %v", k, rec[k], rec[k], want, rec)
		}
	}

	bad := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base.Add(time.Minute), 2))
	bad[len(bad)-1] ^= 0xFF // the CRC
	send(bad)
	if n := readAck(t, c); n != 0 {
		t.Fatalf("answer to a bad CRC = %d, want 0", n)
	}

	split := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base.Add(2*time.Minute), 2))
	send([]byte{0xFF}) // a ping: a lone 0xFF between frames
	for i := range split {
		send([]byte{split[i]})
	}
	if n := readAck(t, c); n != 2 {
		t.Fatalf("answer to a packet split at every byte = %d, want 2", n)
	}
	send([]byte{0xFF})
	two := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base.Add(3*time.Minute), 1))
	two = teltonika.AppendTCP(two, teltonika.Codec8, telRecords(base.Add(4*time.Minute), 1))
	send(two)
	if a, b := readAck(t, c), readAck(t, c); a != 1 || b != 1 {
		t.Fatalf("answers to two packets in one write = %d, %d, want 1, 1", a, b)
	}

	// The first packet again, on a new connection (its answer was lost): answered, not stored.
	c.Close()
	c2, _ := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI)
	if _, err := c2.Write(first); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c2); n != 3 {
		t.Fatalf("answer to a resent packet = %d, want 3", n)
	}
	const want = 3 + 2 + 1 + 1
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if recs, _ := sink.got(); len(recs) < want {
			return fmt.Errorf("%d records delivered, want %d", len(recs), want)
		}
		return nil
	})
	// A packet after the resend: once it is delivered, the resend would have been too.
	send2 := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base.Add(5*time.Minute), 1))
	if _, err := c2.Write(send2); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c2); n != 1 {
		t.Fatalf("answer = %d, want 1", n)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if recs, _ := sink.got(); len(recs) < want+1 {
			return fmt.Errorf("%d records delivered, want %d", len(recs), want+1)
		}
		return nil
	})
	recs, _ = sink.got()
	for ts, n := range byTS(recs) {
		if n != 1 {
			t.Errorf("record %s delivered %d times", ts, n)
		}
	}
	if len(recs) != want+1 {
		t.Errorf("%d records delivered, want %d", len(recs), want+1)
	}
	st := r.TeltonikaStats()
	if st.Net.Bad != 1 || st.Net.BadBy["crc"] != 1 || st.Net.Pings != 2 || st.Actors.Duplicates != 3 {
		t.Errorf("stats %+v: want 1 bad (crc), 2 pings, 3 duplicates", st)
	}
}

// In ack mode delivery a packet is answered only once the route took its records: not while the
// endpoint answers 503.
func TestTeltonikaAckAfterDelivery(t *testing.T) {
	sink := newTelSink(t)
	sink.setStatus(http.StatusServiceUnavailable)
	cfg := telConfig(t, sink)
	cfg.Devices.Ack = config.AckDelivery
	r := startRelay(t, cfg)
	c, _ := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI)
	if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(time.Now(), 2))); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, bodies := sink.got(); bodies < 2 {
			return fmt.Errorf("%d requests, want 2 refused", bodies)
		}
		return nil
	})
	noAnswer(t, c)
	sink.setStatus(0)
	if n := readAck(t, c); n != 2 {
		t.Fatalf("answer = %d, want 2", n)
	}
	if recs, _ := sink.got(); len(recs) != 2 {
		t.Fatalf("%d records delivered when answered, want 2", len(recs))
	}
}

// Over UDP: the answer echoes the packet id and AVL packet id with the count; malformed
// datagrams are not answered; a datagram resent is answered again and stored once.
func TestTeltonikaUDP(t *testing.T) {
	sink := newTelSink(t)
	r := startRelay(t, telConfig(t, sink))
	c, err := net.Dial("udp", r.TeltonikaUDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := teltonika.UDPHeader{PacketID: 0xCAFE, AVLPacketID: 7, IMEI: telIMEI}
	good := teltonika.AppendUDP(nil, h, teltonika.Codec8, telRecords(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 4))
	for _, b := range [][]byte{good[:len(good)-3], {0, 1, 2}, append(append([]byte(nil), good...), 0)} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	noAnswer(t, c)
	for range 2 {
		if _, err := c.Write(good); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if want := teltonika.AppendUDPAck(nil, h, 4); string(buf[:n]) != string(want) {
			t.Fatalf("answer % x, want % x", buf[:n], want)
		}
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if recs, _ := sink.got(); len(recs) < 4 {
			return fmt.Errorf("%d records delivered, want 4", len(recs))
		}
		return nil
	})
	// One more datagram, delivered after the resend would have been.
	h.PacketID, h.AVLPacketID = 0xCAFF, 8
	if _, err := c.Write(teltonika.AppendUDP(nil, h, teltonika.Codec8, telRecords(time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC), 1))); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if recs, _ := sink.got(); len(recs) < 5 {
			return fmt.Errorf("%d records delivered, want 5", len(recs))
		}
		return nil
	})
	if recs, _ := sink.got(); len(recs) != 5 {
		t.Errorf("%d records delivered, want 5 (the resend stored once)", len(recs))
	}
	if st := r.TeltonikaStats(); st.Net.Dropped != 3 || st.Net.Datagrams != 3 {
		t.Errorf("stats %+v, want 3 dropped, 3 datagrams", st)
	}
}

// devices.auth known: an IMEI the relay does not know is answered 00 and the connection closed;
// a known one 01.
func TestTeltonikaAuthKnown(t *testing.T) {
	sink := newTelSink(t)
	cfg := telConfig(t, sink)
	cfg.Devices.Auth = config.AuthKnown
	cfg.Fleet = append(cfg.Fleet, config.Device{ID: telIMEI})
	r := startRelay(t, cfg)
	c, ans := telDial(t, r.TeltonikaTCPAddr().String(), "356307042441099")
	if ans != 0 {
		t.Fatalf("unknown IMEI answered %d, want 0", ans)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after 00: %v, want the connection closed", err)
	}
	if _, ans := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI); ans != 1 {
		t.Fatalf("known IMEI answered %d, want 1", ans)
	}
}

// telFrame reads one TCP frame (Codec 12 from the relay) from c.
func telFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf []byte
	b := make([]byte, 256)
	for {
		if n, err := teltonika.FrameLen(buf); err != nil {
			t.Fatalf("frame from the relay: %v (% x)", err, buf)
		} else if n > 0 {
			if n != len(buf) {
				t.Fatalf("frame of %d bytes followed by % x", n, buf[n:])
			}
			return buf
		}
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		buf = append(buf, b[:n]...)
	}
}

// A Codec 12 getinfo round trip through the commands API with a simulated tracker: the command
// is written once the tracker's packet is answered, the response completes the task with its
// text and reaches the route as a task result; a payload without "text" fails its task.
func TestTeltonikaCodec12(t *testing.T) {
	sink := newTelSink(t)
	cfg := telConfig(t, sink)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/"+telIMEI, map[string]any{"tags": []string{"fmb"}})
	c, _ := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI)
	if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(time.Now(), 1))); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c); n != 1 {
		t.Fatalf("answer = %d", n)
	}
	v := api.must(http.StatusCreated, "POST", "/api/v1/devices/"+telIMEI+"/commands", map[string]any{"payload": map[string]any{"text": "getinfo"}})
	task := v["task"]
	frame := telFrame(t, c)
	if want := teltonika.AppendCommand(nil, "getinfo"); string(frame) != string(want) {
		t.Fatalf("command frame % x, want % x", frame, want)
	}
	const info = "RTC:2026/12/7 10:00 Init:2026/12/7 9:58 UpTime:120s PWR:SoftReset RST:0 GPS:3 SAT:9"
	if _, err := c.Write(teltonika.AppendResponse(nil, info)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for _, tk := range tasksOf(api, telIMEI) {
			if float64(tk.ID) != task {
				continue
			}
			if tk.State != "succeeded" {
				return fmt.Errorf("task %v", tk)
			}
			var res struct{ Text string }
			if err := json.Unmarshal(tk.Result, &res); err != nil || res.Text != info {
				t.Fatalf("task result %s, want the response text", tk.Result)
			}
			return nil
		}
		return fmt.Errorf("task %v not listed", task)
	})
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		recs, _ := sink.got()
		for _, rec := range recs {
			if rec["text"] == info {
				return nil
			}
		}
		return fmt.Errorf("the result did not reach the route: %v", recs)
	})

	v = api.must(http.StatusCreated, "POST", "/api/v1/devices/"+telIMEI+"/commands", map[string]any{"payload": map[string]any{"op": "getinfo"}})
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for _, tk := range tasksOf(api, telIMEI) {
			if float64(tk.ID) == v["task"] && tk.State == "failed" {
				return nil
			}
		}
		return fmt.Errorf("task %v without text not failed: %v", v["task"], tasksOf(api, telIMEI))
	})
	noAnswer(t, c) // nothing written for it
	if st := r.TeltonikaStats(); st.Net.Responses != 1 {
		t.Errorf("stats %+v, want 1 response", st)
	}
}

// telTracker is a simulated tracker for the crash test: it sends packets of 3 records, one at
// a time, and keeps a packet until it is answered, resending it on its next connection.
type telTracker struct {
	imei    string
	c       net.Conn
	next    int    // packets made
	pending []byte // the packet sent and not answered
	acked   []string
}

func (tr *telTracker) packet() []byte {
	if tr.pending == nil {
		base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).Add(time.Duration(tr.next) * 10 * time.Second)
		tr.pending = teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base, 3))
		tr.next++
	}
	return tr.pending
}

// send sends the pending (or a new) packet and waits for its answer.
func (tr *telTracker) send() error {
	p := tr.packet()
	if _, err := tr.c.Write(p); err != nil {
		return err
	}
	_ = tr.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var b [4]byte
	if _, err := io.ReadFull(tr.c, b[:]); err != nil {
		return err
	}
	if n := binary.BigEndian.Uint32(b[:]); n != 3 {
		return fmt.Errorf("answer %d, want 3", n)
	}
	base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).Add(time.Duration(tr.next-1) * 10 * time.Second)
	for j := range 3 {
		tr.acked = append(tr.acked, tr.imei+"/"+base.Add(time.Duration(j)*time.Second).Format("2006-01-02T15:04:05.000Z07:00"))
	}
	tr.pending = nil
	return nil
}

func (tr *telTracker) dial(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	tr.c = c
	if _, err := c.Write(teltonika.AppendIMEI(nil, tr.imei)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != 1 {
		return fmt.Errorf("handshake answered %d", b[0])
	}
	return nil
}

// The relay is killed with SIGKILL while Teltonika trackers stream; restarted on the same data
// directory, the trackers reconnect and resend what was not answered. No answered record is lost.
func TestTeltonikaCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	sink := newTelSink(t)
	dir := t.TempDir()
	tel := relaytest.FreeAddr(t)
	path := writeCrashConfig(t, dir, fmt.Sprintf(`  native:
    tcp: ""
    udp: ""
  teltonika:
    tcp: %s
`, tel), fmt.Sprintf(`    url: %s/ingest
    batch:
      linger: 5ms
`, sink.srv.URL))
	proc := startProcess(t, path, tel)

	const trackers = 10
	trs := make([]*telTracker, trackers)
	for i := range trs {
		trs[i] = &telTracker{imei: fmt.Sprintf("3563070424410%02d", i)}
		if err := trs[i].dial(tel); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { trs[i].c.Close() })
	}
	var wg sync.WaitGroup
	var answered atomic.Int64
	for _, tr := range trs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tr.send() == nil { // until the relay dies
				answered.Add(1)
			}
		}()
	}
	checkFor(t, 60*time.Second, 5*time.Millisecond, func() error {
		if n := answered.Load(); n < 300 {
			return fmt.Errorf("%d packets answered", n)
		}
		return nil
	})
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	wg.Wait()
	t.Logf("killed the relay with %d packets answered", answered.Load())

	startProcess(t, path, tel)
	for i, tr := range trs {
		tr.c.Close()
		if err := tr.dial(tel); err != nil {
			t.Fatalf("tracker %d reconnect: %v", i, err)
		}
		for range 3 { // the packet the kill left unanswered, if any, then new ones
			if err := tr.send(); err != nil {
				t.Fatalf("tracker %d after the restart: %v", i, err)
			}
		}
	}
	want := map[string]bool{}
	for _, tr := range trs {
		for _, k := range tr.acked {
			want[k] = true
		}
	}
	checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		recs, _ := sink.got()
		got := map[string]bool{}
		for _, r := range recs {
			got[fmt.Sprint(r["_imei"], "/", r["ts"])] = true
		}
		lost := 0
		for k := range want {
			if !got[k] {
				lost++
			}
		}
		if lost > 0 {
			return fmt.Errorf("%d of %d answered records not delivered", lost, len(want))
		}
		return nil
	})
	recs, _ := sink.got()
	t.Logf("after kill -9: %d answered records, 0 lost, %d deliveries in all (at least once)", len(want), len(recs))
}

// closedByRelay checks that the relay closes c without writing anything.
func closedByRelay(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 16)
	n, err := c.Read(b)
	if err == nil {
		t.Fatalf("relay wrote % x, want the connection closed", b[:n])
	}
	if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
}

// Hostile input: a handshake that is not an IMEI, a frame whose preamble is wrong or whose length
// is over 64KiB (refused from its header, before the data), no handshake within hello_timeout, and
// a connection over max_connections (shared with the native listener) are all closed; a packet
// whose record counts disagree is answered 0 and the connection goes on.
func TestTeltonikaHostile(t *testing.T) {
	sink := newTelSink(t)
	cfg := telConfig(t, sink)
	cfg.Devices.HelloTimeout = config.Duration(300 * time.Millisecond)
	cfg.Devices.MaxConnections = 3
	r := startRelay(t, cfg)
	addr := r.TeltonikaTCPAddr().String()

	c := rawConn(t, addr)
	if _, err := c.Write([]byte{0, 15, 'n', 'o', 't', ' ', 'a', 'n', ' ', 'I', 'M', 'E', 'I', '!', '!', '!', '!'}); err != nil {
		t.Fatal(err)
	}
	closedByRelay(t, c)

	c, _ = telDial(t, addr, telIMEI)
	if _, err := c.Write([]byte{0, 0, 0, 1, 0, 0, 0, 10}); err != nil { // preamble 00000001
		t.Fatal(err)
	}
	closedByRelay(t, c)

	c, _ = telDial(t, addr, telIMEI)
	if _, err := c.Write([]byte{0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF}); err != nil { // 2 GiB of data announced
		t.Fatal(err)
	}
	closedByRelay(t, c)

	c, _ = telDial(t, addr, telIMEI)
	counts := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(time.Now(), 2))
	counts[9] = 3 // the first record count; the CRC does not cover the header, it does this byte
	if _, err := c.Write(counts); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c); n != 0 {
		t.Fatalf("answer to bad counts = %d, want 0", n)
	}
	if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(time.Now(), 2))); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c); n != 2 {
		t.Fatalf("answer after a bad packet = %d, want 2", n)
	}

	silent := rawConn(t, addr) // no handshake: closed after hello_timeout
	closedByRelay(t, silent)

	// c holds one connection; two native ones fill max_connections, a third Teltonika one is
	// closed on accept.
	rawConn(t, r.DeviceTCPAddr().String())
	rawConn(t, r.DeviceTCPAddr().String())
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := metric(t, r, "fleetrelay_device_connections"); n != 3 {
			return fmt.Errorf("%v connections", n)
		}
		return nil
	})
	closedByRelay(t, rawConn(t, addr))
	st := r.TeltonikaStats()
	if st.Net.Framing != 3 || st.Net.BadBy["count"]+st.Net.BadBy["crc"] != 1 {
		t.Errorf("stats %+v, want 3 framing errors and 1 bad packet", st.Net)
	}
}

// devices.auth token: a tracker cannot present a token, so a known IMEI is admitted only while
// no token is set for it.
func TestTeltonikaAuthToken(t *testing.T) {
	sink := newTelSink(t)
	cfg := telConfig(t, sink)
	cfg.Devices.Auth = config.AuthToken
	const withToken = "356307042441077"
	cfg.Fleet = append(cfg.Fleet, config.Device{ID: telIMEI}, config.Device{ID: withToken, Token: config.SecretValue("s3cret-token-of-the-device")})
	r := startRelay(t, cfg)
	if _, ans := telDial(t, r.TeltonikaTCPAddr().String(), withToken); ans != 0 {
		t.Fatalf("IMEI with a token answered %d, want 0", ans)
	}
	c, ans := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI)
	if ans != 1 {
		t.Fatalf("IMEI without a token answered %d, want 1", ans)
	}
	if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(time.Now(), 1))); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c); n != 1 {
		t.Fatalf("answer = %d, want 1", n)
	}
}

// Over UDP in ack mode delivery, with devices.auth known: a datagram of an unknown IMEI is not
// answered; a known one's answer waits until the route took its records.
func TestTeltonikaUDPAckDelivery(t *testing.T) {
	sink := newTelSink(t)
	sink.setStatus(http.StatusServiceUnavailable)
	cfg := telConfig(t, sink)
	cfg.Devices.Ack = config.AckDelivery
	cfg.Devices.Auth = config.AuthKnown
	cfg.Fleet = append(cfg.Fleet, config.Device{ID: telIMEI})
	r := startRelay(t, cfg)
	c, err := net.Dial("udp", r.TeltonikaUDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unknown := teltonika.UDPHeader{PacketID: 1, AVLPacketID: 1, IMEI: "356307042441099"}
	if _, err := c.Write(teltonika.AppendUDP(nil, unknown, teltonika.Codec8, telRecords(time.Now(), 1))); err != nil {
		t.Fatal(err)
	}
	h := teltonika.UDPHeader{PacketID: 2, AVLPacketID: 2, IMEI: telIMEI}
	if _, err := c.Write(teltonika.AppendUDP(nil, h, teltonika.Codec16, telRecords(time.Now(), 2))); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, bodies := sink.got(); bodies < 2 {
			return fmt.Errorf("%d requests, want 2 refused", bodies)
		}
		return nil
	})
	noAnswer(t, c) // neither the unknown IMEI nor the undelivered records
	sink.setStatus(0)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer after delivery: %v", err)
	}
	if want := teltonika.AppendUDPAck(nil, h, 2); string(buf[:n]) != string(want) {
		t.Fatalf("answer % x, want % x", buf[:n], want)
	}
	recs, _ := sink.got()
	if len(recs) != 2 {
		t.Fatalf("%d records delivered, want 2", len(recs))
	}
	noAnswer(t, c) // the unknown IMEI's datagram stays unanswered
}

// A relay does not start on the Teltonika UDP or TCP port another relay serves (see
// TestUDPPortNotShared), and fails without leaving anything running.
func TestTeltonikaPortsNotShared(t *testing.T) {
	a := startRelay(t, telConfig(t, newTelSink(t)))
	for _, set := range []func(*config.Config){
		func(c *config.Config) { c.Devices.Teltonika.UDP = a.TeltonikaUDPAddr().String() },
		func(c *config.Config) { c.Devices.Teltonika.TCP = a.TeltonikaTCPAddr().String() },
	} {
		cfg := telConfig(t, newTelSink(t))
		set(cfg)
		b, err := relaytest.Open(cfg, relaytest.Logger(t))
		if err == nil {
			_ = relaytest.Shutdown(b)
			t.Fatalf("a second relay started on a Teltonika port of a running one (%s, %s)", cfg.Devices.Teltonika.TCP, cfg.Devices.Teltonika.UDP)
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("a second relay on a Teltonika port of a running one: %v, want EADDRINUSE", err)
		}
	}
	// The first one still answers.
	if _, ans := telDial(t, a.TeltonikaTCPAddr().String(), telIMEI); ans != 1 {
		t.Fatalf("handshake answered %d", ans)
	}
}
