package relay_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// The shared harness (packages checkfor and relaytest) under the names these tests have always
// used.
var (
	checkFor   = checkfor.Check
	testLogger = relaytest.Logger
	startRelay = relaytest.Start
	startSink  = relaytest.StartSink
)

// testConfig is relaytest.Config delivering to sink, if not nil.
func testConfig(t testing.TB, sink *loadgen.Sink) *config.Config {
	if sink == nil {
		return relaytest.Config(t, "")
	}
	return relaytest.Config(t, sink.URL())
}

func connect(t testing.TB, addr string, h native.Hello, first uint64) *loadgen.Device {
	t.Helper()
	d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: addr, Hello: h}, first)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", h.Identity(), err)
	}
	t.Cleanup(d.Close)
	return d
}

func record(dev string, seq uint64, i int) []byte {
	return []byte(fmt.Sprintf(`{"dev":%q,"seq":%d,"i":%d,"temp":21.5,"ok":true}`, dev, seq, i))
}

// 50 TCP and 5 UDP devices through the real relay to a real HTTP endpoint: every acknowledged
// record arrives once, with the envelope filled in and [SERIAL] substituted.
func TestEndToEnd(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, testConfig(t, sink))
	tcpAddr, udpAddr := r.DeviceTCPAddr().String(), r.DeviceUDPAddr().String()

	const tcpDevices, udpDevices, frames = 50, 5, 40
	want := map[loadgen.MsgKey][]byte{}
	imeis := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, tcpDevices+udpDevices)
	for i := 0; i < tcpDevices; i++ {
		serial := fmt.Sprintf("SN%03d", i)
		imeis[serial] = fmt.Sprintf("35693803564%04d", i)
		d := connect(t, tcpAddr, native.Hello{Serial: serial, IMEI: imeis[serial], ICCID: "8901" + serial}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for f := 0; f < frames; f++ {
				seq := d.NextSeq()
				recs := [][]byte{record(serial, seq, 0)}
				if f%3 == 0 {
					recs = append(recs, record(serial, seq, 1), record(serial, seq, 2))
				}
				got, err := d.Send(recs...)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for j, rec := range recs {
					want[loadgen.MsgKey{Device: serial, Seq: got, Index: j}] = rec
				}
				mu.Unlock()
				last = got
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- d.WaitAcked(ctx, last)
		}()
	}
	for i := 0; i < udpDevices; i++ {
		id := fmt.Sprintf("UDP%02d", i)
		u, err := loadgen.DialUDP(udpAddr, id, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.Close)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := map[uint64][]byte{}
			for f := 0; f < frames; f++ {
				rec := record(id, uint64(f+1), 0)
				seq, err := u.Send(rec)
				if err != nil {
					errs <- err
					return
				}
				sent[seq] = rec
				mu.Lock()
				want[loadgen.MsgKey{Device: id, Seq: seq, Index: 0}] = rec
				mu.Unlock()
				if f%8 == 7 { // a UDP device paces itself and resends what was not acknowledged
					checkForUDP(u, seq, sent)
				}
			}
			checkForUDP(u, uint64(frames), sent)
			if acked, _ := u.Acked(); acked != frames {
				errs <- fmt.Errorf("udp %s acked %d of %d", id, acked, frames)
				return
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if st := sink.Stats(); st.Unique < len(want) {
			return fmt.Errorf("sink has %d of %d messages", st.Unique, len(want))
		}
		return nil
	})
	st := sink.Stats()
	if st.Dups != 0 || st.Reordered != 0 || st.Unique != len(want) {
		t.Errorf("sink stats = %+v, want %d unique, no dups, no reordering", st, len(want))
	}
	for _, m := range sink.Messages() {
		dev := m.Serial
		k := loadgen.MsgKey{Device: dev, Seq: m.Seq, Index: m.Index}
		rec, ok := want[k]
		if !ok {
			t.Fatalf("unexpected message %+v", m.Envelope)
		}
		if string(m.Data) != string(rec) {
			t.Errorf("data of %v = %s, want %s", k, m.Data, rec)
		}
		if m.Path != "/ingest/"+dev {
			t.Errorf("path of %v = %q, want /ingest/%s", k, m.Path, dev)
		}
		if wantID := fmt.Sprintf("%s-%d-%d", dev, m.Seq, m.Index); m.MsgID != wantID {
			t.Errorf("msgId = %q, want %q", m.MsgID, wantID)
		}
		if m.Attempt != 0 {
			t.Errorf("attempt of %v = %d, want 0", k, m.Attempt)
		}
		ts, err := time.Parse(time.RFC3339, m.ReceivedAt)
		if err != nil || time.Since(ts) > time.Hour || !strings.Contains(m.ReceivedAt, ".") || len(m.ReceivedAt) != len("2006-01-02T15:04:05.000Z") {
			t.Errorf("receivedAt = %q (%v), want RFC 3339 UTC with milliseconds", m.ReceivedAt, err)
		}
		wantIMEI, wantICCID := imeis[dev], "8901"+dev
		if strings.HasPrefix(dev, "UDP") {
			wantICCID = ""
		}
		if m.IMEI != wantIMEI || m.ICCID != wantICCID {
			t.Errorf("imei, iccid of %s = %q, %q, want %q, %q", dev, m.IMEI, m.ICCID, wantIMEI, wantICCID)
		}
	}
}

