package loadgen_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// sinkClient posts to one sink over real HTTP.
type sinkClient struct {
	t    testing.TB
	sink *loadgen.Sink
	c    *http.Client
}

// newSink starts a sink on port 0 and checks, once the test is done and the sink closed, that
// it left no goroutine behind.
func newSink(t testing.TB, opts loadgen.SinkOptions) *sinkClient {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	s, err := loadgen.StartSinkWith(opts)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if tt, ok := t.(*testing.T); ok && !t.Failed() {
			// fasthttp's process-wide Date-header ticker and its worker pool's cleaner stop on
			// their own schedule, not with the server.
			goleak.VerifyNone(tt, ignore,
				goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
				goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
		}
	})
	return &sinkClient{t: t, sink: s, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (c *sinkClient) do(method, path string, body []byte) answer {
	c.t.Helper()
	req, err := http.NewRequest(method, c.sink.URL()+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func (c *sinkClient) post(path string, body []byte) answer { return c.do(http.MethodPost, path, body) }

func (c *sinkClient) getJSON(path string, v any) {
	c.t.Helper()
	a := c.do(http.MethodGet, path, nil)
	if a.status != 200 {
		c.t.Fatalf("GET %s = %d %s", path, a.status, a.body)
	}
	if err := json.Unmarshal([]byte(a.body), v); err != nil {
		c.t.Fatalf("GET %s: %v in %s", path, err, a.body)
	}
}

// msg is one message to put in a batch.
type msg struct {
	dev    string
	seq    uint64
	index  int
	sentAt int64 // Unix µs; 0: none
}

// envelopes encodes msgs with the relay's encoder.
func envelopes(msgs ...msg) []byte {
	body := []byte{'['}
	for i, m := range msgs {
		if i > 0 {
			body = append(body, ',')
		}
		data := fmt.Appendf(nil, `{"t":%d}`, m.seq)
		if m.sentAt != 0 {
			data = fmt.Appendf(nil, `{"sentAt":%d,"t":%d}`, m.sentAt, m.seq)
		}
		bm := envelope.Message{Device: m.dev, Serial: m.dev, IMEI: "356938035643809", Seq: m.seq, Index: m.index,
			ReceivedAt: time.Now().UnixMilli(), Data: data}
		body = envelope.Append(body, &bm, 0)
	}
	return append(body, ']')
}

func TestSinkAccounts(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{KeepMessages: true})
	now := time.Now().UnixMicro()
	batches := [][]msg{
		{{"A", 1, 0, now - 5000}, {"A", 1, 1, now - 5000}, {"B", 1, 0, 0}},
		{{"A", 2, 0, now - 5000}, {"B", 3, 0, 0}, {"B", 2, 0, 0}}, // B 2 after B 3: reordered
		{{"A", 1, 1, now - 5000}, {"C", 100, 70, now - 5000}},     // A 1 1 again: a duplicate
	}
	for _, b := range batches {
		if a := c.post("/ingest/x", envelopes(b...)); a.status != 200 {
			t.Fatalf("POST = %d %s", a.status, a.body)
		}
	}
	got := c.sink.Stats()
	want := loadgen.SinkStats{Requests: 3, Batches: 3, Bytes: got.Bytes, Messages: 8, Unique: 7, Dups: 1,
		Reordered: 1, Devices: 3, MaxInFlight: 1}
	if got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	for k, n := range map[loadgen.MsgKey]int{{"A", 1, 0}: 1, {"A", 1, 1}: 2, {"B", 2, 0}: 1, {"C", 100, 70}: 1,
		{"C", 100, 69}: 0, {"A", 3, 0}: 0, {"Z", 1, 0}: 0} {
		if got := c.sink.Count(k); got != n {
			t.Errorf("Count(%v) = %d, want %d", k, got, n)
		}
	}
	msgs := c.sink.Messages()
	if len(msgs) != 8 || msgs[0].Serial != "A" || msgs[0].MsgID != "A-1-0" || msgs[0].Path != "/ingest/x" ||
		string(msgs[7].Data) != fmt.Sprintf(`{"sentAt":%d,"t":100}`, now-5000) {
		t.Errorf("Messages = %+v", msgs)
	}
	if b := c.sink.Batches(); len(b) != 3 || b[1].Messages != 3 || b[0].Path != "/ingest/x" {
		t.Errorf("Batches = %+v", b)
	}

	var snap loadgen.SinkSnapshot
	c.getJSON("/stats", &snap)
	if snap.SinkStats != got {
		t.Errorf("GET /stats counters = %+v, want %+v", snap.SinkStats, got)
	}
	var sum int64
	for _, n := range snap.PerSecond {
		sum += n
	}
	if sum != 8 {
		t.Errorf("GET /stats perSecond = %v, want 8 messages in all", snap.PerSecond)
	}
	// 5 messages (a duplicate among them) carried a send time 5 ms before they were posted.
	if l := snap.LatencyUs; l.Count != 5 || l.Min < 5000 || l.P50 < l.Min || l.P90 < l.P50 || l.P99 < l.P90 ||
		l.P999 < l.P99 || l.Max < l.P999 {
		t.Errorf("GET /stats latencyUs = %+v, want 5 values ≥ 5000 µs in order", l)
	}
	if h := c.sink.LatencyHistogram(); h.TotalCount() != 5 {
		t.Errorf("LatencyHistogram count = %d, want 5", h.TotalCount())
	}
	var devs map[string]loadgen.DeviceStats
	c.getJSON("/stats/devices", &devs)
	wantDevs := map[string]loadgen.DeviceStats{
		"A": {Unique: 3, MaxSeq: 2, Dups: 1},
		"B": {Unique: 3, MaxSeq: 3, Reordered: 1},
		"C": {Unique: 1, MaxSeq: 100},
	}
	if fmt.Sprint(devs) != fmt.Sprint(wantDevs) {
		t.Errorf("GET /stats/devices = %+v, want %+v", devs, wantDevs)
	}

	if a := c.post("/reset", nil); a.status != 204 {
		t.Errorf("POST /reset = %d", a.status)
	}
	if st := c.sink.Stats(); st != (loadgen.SinkStats{}) || len(c.sink.Messages()) != 0 || c.sink.Count(loadgen.MsgKey{Device: "A", Seq: 1}) != 0 {
		t.Errorf("after reset: Stats = %+v", st)
	}
}

// Without KeepMessages the sink accounts the same and keeps no copies.
func TestSinkWithoutMessages(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{})
	c.post("/", envelopes(msg{"A", 1, 0, 0}, msg{"A", 2, 0, 0}))
	if st := c.sink.Stats(); st.Unique != 2 || len(c.sink.Messages()) != 0 || len(c.sink.Batches()) != 0 {
		t.Errorf("Stats = %+v, %d messages, %d batches kept", st, len(c.sink.Messages()), len(c.sink.Batches()))
	}
}

// A body that is not a batch is answered 400 and nothing of it is accounted.
func TestSinkBadBatch(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{KeepMessages: true})
	good := string(envelopes(msg{"A", 1, 0, 0}))
	for _, body := range []string{"", "{}", good[:len(good)-1], strings.Replace(good, `"seq"`, `"sequence"`, 1),
		strings.Replace(good, `]`, `,{"serial":"A","index":0,"data":{}}]`, 1)} {
		if a := c.post("/", []byte(body)); a.status != 400 || !strings.Contains(a.body, "bad batch") {
			t.Errorf("POST %q = %d %q, want 400 bad batch", body, a.status, a.body)
		}
	}
	if a := c.do(http.MethodGet, "/ingest", nil); a.status != 405 {
		t.Errorf("GET /ingest = %d, want 405", a.status)
	}
	if st := c.sink.Stats(); st.Bad != 6 || st.Requests != 6 || st.Messages != 0 || len(c.sink.Messages()) != 0 {
		t.Errorf("Stats = %+v, want 6 bad requests, no messages", st)
	}
}

