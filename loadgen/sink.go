package loadgen

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// SinkOptions configure a sink. The zero value listens on 127.0.0.1:0, keeps no messages,
// reads the send time from data.sentAt and injects no faults.
type SinkOptions struct {
	// Addr is the listen address (default 127.0.0.1:0).
	Addr string
	// KeepMessages keeps a copy of every accepted message and a record of every accepted batch
	// (Messages, Batches). It costs an allocation per message: leave it off for benchmarks.
	KeepMessages bool
	// SentField is the key, at the top level of each record, of the device's send time in Unix
	// microseconds, from which end-to-end latency is measured (default DefaultSentField).
	SentField string
	// KeyField is the data field that, when a record has it, identifies the record within its
	// device instead of its envelope's seq and index (default DefaultKeyField, the counter of
	// simulated Teltonika trackers; "-": none). See BatchScanner.KeyField. Such a record's
	// send time, for latency, is its "timestamp" (Unix ms) unless it has a SentField.
	KeyField string
	// Faults are injected from the start; SetFaults and POST /faults replace them.
	Faults Faults
	// Seed seeds fault decisions: a fixed seed gives the same answers to the same sequence of
	// requests. 0 seeds from the runtime's random source.
	Seed uint64
	// Chaos mangles accepted batches before they are accounted, to test the accounting.
	Chaos Chaos
	// MaxBodySize bounds a request body (default 64 MiB).
	MaxBodySize int
	// Logger receives the HTTP server's errors (default: discarded).
	Logger *slog.Logger
}

// Chaos makes a sink misbehave on purpose after it accepted a batch (the sender is told 200
// either way), so that tests can check that the accounting catches exactly what it did.
// Messages are numbered in arrival order from 1 over the sink's life (or since Reset).
type Chaos struct {
	DropEvery int  // every DropEvery-th message is not accounted: lost
	DupEvery  int  // every DupEvery-th message (unless dropped) is accounted twice: a duplicate
	Reverse   bool // each batch is accounted in reverse order (after drops and duplicates)
}

// Received is one accepted message with the request it came in.
type Received struct {
	Envelope
	Path string
	At   time.Time
}

// Batch describes one accepted request.
type Batch struct {
	Path     string
	Messages int
	Bytes    int
	At       time.Time
}

// SinkStats summarises what the sink saw.
type SinkStats struct {
	Requests    int `json:"requests"`    // requests to the ingest path
	Refused     int `json:"refused"`     // requests answered with an injected failure
	Bad         int `json:"bad"`         // requests whose body was not a JSON array of envelopes
	Batches     int `json:"batches"`     // requests accepted
	Bytes       int `json:"bytes"`       // body bytes accepted
	Messages    int `json:"messages"`    // messages accepted, duplicates included
	Unique      int `json:"unique"`      // distinct (device, seq, index)
	Dups        int `json:"dups"`        // arrivals beyond a message's first
	Reordered   int `json:"reordered"`   // messages that arrived after a later one of the same device
	Devices     int `json:"devices"`     // distinct devices
	MaxInFlight int `json:"maxInFlight"` // most requests handled at once

	ChaosDropped    int `json:"chaosDropped,omitempty"`    // messages Chaos dropped
	ChaosDuplicated int `json:"chaosDuplicated,omitempty"` // messages Chaos duplicated
}

// SinkSnapshot is everything GET /stats reports.
type SinkSnapshot struct {
	SinkStats
	RefusedByStatus map[int]int    `json:"refusedByStatus"`
	StartedAt       time.Time      `json:"startedAt"` // start, or the last Reset
	ElapsedSeconds  float64        `json:"elapsedSeconds"`
	PerSecond       []int64        `json:"perSecond"` // messages accepted in each second since StartedAt, up to now
	LatencyUs       LatencySummary `json:"latencyUs"` // device send time to arrival
}

// Sink is a receiving endpoint: a fasthttp server that accepts JSON-array batches of envelopes
// on any path but its own (GET /stats, GET /stats/devices, POST /reset, GET and POST /faults,
// POST /account),
// accounts for every message, and injects faults on request. Safe for concurrent use.
type Sink struct {
	opts SinkOptions
	srv  *fasthttp.Server
	ln   net.Listener
	wg   sync.WaitGroup

	status atomic.Pointer[func(path string, body []byte) int]
	faults atomic.Pointer[faultState]
	rnd    *faultRand
	bufs   sync.Pool // *ingestBuf

	inflight, maxInflight atomic.Int64

	mu        sync.Mutex
	led       *ledger
	requests  int
	refused   int
	refusedBy map[int]int
	bad       int
	batchN    int
	bytes     int
	chaosSeq  int
	chaosDrop int
	chaosDup  int
	msgs      []Received
	batches   []Batch
}

// ingestBuf is one request's scratch space, pooled.
type ingestBuf struct {
	sc      BatchScanner
	refs    []EnvelopeRef
	mangled []EnvelopeRef
}