// checkForUDP waits for the device's ACK of seq, resending unacknowledged datagrams as a UDP
// device would.
func checkForUDP(u *loadgen.UDPDevice, seq uint64, sent map[uint64][]byte) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i := 0; i < 50; i++ {
			if acked, _ := u.Acked(); acked >= seq {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		acked, _ := u.Acked()
		for s := acked + 1; s <= seq; s++ {
			_ = u.Resend(s, sent[s])
		}
	}
}

// A resent frame the relay already stored is acknowledged again and not forwarded again.
func TestResendIsAckedNotForwarded(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, testConfig(t, sink))
	addr := r.DeviceTCPAddr().String()
	d := connect(t, addr, native.Hello{Serial: "RS1"}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := d.Send(record("RS1", uint64(i+1), 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.WaitAcked(ctx, 3); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 3 {
			return fmt.Errorf("sink has %d messages", n)
		}
		return nil
	})
	d.Close()

	// A device that lost its state resends seq 2 on a new connection: WELCOME says 3 is stored,
	// and the resend is acknowledged without being forwarded.
	again := connect(t, addr, native.Hello{Serial: "RS1"}, 2)
	if w := again.Welcome(); w.LastSeq != 3 || w.Ack != "persist" {
		t.Fatalf("WELCOME = %+v, want lastSeq 3, ack persist", w)
	}
	if err := again.SendRaw(native.AppendData(nil, 2, record("RS1", 2, 0))); err != nil {
		t.Fatal(err)
	}
	if err := again.WaitAcked(ctx, 3); err != nil {
		t.Fatalf("resend not acknowledged: %v", err)
	}
	seq, err := again.Send(record("RS1", 4, 0)) // the device's counter is at 2: seq 2 is a resend too
	if err != nil || seq != 2 {
		t.Fatalf("Send = %d, %v", seq, err)
	}
	if err := again.SendRaw(native.AppendData(nil, 4, record("RS1", 4, 0))); err != nil {
		t.Fatal(err)
	}
	if err := again.WaitAcked(ctx, 4); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Count(loadgen.MsgKey{Device: "RS1", Seq: 4}); n != 1 {
			return fmt.Errorf("seq 4 delivered %d times", n)
		}
		return nil
	})
	for s := uint64(1); s <= 3; s++ {
		if n := sink.Count(loadgen.MsgKey{Device: "RS1", Seq: s}); n != 1 {
			t.Errorf("seq %d delivered %d times, want 1", s, n)
		}
	}
}

