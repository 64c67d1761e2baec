package loadgen

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Envelope is the relay's default message envelope, as a receiver decodes it.
type Envelope struct {
	MsgID      string          `json:"msgId"`
	Serial     string          `json:"serial"`
	IMEI       string          `json:"imei"`
	ICCID      string          `json:"iccid"`
	Seq        uint64          `json:"seq"`
	Index      int             `json:"index"`
	ReceivedAt string          `json:"receivedAt"`
	Attempt    int             `json:"attempt"`
	Data       json.RawMessage `json:"data"`
}

// Received is one accepted message with the request it came in.
type Received struct {
	Envelope
	Path string
	At   time.Time
}

// MsgKey identifies one record of one device.
type MsgKey struct {
	Device string
	Seq    uint64
	Index  int
}

// Sink is a receiving endpoint: a fasthttp server that accepts JSON-array batches of envelopes
// and accounts for every message. Safe for concurrent use.
type Sink struct {
	srv *fasthttp.Server
	ln  net.Listener
	wg  sync.WaitGroup

	// Status, when set, decides the answer to each request before it is accounted; a non-2xx
	// answer means the batch was not accepted.
	status atomic.Pointer[func(path string, body []byte) int]

	inflight, maxInflight atomic.Int64

	mu        sync.Mutex
	count     map[MsgKey]int
	last      map[string]MsgKey // per device: the last accepted message, for order checks
	msgs      []Received
	batches   []Batch
	requests  int
	refused   int
	dups      int
	reordered int
	bad       int
}

// StartSink listens on addr (use "127.0.0.1:0") and serves until Close.
func StartSink(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{ln: ln, count: make(map[MsgKey]int), last: make(map[string]MsgKey)}
	s.srv = &fasthttp.Server{Handler: s.handle, MaxRequestBodySize: 64 << 20, NoDefaultServerHeader: true}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// URL is the sink's base URL.
func (s *Sink) URL() string { return "http://" + s.ln.Addr().String() }

// SetStatus installs a fault injector (nil: always 200).
func (s *Sink) SetStatus(f func(path string, body []byte) int) {
	if f == nil {
		s.status.Store(nil)
		return
	}
	s.status.Store(&f)
}

func (s *Sink) handle(ctx *fasthttp.RequestCtx) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxInflight.Load()
		if n <= m || s.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	body := ctx.PostBody()
	path := string(ctx.Path())
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
	if f := s.status.Load(); f != nil {
		if code := (*f)(path, body); code < 200 || code > 299 {
			s.mu.Lock()
			s.refused++
			s.mu.Unlock()
			ctx.SetStatusCode(code)
			return
		}
	}
	var batch []Envelope
	if err := json.Unmarshal(body, &batch); err != nil {
		s.mu.Lock()
		s.bad++
		s.mu.Unlock()
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		fmt.Fprintf(ctx, "bad batch: %v", err)
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.batches = append(s.batches, Batch{Path: path, Messages: len(batch), Bytes: len(body), At: now})
	for _, e := range batch {
		dev := e.Serial
		if dev == "" {
			dev = e.IMEI
		}
		k := MsgKey{Device: dev, Seq: e.Seq, Index: e.Index}
		s.count[k]++
		if s.count[k] > 1 {
			s.dups++
		} else if prev, ok := s.last[dev]; ok && (k.Seq < prev.Seq || (k.Seq == prev.Seq && k.Index < prev.Index)) {
			s.reordered++
		}
		if prev, ok := s.last[dev]; !ok || k.Seq > prev.Seq || (k.Seq == prev.Seq && k.Index > prev.Index) {
			s.last[dev] = k
		}
		s.msgs = append(s.msgs, Received{Envelope: e, Path: path, At: now})
	}
	s.mu.Unlock()
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// Batch describes one accepted request.
type Batch struct {
	Path     string
	Messages int
	Bytes    int
	At       time.Time
}

// Batches returns every accepted request, in arrival order.
func (s *Sink) Batches() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Batch(nil), s.batches...)
}

// SinkStats summarises what the sink saw.
type SinkStats struct {
	Requests    int // requests received
	Refused     int // requests answered with an injected failure
	Bad         int // requests whose body was not a JSON array of envelopes
	Messages    int // messages accepted, duplicates included
	Unique      int // distinct (device, seq, index)
	Dups        int // messages accepted more than once
	Reordered   int // messages that arrived after a later one of the same device
	MaxInFlight int // most requests handled at once
}

// Stats returns the counters.
func (s *Sink) Stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SinkStats{Requests: s.requests, Refused: s.refused, Bad: s.bad, Messages: len(s.msgs),
		Unique: len(s.count), Dups: s.dups, Reordered: s.reordered, MaxInFlight: int(s.maxInflight.Load())}
}

// Count is how many times a message was accepted.
func (s *Sink) Count(k MsgKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[k]
}

// Messages returns a copy of every accepted message, in arrival order.
func (s *Sink) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.msgs...)
}

// Close stops the server and waits for it.
func (s *Sink) Close() error {
	err := s.srv.Shutdown()
	s.wg.Wait()
	return err
}