// A status mix refuses each request with its probability: over 1000 requests with a fixed seed
// the counts are within 5 standard deviations of the binomial mean, and the same seed gives the
// same answers.
func TestSinkStatusMix(t *testing.T) {
	const n = 1000
	mix := map[int]float64{503: 0.1, 429: 0.05}
	run := func() []int {
		c := newSink(t, loadgen.SinkOptions{Seed: 42, Faults: loadgen.Faults{StatusMix: mix, RetryAfter: 3}})
		body := envelopes(msg{"A", 1, 0, 0})
		var codes []int
		for range n {
			a := c.post("/", body)
			codes = append(codes, a.status)
			if ra := a.header.Get("Retry-After"); (a.status == 200) != (ra == "") || (ra != "" && ra != "3") {
				t.Fatalf("status %d with Retry-After %q", a.status, ra)
			}
		}
		var snap loadgen.SinkSnapshot
		c.getJSON("/stats", &snap)
		counts := map[int]int{}
		for _, code := range codes {
			counts[code]++
		}
		if snap.Refused != counts[503]+counts[429] || snap.RefusedByStatus[503] != counts[503] ||
			snap.RefusedByStatus[429] != counts[429] || snap.Messages != counts[200] || snap.Unique != 1 {
			t.Errorf("stats %+v do not match answers %v", snap, counts)
		}
		for code, p := range mix {
			mean, sd := n*p, math.Sqrt(n*p*(1-p))
			if got := float64(counts[code]); math.Abs(got-mean) > 5*sd {
				t.Errorf("%d answered %v times, want %v ± %.0f", code, got, mean, 5*sd)
			}
		}
		return codes
	}
	first, second := run(), run()
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Errorf("seed 42 gave different answers in two runs")
	}
}