// Ack mode delivery: while the endpoint answers 503 no ACK reaches the device; once it answers
// 200 the ACK comes.
func TestAckModeDelivery(t *testing.T) {
	sink := startSink(t)
	var mu sync.Mutex
	status := 503
	sink.SetStatus(func(string, []byte) int { mu.Lock(); defer mu.Unlock(); return status })
	cfg := testConfig(t, sink)
	cfg.Devices.Ack = config.AckDelivery
	r := startRelay(t, cfg)
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "DL1"}, 1)
	if w := d.Welcome(); w.Ack != "delivery" {
		t.Fatalf("WELCOME ack = %q, want delivery", w.Ack)
	}
	if _, err := d.Send(record("DL1", 1, 0)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Refused; n < 3 {
			return fmt.Errorf("%d refused attempts so far", n)
		}
		return nil
	})
	if a := d.Acked(); a != 0 {
		t.Fatalf("device got ACK %d while the endpoint refused the message", a)
	}
	mu.Lock()
	status = 200
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, 1); err != nil {
		t.Fatalf("no ACK after the endpoint accepted: %v", err)
	}
	if n := sink.Count(loadgen.MsgKey{Device: "DL1", Seq: 1}); n != 1 {
		t.Errorf("delivered %d times, want 1", n)
	}
	var attempts []int
	for _, m := range sink.Messages() {
		attempts = append(attempts, m.Attempt)
	}
	if len(attempts) != 1 || attempts[0] < 3 {
		t.Errorf("attempts = %v, want one message with attempt ≥ 3", attempts)
	}
}

func expectError(t *testing.T, d *loadgen.Device, code uint16) {
	t.Helper()
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		err := d.Err()
		if e, ok := err.(*loadgen.ErrRelay); ok {
			if e.Code != code {
				t.Fatalf("ERROR %d (%s), want %d", e.Code, e.Msg, code)
			}
			return nil
		}
		return fmt.Errorf("no ERROR yet (err %v)", err)
	})
}

func TestBadInput(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, testConfig(t, sink))
	addr := r.DeviceTCPAddr().String()

	t.Run("oversized length", func(t *testing.T) {
		d := connect(t, addr, native.Hello{Serial: "BIG"}, 1)
		// 2 GiB announced: refused from the header alone, nothing allocated or awaited.
		if err := d.SendRaw([]byte{0x7f, 0xff, 0xff, 0xff, native.TypeData}); err != nil {
			t.Fatal(err)
		}
		expectError(t, d, native.CodeTooLarge)
	})
	t.Run("non-object record", func(t *testing.T) {
		d := connect(t, addr, native.Hello{Serial: "BAD"}, 1)
		if err := d.SendRaw(native.AppendData(nil, 1, []byte(`{"ok":1}`), []byte(`[1,2,3]`))); err != nil {
			t.Fatal(err)
		}
		expectError(t, d, native.CodeMalformed)
		// Nothing of the frame was stored: a new connection hears lastSeq 0.
		again := connect(t, addr, native.Hello{Serial: "BAD"}, 1)
		if w := again.Welcome(); w.LastSeq != 0 {
			t.Errorf("lastSeq after a malformed frame = %d, want 0", w.LastSeq)
		}
	})
	// A raw connection that sends bytes gets ERROR code (after WELCOME, if its HELLO was good).
	rawError := func(t *testing.T, send []byte, code uint16) {
		c := rawConn(t, addr)
		if _, err := c.Write(send); err != nil {
			t.Fatal(err)
		}
		typ, body := readOne(t, c)
		if typ == native.TypeWelcome {
			typ, body = readOne(t, c)
		}
		got, _, _ := native.ParseError(body)
		if typ != native.TypeError || got != code {
			t.Errorf("got frame %#x code %d, want ERROR %d", typ, got, code)
		}
	}
	t.Run("data before hello", func(t *testing.T) {
		rawError(t, native.AppendData(nil, 1, []byte(`{"a":1}`)), native.CodeUnauthorized)
	})
	t.Run("zero length", func(t *testing.T) {
		rawError(t, []byte{0, 0, 0, 0}, native.CodeMalformed)
	})
	t.Run("second hello", func(t *testing.T) {
		h := native.AppendHello(nil, &native.Hello{Serial: "H2"})
		rawError(t, append(h, h...), native.CodeMalformed)
	})
	t.Run("malformed udp", func(t *testing.T) {
		testMalformedUDP(t, r.DeviceUDPAddr().String())
	})
	if n := sink.Stats().Messages; n != 0 {
		t.Errorf("sink received %d messages from bad input", n)
	}
}