// StartSink listens on addr (use "127.0.0.1:0") and serves until Close. It keeps every message
// (see SinkOptions.KeepMessages).
func StartSink(addr string) (*Sink, error) {
	return StartSinkWith(SinkOptions{Addr: addr, KeepMessages: true})
}

// StartSinkWith starts a sink configured by opts and serves until Close.
func StartSinkWith(opts SinkOptions) (*Sink, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.SentField == "" {
		opts.SentField = DefaultSentField
	}
	switch opts.KeyField {
	case "":
		opts.KeyField = DefaultKeyField
	case "-":
		opts.KeyField = ""
	}
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("sink faults: %w", err)
	}
	if opts.Chaos.DropEvery < 0 || opts.Chaos.DupEvery < 0 {
		return nil, fmt.Errorf("sink chaos: DropEvery and DupEvery must not be negative")
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("sink listen %s: %w", opts.Addr, err)
	}
	now := time.Now()
	s := &Sink{opts: opts, ln: ln, rnd: newFaultRand(opts.Seed), led: newLedger(now), refusedBy: map[int]int{}}
	s.faults.Store(newFaultState(opts.Faults, now))
	s.bufs.New = func() any {
		return &ingestBuf{sc: BatchScanner{SentField: opts.SentField, KeyField: opts.KeyField, KeyTimeField: "timestamp"}}
	}
	s.srv = &fasthttp.Server{
		Handler:               s.handle,
		Name:                  "loadgen-sink",
		MaxRequestBodySize:    opts.MaxBodySize,
		NoDefaultServerHeader: true,
		Logger:                fasthttpLogger{opts.Logger.With("component", "sink")},
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// fasthttpLogger routes fasthttp's messages to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Warn(fmt.Sprintf(format, args...)) }

// URL is the sink's base URL.
func (s *Sink) URL() string { return "http://" + s.ln.Addr().String() }

// SetStatus installs a function deciding the answer to each batch request after the injected
// faults passed it (nil: accept). A non-2xx answer refuses the batch.
func (s *Sink) SetStatus(f func(path string, body []byte) int) {
	if f == nil {
		s.status.Store(nil)
		return
	}
	s.status.Store(&f)
}

// SetFaults replaces the injected faults; outage windows count from now.
func (s *Sink) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.faults.Store(newFaultState(f, time.Now()))
	return nil
}

// Faults returns the injected faults.
func (s *Sink) Faults() Faults {
	f := s.faults.Load().cfg
	f.StatusMix = maps.Clone(f.StatusMix)
	f.Outages = slices.Clone(f.Outages)
	return f
}

func (s *Sink) handle(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/stats":
		s.serveJSON(ctx, fasthttp.MethodGet, func() any { return s.Snapshot() })
	case "/stats/devices":
		s.serveJSON(ctx, fasthttp.MethodGet, func() any { return s.Devices() })
	case "/reset":
		if !ctx.IsPost() {
			methodNotAllowed(ctx, fasthttp.MethodPost)
			return
		}
		s.Reset()
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case "/faults":
		s.serveFaults(ctx)
	case "/account":
		s.serveAccount(ctx)
	default:
		s.ingest(ctx)
	}
}

func methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
}