// During an outage every batch is answered 503 with Retry-After; before and after it, 200.
func TestSinkOutage(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{Faults: loadgen.Faults{RetryAfter: 1,
		Outages: []loadgen.Outage{{From: time.Hour, Duration: time.Second}}}})
	body := envelopes(msg{"A", 1, 0, 0})
	if a := c.post("/", body); a.status != 200 {
		t.Fatalf("before the outage: %d", a.status)
	}
	// From now on, through the HTTP API.
	if a := c.post("/faults", []byte(`{"retryAfter":2,"outages":[{"from":"0s","duration":"400ms"}]}`)); a.status != 200 {
		t.Fatalf("POST /faults = %d %s", a.status, a.body)
	}
	a := c.post("/", body)
	if a.status != 503 || a.header.Get("Retry-After") != "2" {
		t.Errorf("during the outage: %d, Retry-After %q; want 503, 2", a.status, a.header.Get("Retry-After"))
	}
	checkfor.Check(t, 10*time.Second, 50*time.Millisecond, func() error {
		if a.status == 503 {
			a = c.post("/", body)
			return errors.New("the outage goes on")
		}
		return nil
	})
	if a.status != 200 {
		t.Errorf("after the outage: %d", a.status)
	}
	if st := c.sink.Stats(); st.Messages != 2 || st.Refused < 1 {
		t.Errorf("Stats = %+v: want 2 messages accepted, refused ones not accounted", st)
	}
}

// The delay holds every answer at least that long.
func TestSinkDelay(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{Seed: 1, Faults: loadgen.Faults{Delay: 30 * time.Millisecond, Jitter: 10 * time.Millisecond}})
	start := time.Now()
	if a := c.post("/", envelopes(msg{"A", 1, 0, 0})); a.status != 200 {
		t.Fatal(a.status)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("answer after %v, want ≥ 30ms", d)
	}
}