func TestHelloTimeout(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.HelloTimeout = config.Duration(200 * time.Millisecond)
	r := startRelay(t, cfg)
	c := rawConn(t, r.DeviceTCPAddr().String())
	typ, body := readOne(t, c)
	code, _, _ := native.ParseError(body)
	if typ != native.TypeError || code != native.CodeHelloTimeout {
		t.Errorf("got frame %#x code %d, want ERROR 408", typ, code)
	}
}

func TestPing(t *testing.T) {
	r := startRelay(t, testConfig(t, nil))
	c := rawConn(t, r.DeviceTCPAddr().String())
	var b []byte
	b = native.AppendHello(b, &native.Hello{Serial: "P1"})
	b = native.AppendFrame(b, native.TypePing, []byte("abc"))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	seen := map[byte]string{}
	for len(seen) < 2 {
		typ, body := readOne(t, c)
		seen[typ] = string(body)
	}
	if seen[native.TypePong] != "abc" {
		t.Errorf("PONG body = %q, want abc (frames %v)", seen[native.TypePong], seen)
	}
	if _, ok := seen[native.TypeWelcome]; !ok {
		t.Errorf("no WELCOME (frames %v)", seen)
	}
}

// A second connection with the same identity replaces the first.
func TestReplaceConnection(t *testing.T) {
	r := startRelay(t, testConfig(t, nil))
	addr := r.DeviceTCPAddr().String()
	first := connect(t, addr, native.Hello{Serial: "DUP"}, 1)
	second := connect(t, addr, native.Hello{Serial: "DUP"}, 1)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if first.Err() == nil {
			return fmt.Errorf("first connection still open")
		}
		return nil
	})
	if _, err := second.Send([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := second.WaitAcked(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

// Connections beyond devices.max_connections are refused with ERROR 503.
func TestMaxConnections(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.MaxConnections = 2
	r := startRelay(t, cfg)
	addr := r.DeviceTCPAddr().String()
	connect(t, addr, native.Hello{Serial: "C1"}, 1)
	connect(t, addr, native.Hello{Serial: "C2"}, 1)
	c := rawConn(t, addr)
	typ, body := readOne(t, c)
	code, _, _ := native.ParseError(body)
	if typ != native.TypeError || code != native.CodeUnavailable {
		t.Errorf("third connection got frame %#x code %d, want ERROR 503", typ, code)
	}
}

// A connection silent for longer than devices.idle_timeout is closed.
func TestIdleTimeout(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.IdleTimeout = config.Duration(300 * time.Millisecond)
	r := startRelay(t, cfg)
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "IDLE"}, 1)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if d.Err() == nil {
			return fmt.Errorf("idle connection still open")
		}
		return nil
	})
}

// /healthz and /metrics answer on the admin listener; the metrics count what flowed.
func TestAdminEndpoints(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, testConfig(t, sink))
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "M1"}, 1)
	for i := 0; i < 5; i++ {
		if _, err := d.Send(record("M1", uint64(i+1), 0)); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 5 {
			return fmt.Errorf("sink has %d of 5", n)
		}
		return nil
	})
	base := "http://" + r.AdminAddr().String()
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, body := httpGet(t, base+"/metrics")
		for _, want := range []string{
			`fleetrelay_route_delivered_messages_total{route="test"} 5`,
			`fleetrelay_device_connections 1`,
			`fleetrelay_device_frames_total 6`, // HELLO + 5 DATA
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
}

