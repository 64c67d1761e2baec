package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// ndjsonConfig is testConfig with the NDJSON listener on loopback port 0.
func ndjsonConfig(t testing.TB, sink *loadgen.Sink) *config.Config {
	cfg := testConfig(t, sink)
	cfg.Devices.NDJSON.TCP = "127.0.0.1:0"
	return cfg
}

func dialNDJSON(t testing.TB, r *relay.Relay) *loadgen.NDJSONClient {
	t.Helper()
	c, err := loadgen.DialNDJSON(r.DeviceNDJSONAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// waitUnique waits until the sink holds n distinct messages.
func waitUnique(t testing.TB, sink *loadgen.Sink, n int) {
	t.Helper()
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if got := sink.Stats().Unique; got != n {
			return fmt.Errorf("sink has %d of %d messages", got, n)
		}
		return nil
	})
}

// checkLines checks what the sink received for one device against the lines it sent, in order:
// each batch of lines is one seq, seqs run 1, 2, 3… with no gap, index is the line's position in
// its batch, and data is the line byte for byte.
func checkLines(t testing.TB, sink *loadgen.Sink, device string, imei bool, want [][]byte) {
	t.Helper()
	var got []loadgen.Received
	for _, m := range sink.Messages() {
		if m.Serial == device || m.IMEI == device {
			got = append(got, m)
		}
	}
	slices.SortFunc(got, func(a, b loadgen.Received) int {
		if a.Seq != b.Seq {
			return int(a.Seq) - int(b.Seq)
		}
		return a.Index - b.Index
	})
	if len(got) != len(want) {
		t.Fatalf("%s: sink has %d messages, want %d", device, len(got), len(want))
	}
	var seq uint64
	next := 0
	for i, m := range got {
		if m.Seq != seq {
			if m.Seq != seq+1 {
				t.Fatalf("%s: seq %d follows seq %d", device, m.Seq, seq)
			}
			seq, next = m.Seq, 0
		}
		if m.Index != next {
			t.Fatalf("%s seq %d: index %d where %d was due", device, m.Seq, m.Index, next)
		}
		next++
		if (imei && (m.IMEI != device || m.Serial != "")) || (!imei && (m.Serial != device || m.IMEI != "")) {
			t.Fatalf("%s: message has serial %q, imei %q", device, m.Serial, m.IMEI)
		}
		if !bytes.Equal(m.Data, want[i]) {
			t.Fatalf("%s message %d: data %s, want %s", device, i, m.Data, want[i])
		}
	}
}

// metric reads one sample from /metrics (0 if absent).
func metric(t testing.TB, r *relay.Relay, name string) float64 {
	t.Helper()
	f, err := metricValue(t, r.AdminAddr().String(), name)
	if err != nil && !errors.Is(err, errAbsent) {
		t.Fatalf("metric %s: %v", name, err)
	}
	return f
}

// waitMetric waits until the series name is exposed with the value want.
func waitMetric(t testing.TB, r *relay.Relay, name string, want float64) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got, err := metricValue(t, r.AdminAddr().String(), name); err != nil || got != want {
			return fmt.Errorf("%s = %v (%v), want %v", name, got, err, want)
		}
		return nil
	})
}

// waitClosed reads c until the relay closes it.
func waitClosed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf [64]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			t.Fatalf("the relay sent %q on an NDJSON connection", buf[:n])
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open")
		}
		if err != nil {
			return // io.EOF or a reset: closed either way
		}
	}
}