func (s *Sink) serveJSON(ctx *fasthttp.RequestCtx, method string, v func() any) {
	if string(ctx.Method()) != method {
		methodNotAllowed(ctx, method)
		return
	}
	b, err := json.Marshal(v())
	if err != nil {
		ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func (s *Sink) serveFaults(ctx *fasthttp.RequestCtx) {
	switch {
	case ctx.IsGet():
	case ctx.IsPost():
		var f Faults
		if err := json.Unmarshal(ctx.PostBody(), &f); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
		if err := s.SetFaults(f); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
	default:
		methodNotAllowed(ctx, "GET, POST")
		return
	}
	s.serveJSON(ctx, string(ctx.Method()), func() any { return s.Faults() })
}

func (s *Sink) ingest(ctx *fasthttp.RequestCtx) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxInflight.Load()
		if n <= m || s.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	if !ctx.IsPost() && !ctx.IsPut() {
		s.count(func() { s.requests++; s.bad++ })
		methodNotAllowed(ctx, "POST, PUT")
		return
	}
	fs := s.faults.Load()
	status, delay := fs.decide(time.Now(), s.rnd)
	if delay > 0 {
		time.Sleep(delay)
	}
	body := ctx.PostBody()
	if status == 0 {
		if f := s.status.Load(); f != nil {
			if code := (*f)(string(ctx.Path()), body); code < 200 || code > 299 {
				status = code
			}
		}
	}
	if status != 0 {
		s.count(func() { s.requests++; s.refused++; s.refusedBy[status]++ })
		ctx.Error("injected failure", status) // resets the headers: set them after
		if ra := fs.cfg.RetryAfter; ra > 0 && (status == 429 || status == 503) {
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(ra))
		}
		return
	}

	buf := s.bufs.Get().(*ingestBuf)
	defer s.bufs.Put(buf)
	refs, err := buf.sc.Scan(buf.refs[:0], body)
	buf.refs = refs[:0]
	if err != nil {
		s.count(func() { s.requests++; s.bad++ })
		ctx.Error(err.Error(), fasthttp.StatusBadRequest)
		return
	}
	now := time.Now()
	nowUs := now.UnixMicro()
	s.mu.Lock()
	s.requests++
	refs = s.mangle(refs, buf)
	for i := range refs {
		s.led.add(&refs[i], nowUs)
	}
	s.led.arrived(nowUs, len(refs))
	s.batchN++
	s.bytes += len(body)
	if s.opts.KeepMessages {
		path := string(ctx.Path())
		s.batches = append(s.batches, Batch{Path: path, Messages: len(refs), Bytes: len(body), At: now})
		for i := range refs {
			s.msgs = append(s.msgs, Received{Envelope: refs[i].Envelope(), Path: path, At: now})
		}
	}
	s.mu.Unlock()
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// count runs f under the sink's lock.
func (s *Sink) count(f func()) {
	s.mu.Lock()
	f()
	s.mu.Unlock()
}

// mangle applies Chaos to refs; the sink's lock is held.
func (s *Sink) mangle(refs []EnvelopeRef, buf *ingestBuf) []EnvelopeRef {
	c := s.opts.Chaos
	if c == (Chaos{}) {
		return refs
	}
	out := buf.mangled[:0]
	for i := range refs {
		s.chaosSeq++
		switch {
		case c.DropEvery > 0 && s.chaosSeq%c.DropEvery == 0:
			s.chaosDrop++
			continue
		case c.DupEvery > 0 && s.chaosSeq%c.DupEvery == 0:
			s.chaosDup++
			out = append(out, refs[i])
		}
		out = append(out, refs[i])
	}
	if c.Reverse {
		slices.Reverse(out)
	}
	buf.mangled = out[:0]
	return out
}

// Stats returns the counters.
func (s *Sink) Stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

func (s *Sink) statsLocked() SinkStats {
	return SinkStats{Requests: s.requests, Refused: s.refused, Bad: s.bad, Batches: s.batchN, Bytes: s.bytes,
		Messages: int(s.led.messages), Unique: int(s.led.unique), Dups: int(s.led.dups),
		Reordered: int(s.led.reordered), Devices: len(s.led.devices), MaxInFlight: int(s.maxInflight.Load()),
		ChaosDropped: s.chaosDrop, ChaosDuplicated: s.chaosDup}
}

// Snapshot returns the counters, arrivals per second and latency percentiles.
func (s *Sink) Snapshot() SinkSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	elapsed := time.Since(s.led.start)
	snap := SinkSnapshot{SinkStats: s.statsLocked(), RefusedByStatus: maps.Clone(s.refusedBy),
		StartedAt: s.led.start, ElapsedSeconds: elapsed.Seconds(), LatencyUs: summarize(s.led.latency)}
	// Every second up to now, the quiet ones after the last arrival included.
	snap.PerSecond = make([]int64, max(len(s.led.perSecond), int(elapsed/time.Second)+1))
	copy(snap.PerSecond, s.led.perSecond)
	return snap
}

// LatencyHistogram returns a copy of the end-to-end latency histogram (microseconds).
func (s *Sink) LatencyHistogram() *hdrhistogram.Histogram {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.led.latency.Clone()
}

// Devices returns what the sink saw of each device.
func (s *Sink) Devices() map[string]DeviceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]DeviceStats, len(s.led.devices))
	for name, d := range s.led.devices {
		m[name] = d.stats()
	}
	return m
}

// Count is how many times a message was accepted.
func (s *Sink) Count(k MsgKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.led.devices[k.Device]
	if d == nil {
		return 0
	}
	return d.count(k.Seq, k.Index)
}

// Account compares what devices were told was stored with what the sink received.
func (s *Sink) Account(e Expect) AccountReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.led.account(e)
}

// Messages returns a copy of every accepted message, in arrival order (nil unless
// SinkOptions.KeepMessages).
func (s *Sink) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Batches returns every accepted request, in arrival order (nil unless
// SinkOptions.KeepMessages).
func (s *Sink) Batches() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

// Reset forgets every message and counter and restarts the clock of arrivals per second; the
// faults stay.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.led = newLedger(time.Now())
	s.requests, s.refused, s.bad, s.batchN, s.bytes = 0, 0, 0, 0, 0
	s.chaosSeq, s.chaosDrop, s.chaosDup = 0, 0, 0
	clear(s.refusedBy)
	s.msgs, s.batches = nil, nil
	s.maxInflight.Store(s.inflight.Load())
}

// Close stops the server and waits for it.
func (s *Sink) Close() error {
	err := s.srv.Shutdown()
	s.wg.Wait()
	return err
}