func TestSinkFaultsAPI(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{})
	f := func(body string, wantStatus int, wantBody ...string) {
		t.Helper()
		a := c.post("/faults", []byte(body))
		if a.status != wantStatus {
			t.Errorf("POST /faults %s = %d %s, want %d", body, a.status, a.body, wantStatus)
		}
		for _, w := range wantBody {
			if !strings.Contains(a.body, w) {
				t.Errorf("POST /faults %s = %q, want it to mention %q", body, a.body, w)
			}
		}
	}
	f(`{"statusMix":{"503":0.25},"delay":"1ms","jitter":"2ms","retryAfter":5,"outages":[{"from":"1h","duration":"10s"}]}`, 200,
		`"statusMix":{"503":0.25}`, `"delay":"1ms"`, `"outages":[{"from":"1h0m0s","duration":"10s"}]`)
	want := loadgen.Faults{StatusMix: map[int]float64{503: 0.25}, Delay: time.Millisecond, Jitter: 2 * time.Millisecond,
		RetryAfter: 5, Outages: []loadgen.Outage{{From: time.Hour, Duration: 10 * time.Second}}}
	if got := c.sink.Faults(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Faults() = %+v, want %+v", got, want)
	}
	var got loadgen.Faults
	c.getJSON("/faults", &got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET /faults = %+v, want %+v", got, want)
	}
	// Strict decoding, every problem reported, nothing installed.
	f(`{"mix":{}}`, 400, "unknown field")
	f(`{"delay":"soon"}`, 400, "delay: time: invalid duration")
	f(`{"statusMix":{"200":0.5,"503":1.5,"429":0.1},"delay":"-1s","outages":[{"from":"-1s","duration":"0s"}]}`, 400,
		"statusMix[200]: status must be 300..599", "statusMix[503]: probability 1.5 outside [0, 1]",
		"statusMix: probabilities sum to 2.1", "delay: must not be negative", "outages[0].from: must not be negative",
		"outages[0].duration: must be positive")
	if got := c.sink.Faults(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after bad POSTs Faults() = %+v, want %+v unchanged", got, want)
	}
	f(`{}`, 200)
	if got := c.sink.Faults(); len(got.StatusMix) != 0 || got.Delay != 0 || len(got.Outages) != 0 {
		t.Errorf("after POST {}: Faults() = %+v, want none", got)
	}
	if err := c.sink.SetFaults(loadgen.Faults{StatusMix: map[int]float64{503: 2}}); err == nil {
		t.Errorf("SetFaults accepted probability 2")
	}
	if _, err := loadgen.StartSinkWith(loadgen.SinkOptions{Faults: loadgen.Faults{Delay: -1}}); err == nil {
		t.Errorf("StartSinkWith accepted a negative delay")
	}
	if a := c.do(http.MethodDelete, "/faults", nil); a.status != 405 {
		t.Errorf("DELETE /faults = %d, want 405", a.status)
	}
	if a := c.do(http.MethodGet, "/reset", nil); a.status != 405 {
		t.Errorf("GET /reset = %d, want 405", a.status)
	}
}

// SetStatus (the tests' fault hook) decides after the injected faults.
func TestSinkSetStatus(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{Faults: loadgen.Faults{RetryAfter: 1}})
	c.sink.SetStatus(func(path string, body []byte) int {
		if path == "/down" {
			return 503
		}
		return 200
	})
	if a := c.post("/down", envelopes(msg{"A", 1, 0, 0})); a.status != 503 || a.header.Get("Retry-After") != "1" {
		t.Errorf("/down = %d %v", a.status, a.header)
	}
	if a := c.post("/up", envelopes(msg{"A", 1, 0, 0})); a.status != 200 {
		t.Errorf("/up = %d", a.status)
	}
	c.sink.SetStatus(nil)
	if a := c.post("/down", envelopes(msg{"A", 2, 0, 0})); a.status != 200 {
		t.Errorf("/down without a hook = %d", a.status)
	}
	if st := c.sink.Stats(); st.Refused != 1 || st.Messages != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

// BenchmarkSinkPost is the sink's cost per message through HTTP: 500-message batches posted
// over loopback by one client.
func BenchmarkSinkPost(b *testing.B) {
	c := newSink(b, loadgen.SinkOptions{})
	const n, rounds = 500, 200
	bodies := make([][]byte, rounds)
	for r := range bodies {
		bodies[r] = benchBatch(n, r)
	}
	b.SetBytes(int64(len(bodies[0])))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == rounds { // every message once: start over with an empty ledger
			b.StopTimer()
			c.sink.Reset()
			i = 0
			b.StartTimer()
		}
		if a := c.post("/", bodies[i]); a.status != 200 {
			b.Fatal(a.status)
		}
		i++
	}
	if st := c.sink.Stats(); st.Dups != 0 || st.Reordered != 0 {
		b.Fatalf("Stats = %+v", st)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}