// 20 gateways' worth of identities over 3 connections, lines of different identities mixed in
// each write: every line arrives once, in order, numbered per identity.
func TestNDJSON(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, ndjsonConfig(t, sink))
	const conns, ids, per = 3, 20, 50
	want := map[string][][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := 0; c < conns; c++ {
		cl := dialNDJSON(t, r)
		var lines [][]byte // identity i goes over connection i%conns, so its order is defined
		for n := 0; n < per; n++ {
			for i := c; i < ids; i += conns {
				id := fmt.Sprintf("GW%02d", i)
				line := []byte(fmt.Sprintf(`{"serial":%q,"n":%d, "t" : 21.5,"pos":{"lat":52.52,"serial":"not me"},"tags":["a","b"]}`, id, n))
				if n%10 == 3 {
					line = []byte(fmt.Sprintf(`{"n":%d,"serial":%q}`, n, id)) // identity last
				}
				want[id] = append(want[id], line)
				lines = append(lines, line)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; len(lines) > 0; k++ { // writes of 1 to 17 lines
				n := min(len(lines), 1+(k*7)%17)
				if err := cl.Send(lines[:n]...); err != nil {
					errs <- err
					return
				}
				lines = lines[n:]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitUnique(t, sink, ids*per)
	for id, lines := range want {
		checkLines(t, sink, id, false, lines)
	}
	if st := sink.Stats(); st.Dups != 0 || st.Reordered != 0 || st.Messages != ids*per {
		t.Errorf("sink stats %+v: want no duplicates, no reordering", st)
	}
	waitMetric(t, r, "fleetrelay_ndjson_lines_total", ids*per)
	if n := metric(t, r, `fleetrelay_device_connections`); n != conns {
		t.Errorf("fleetrelay_device_connections = %v, want %d", n, conns)
	}
}

// Invalid lines are dropped and counted; the valid lines around them arrive, and the connection
// stays open.
func TestNDJSONMalformed(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, ndjsonConfig(t, sink))
	c := dialNDJSON(t, r)
	good := func(n int) []byte { return []byte(fmt.Sprintf(`{"serial":"BAD1","n":%d}`, n)) }
	lines := [][]byte{
		good(0),
		[]byte(`not json`),               // malformed
		[]byte(`{"serial":"BAD1","n":1`), // malformed: truncated
		[]byte(`[{"serial":"BAD1"}]`),    // malformed: an array
		good(1),
		[]byte(`{"n":2}`),                   // identity: missing
		[]byte(`{"serial":{"id":"BAD1"}}`),  // identity: an object
		[]byte(`{"serial":""}`),             // identity: empty
		[]byte(`{"pos":{"serial":"BAD1"}}`), // identity: only nested
		[]byte(``),                          // blank: ignored
		[]byte("   \t"),                     // blank: ignored
		good(2),
	}
	if err := c.Send(lines...); err != nil {
		t.Fatal(err)
	}
	if err := c.SendRaw([]byte("\r\n\n{oops}\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(good(3)); err != nil { // still open
		t.Fatal(err)
	}
	waitUnique(t, sink, 4)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(sink.Messages()); n != 4 {
			return fmt.Errorf("sink has %d messages", n)
		}
		return nil
	})
	var data [][]byte
	for _, m := range sink.Messages() {
		data = append(data, m.Data)
	}
	slices.SortFunc(data, bytes.Compare)
	for i, d := range data {
		if !bytes.Equal(d, good(i)) {
			t.Fatalf("message %d: data %s, want %s", i, d, good(i))
		}
	}
	waitMetric(t, r, `fleetrelay_ndjson_dropped_total{reason="malformed"}`, 4)
	waitMetric(t, r, `fleetrelay_ndjson_dropped_total{reason="identity"}`, 4)
	waitMetric(t, r, "fleetrelay_ndjson_lines_total", 4)
	for _, reason := range []string{"too_long", "shutdown", "store"} {
		if n := metric(t, r, `fleetrelay_ndjson_dropped_total{reason="`+reason+`"}`); n != 0 {
			t.Errorf("dropped{reason=%q} = %v, want 0", reason, n)
		}
	}
}

// A line longer than max_line closes the connection, decided before the line is complete; the
// lines before it are kept. A line of exactly max_line is fine.
func TestNDJSONLineTooLong(t *testing.T) {
	sink := startSink(t)
	cfg := ndjsonConfig(t, sink)
	cfg.Devices.NDJSON.MaxLine = 64
	r := startRelay(t, cfg)

	exact := []byte(`{"serial":"LONG","pad":"` + strings.Repeat("x", 64-26) + `"}`)
	if len(exact) != 64 {
		t.Fatalf("test line is %d bytes", len(exact))
	}
	c := rawConn(t, r.DeviceNDJSONAddr().String())
	// Two good lines (one of exactly max_line, with \r\n), then the start of a line that can
	// only be too long: max_line+2 bytes and no newline.
	stream := append(append([]byte(`{"serial":"LONG","n":1}`+"\n"), exact...), "\r\n"...)
	stream = append(stream, `{"serial":"LONG","pad":"`+strings.Repeat("y", 64)...)
	if _, err := c.Write(stream); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	waitUnique(t, sink, 2)
	checkLines(t, sink, "LONG", false, [][]byte{[]byte(`{"serial":"LONG","n":1}`), exact})
	waitMetric(t, r, `fleetrelay_ndjson_dropped_total{reason="too_long"}`, 1)
	waitMetric(t, r, `fleetrelay_device_connections`, 0)
}

// Lines split at every byte offset across two writes, and a stream written one byte at a time,
// arrive whole and in order.
func TestNDJSONSplitLines(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, ndjsonConfig(t, sink))
	stream := func(id string) ([]byte, [][]byte) {
		lines := [][]byte{
			[]byte(fmt.Sprintf(`{"serial":%q,"t":21.5}`, id)),
			[]byte(fmt.Sprintf(`{"a":[1,{"b":"}\n"}],"serial":%q}`, id)),
			[]byte(fmt.Sprintf(`{"serial":%q,"s":"\u00e9\r"}`, id)),
		}
		b := append(append([]byte(nil), lines[0]...), "\r\n\n"...)
		b = append(append(b, lines[1]...), '\n')
		b = append(append(b, lines[2]...), "\r\n"...)
		return b, lines
	}
	probe, _ := stream("SPLIT000")
	n := len(probe) + 1
	want := map[string][][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for s := 0; s < n; s++ {
		id := fmt.Sprintf("SPLIT%03d", s)
		b, lines := stream(id)
		want[id] = lines
		c := dialNDJSON(t, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.SendRaw(b[:s])
			time.Sleep(2 * time.Millisecond) // let the first part arrive alone
			errs <- c.SendRaw(b[s:])
		}()
	}
	b, lines := stream("BYTEWISE")
	want["BYTEWISE"] = lines
	c := dialNDJSON(t, r)
	for i := range b {
		if err := c.SendRaw(b[i : i+1]); err != nil {
			t.Fatal(err)
		}
		if i%8 == 0 {
			time.Sleep(time.Millisecond) // let some bytes arrive alone
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitUnique(t, sink, 3*(n+1))
	for id, lines := range want {
		checkLines(t, sink, id, false, lines)
	}
	if n := metric(t, r, `fleetrelay_ndjson_dropped_total{reason="malformed"}`); n != 0 {
		t.Errorf("%v lines dropped as malformed", n)
	}
}

// identity_field: imei puts the identity into the envelope's imei; numbers are identities too.
func TestNDJSONIdentityIMEI(t *testing.T) {
	sink := startSink(t)
	cfg := ndjsonConfig(t, sink)
	cfg.Devices.NDJSON.IdentityField = "imei"
	cfg.Routes[0].URL = sink.URL() + "/ingest/[IMEI]"
	r := startRelay(t, cfg)
	c := dialNDJSON(t, r)
	a := []byte(`{"imei":"356938035643809","serial":"ignored","t":1}`)
	b := []byte(`{"t":2,"imei":356938035643810}`)
	if err := c.Send(a, []byte(`{"imei":"12345","t":3}`), []byte(`{"serial":"SN","t":4}`), b); err != nil {
		t.Fatal(err)
	}
	waitUnique(t, sink, 2)
	checkLines(t, sink, "356938035643809", true, [][]byte{a})
	checkLines(t, sink, "356938035643810", true, [][]byte{b})
	for _, m := range sink.Messages() {
		if m.Path != "/ingest/"+m.IMEI {
			t.Errorf("path %q for imei %s", m.Path, m.IMEI)
		}
	}
	waitMetric(t, r, `fleetrelay_ndjson_dropped_total{reason="identity"}`, 2)
}

// An identity that also speaks the native protocol keeps one seq counter: NDJSON lines continue
// after the native frames, and a native reconnect learns of them in WELCOME's lastSeq.
func TestNDJSONAndNativeShareSeqs(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, ndjsonConfig(t, sink))
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "MIX"}, 1)
	for i := 0; i < 3; i++ {
		if _, err := d.Send(record("MIX", uint64(i+1), 0)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, 3); err != nil {
		t.Fatal(err)
	}
	d.Close()
	waitMetric(t, r, "fleetrelay_device_connections", 0) // else its lines would be refused (below)

	c := dialNDJSON(t, r)
	for i := 0; i < 5; i++ {
		if err := c.Send([]byte(fmt.Sprintf(`{"serial":"MIX","n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitUnique(t, sink, 8)
	var last uint64
	for _, m := range sink.Messages() {
		last = max(last, m.Seq)
		if m.Seq > 3 && !bytes.Contains(m.Data, []byte(`"n":`)) {
			t.Errorf("seq %d holds %s, want an NDJSON line", m.Seq, m.Data)
		}
	}
	if last < 4 || last > 8 {
		t.Fatalf("highest seq %d, want 4 to 8", last)
	}
	if st := sink.Stats(); st.Dups != 0 || st.Reordered != 0 {
		t.Errorf("sink stats %+v", st)
	}
	d2 := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "MIX"}, last+1)
	if w := d2.Welcome(); w.LastSeq != last {
		t.Errorf("WELCOME lastSeq = %d, want %d", w.LastSeq, last)
	}
}

// While an identity is connected natively, NDJSON lines for it are refused and counted: that
// device numbers its own frames, and the relay must not acknowledge one it never stored.
func TestNDJSONRefusedWhileNative(t *testing.T) {
	sink := startSink(t)
	r := startRelay(t, ndjsonConfig(t, sink))
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "BOTH"}, 1)
	c := dialNDJSON(t, r)
	if err := c.Send([]byte(`{"serial":"BOTH","via":"ndjson"}`), []byte(`{"serial":"OTHER","via":"ndjson"}`)); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, r, `fleetrelay_ndjson_dropped_total{reason="native"}`, 1)
	for i := 0; i < 3; i++ {
		if _, err := d.Send(record("BOTH", uint64(i+1), 0)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitUnique(t, sink, 4)
	for _, m := range sink.Messages() {
		if m.Serial == "BOTH" && bytes.Contains(m.Data, []byte("ndjson")) {
			t.Errorf("an NDJSON line for a natively connected identity was stored: %s", m.Data)
		}
	}
}

// NDJSON connections count towards devices.max_connections, with the native ones.
func TestNDJSONMaxConnections(t *testing.T) {
	cfg := ndjsonConfig(t, nil)
	cfg.Devices.MaxConnections = 2
	r := startRelay(t, cfg)
	connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "L1"}, 1)
	rawConn(t, r.DeviceNDJSONAddr().String())
	waitMetric(t, r, "fleetrelay_device_connections", 2)
	waitClosed(t, rawConn(t, r.DeviceNDJSONAddr().String()))
	waitMetric(t, r, "fleetrelay_device_refused_total", 1)
}

// An NDJSON connection silent for longer than devices.idle_timeout is closed.
func TestNDJSONIdleTimeout(t *testing.T) {
	cfg := ndjsonConfig(t, nil)
	cfg.Devices.IdleTimeout = config.Duration(300 * time.Millisecond)
	r := startRelay(t, cfg)
	waitClosed(t, rawConn(t, r.DeviceNDJSONAddr().String()))
}