// One destination takes up to the route's concurrency of batches at once, and still no device's
// messages are reordered.
func TestConcurrentBatchesKeepDeviceOrder(t *testing.T) {
	sink := startSink(t)
	sink.SetStatus(func(string, []byte) int { time.Sleep(20 * time.Millisecond); return 200 })
	cfg := testConfig(t, sink)
	cfg.Routes[0].URL = sink.URL() + "/ingest"
	cfg.Routes[0].Concurrency = 4
	cfg.Routes[0].Batch.MaxMessages = 10
	r := startRelay(t, cfg)
	const devices, frames = 20, 30
	var wg sync.WaitGroup
	for i := 0; i < devices; i++ {
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: fmt.Sprintf("O%02d", i)}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := 0; f < frames; f++ {
				if _, err := d.Send([]byte(`{"n":1}`)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	checkFor(t, 60*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != devices*frames {
			return fmt.Errorf("sink has %d of %d", n, devices*frames)
		}
		return nil
	})
	st := sink.Stats()
	if st.Reordered != 0 || st.Dups != 0 {
		t.Errorf("sink stats %+v: want no reordering, no duplicates", st)
	}
	if st.MaxInFlight < 2 || st.MaxInFlight > 4 {
		t.Errorf("max requests in flight = %d, want 2..4 (concurrency 4)", st.MaxInFlight)
	}
}

// Batches respect max_messages and max_bytes; with a long linger, a full batch goes at once.
func TestBatchLimits(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Routes[0].URL = sink.URL() + "/ingest"
	cfg.Routes[0].Concurrency = 1
	cfg.Routes[0].Batch.MaxMessages = 7
	cfg.Routes[0].Batch.MaxBytes = 2 * config.KiB
	cfg.Routes[0].Batch.Linger = config.Duration(time.Hour) // only full batches go out
	r := startRelay(t, cfg)
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "BL"}, 1)
	small := []byte(`{"v":1}`)
	big := []byte(`{"pad":"` + strings.Repeat("x", 700) + `"}`)
	// Two full batches by count, in one frame: stored in one commit, so all 14 are queued before
	// the first batch returns. (Sent as 14 frames, records that reach the route while the first
	// batch is in flight go out as soon as it returns, full or not: the lane has a backlog.)
	smalls := make([][]byte, 14)
	for i := range smalls {
		smalls[i] = small
	}
	if _, err := d.Send(smalls...); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 14 {
			return fmt.Errorf("sink has %d of 14", n)
		}
		return nil
	})
	for i := 0; i < 6; i++ { // ≈ 850 bytes each as envelopes: two per 2 KiB batch
		if _, err := d.Send(big); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n < 18 {
			return fmt.Errorf("sink has %d of 20", n)
		}
		return nil
	})
	for _, b := range sink.Batches() {
		if b.Messages > 7 || b.Bytes > 2048 {
			t.Errorf("batch of %d messages, %d bytes exceeds max_messages 7, max_bytes 2048", b.Messages, b.Bytes)
		}
	}
	if b := sink.Batches(); len(b) < 2 || b[0].Messages != 7 || b[1].Messages != 7 {
		t.Errorf("first batches = %+v, want two of 7", b)
	}
}

// downSink starts a sink that answers 503 until up is called, then 200.
func downSink(t testing.TB) (sink *loadgen.Sink, up func()) {
	sink = startSink(t)
	var down atomic.Bool
	down.Store(true)
	sink.SetStatus(func(string, []byte) int {
		if down.Load() {
			return 503
		}
		return 200
	})
	return sink, func() { down.Store(false) }
}

// With a memory budget of 50 messages per route, a backlog of 600 waits in the store and is read
// back in order once the endpoint recovers.
func TestBacklogPagesFromStore(t *testing.T) {
	sink, up := downSink(t)
	cfg := testConfig(t, sink)
	cfg.Delivery.MaxQueuedMessages = 50
	cfg.Routes[0].Batch.MaxMessages = 20
	r := startRelay(t, cfg)
	const devices, frames = 3, 200
	for i := 0; i < devices; i++ {
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: fmt.Sprintf("P%d", i)}, 1)
		for f := 0; f < frames; f++ {
			if _, err := d.Send([]byte(`{"n":1}`)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := d.WaitAcked(ctx, frames); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Refused; n < 3 {
			return fmt.Errorf("%d refused so far", n)
		}
		return nil
	})
	// Memory holds the budget plus at most one commit's worth (a device's window, 64 frames).
	_, metrics := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	var queued int
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, `fleetrelay_route_queued_messages{route="test"}`) {
			fmt.Sscan(strings.Fields(line)[1], &queued)
		}
	}
	if queued < 50 || queued > 50+64 {
		t.Errorf("route holds %d messages in memory, want 50..114 (budget 50)", queued)
	}
	// The store's delivery state of the rest is on disk too: resident are the budget (50), the
	// segments of the route's queue (up to 114 records) and of the newest commits (up to the
	// three devices' windows, 192): at most 356 of the 600.
	const maxResident = 50 + 114 + 3*64
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		_, metrics := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
		var resident, cold int
		for _, line := range strings.Split(metrics, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "fleetrelay_store_resident_messages" {
				fmt.Sscan(f[1], &resident)
			} else if len(f) == 2 && f[0] == "fleetrelay_store_cold_messages" {
				fmt.Sscan(f[1], &cold)
			}
		}
		if resident > maxResident || resident+cold != devices*frames {
			return fmt.Errorf("store: %d resident + %d cold messages, want at most %d resident, %d in all", resident, cold, maxResident, devices*frames)
		}
		return nil
	})
	up()
	checkFor(t, 60*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != devices*frames {
			return fmt.Errorf("sink has %d of %d", n, devices*frames)
		}
		return nil
	})
	if st := sink.Stats(); st.Dups != 0 || st.Reordered != 0 {
		t.Errorf("sink stats %+v: want no duplicates, no reordering", st)
	}
}

// store.sync: every group commit is fsynced before its frames are acknowledged.
func TestSyncStore(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Store.Sync = true
	r := startRelay(t, cfg)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: fmt.Sprintf("S%d", i)}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := 0; f < 50; f++ {
				if _, err := d.Send([]byte(`{"n":1}`)); err != nil {
					t.Error(err)
					return
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := d.WaitAcked(ctx, 50); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 250 {
			return fmt.Errorf("sink has %d of 250", n)
		}
		return nil
	})
}

// Frames split at every byte, and many frames coalesced in one write, decode the same over a real
// socket.
func TestSplitAndCoalescedFrames(t *testing.T) {
	r := startRelay(t, testConfig(t, nil))
	c := rawConn(t, r.DeviceTCPAddr().String())
	var b []byte
	b = native.AppendHello(b, &native.Hello{Serial: "SPLIT"})
	for seq := uint64(1); seq <= 3; seq++ {
		b = native.AppendData(b, seq, []byte(`{"t":21.5}`), []byte(`{"u":[1,2,{"v":null}]}`))
	}
	for i := range b { // one byte per write
		if _, err := c.Write(b[i : i+1]); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 {
			time.Sleep(time.Millisecond) // let some bytes arrive alone
		}
	}
	want := uint64(3)
	waitAck := func() {
		t.Helper()
		for {
			typ, body := readOne(t, c)
			if typ == native.TypeError {
				code, msg, _ := native.ParseError(body)
				t.Fatalf("ERROR %d %s", code, msg)
			}
			if typ == native.TypeAck {
				if seq, _ := native.ParseAck(body); seq == want {
					return
				}
			}
		}
	}
	waitAck()
	b = b[:0]
	for seq := uint64(4); seq <= 500; seq++ { // one write of ~500 frames
		b = native.AppendData(b, seq, []byte(`{"t":1}`))
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	want = 500
	waitAck()
}

// A batch waiting to retry against a failing endpoint does not hold shutdown for the whole
// delivery.shutdown_grace: its messages stay stored and go out after the restart.
func TestShutdownAbandonsRetryWait(t *testing.T) {
	sink, up := downSink(t)
	cfg := testConfig(t, sink)
	cfg.Delivery.ShutdownGrace = config.Duration(time.Minute)
	cfg.Delivery.Retry.InitialBackoff = config.Duration(5 * time.Second)
	cfg.Delivery.Retry.MaxBackoff = config.Duration(10 * time.Second)
	r := startRelay(t, cfg) // shut down below, timed
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "W1"}, 1)
	for range 20 {
		if _, err := d.Send([]byte(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, 20); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Refused; n < 1 {
			return fmt.Errorf("%d refused so far", n)
		}
		return nil
	})
	// Without abandoning the wait this takes the whole grace (here cut to 30 s by the context);
	// with it, a few milliseconds.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	start := time.Now()
	if err := r.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown = %v after %v", err, time.Since(start))
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Shutdown took %v with a batch waiting to retry, want far less than the grace (1m)", took)
	}
	t.Logf("shutdown with a batch waiting to retry took %v (grace 1m)", time.Since(start).Round(time.Millisecond))
	d.Close()
	up()
	startRelay(t, cfg)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 20 {
			return fmt.Errorf("sink has %d of 20 after the restart", n)
		}
		return nil
	})
}
