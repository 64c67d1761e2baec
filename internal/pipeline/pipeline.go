package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/auth"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// Options configure one route's pipeline.
type Options struct {
	Route  string // the route's name: metrics label, log attribute
	Method string // POST or PUT
	// URL is the route's url as configured, placeholders unexpanded: the failure log shows it
	// instead of a destination whose path holds a device's custom field ([CUSTOM1]..[CUSTOM3]
	// may carry credentials).
	URL string
	// Format renders each message; nil: envelope.
	Format format.Format
	// Object: one message per request, the body its rendering (no array).
	Object bool
	// Compress compresses bodies; nil: uncompressed.
	Compress deliver.Compressor
	// Auth authenticates and signs every attempt after its body is final; nil: neither.
	Auth auth.Chain
	// Policy says which statuses mean delivered, and how to retry; nil: 2xx, no limit.
	Policy *deliver.Policy
	// Timeout bounds one request; 0: the client's.
	Timeout time.Duration
	// Concurrency is how many requests of the route run at once (default 1); a batch waiting to
	// retry holds none.
	Concurrency int
	// Client sends the requests. Required.
	Client *deliver.Client
	// Metrics records the route's requests; nil records nothing.
	Metrics *Metrics
	// Logger receives the failed attempts (rate-limited, see FailureLogInterval); nil discards.
	Logger *slog.Logger
	// FailureLogInterval: at most one failed attempt is logged per interval, with the count of
	// those held back (default DefaultFailureLogInterval).
	FailureLogInterval time.Duration
}

// Pipeline delivers one route's batches: render → compress → sign → send → outcome. It is safe
// for concurrent use; it starts no goroutine of its own (an attempt runs on the caller's, see
// deliver.Client.Do).
type Pipeline struct {
	o       Options
	slots   chan struct{} // request slots: Concurrency requests at once
	metrics *routeMetrics
	fails   *failLog
}

var _ actors.Deliverer = (*Pipeline)(nil)

// New returns the pipeline of one route.
func New(o Options) *Pipeline {
	if o.Format == nil {
		o.Format, _ = format.Lookup(format.NameEnvelope, format.Options{})
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pipeline{o: o, slots: make(chan struct{}, max(1, o.Concurrency)), metrics: o.Metrics.route(o.Route),
		fails: newFailLog(o.Logger.With("component", "pipeline"), o.Route, o.URL, o.FailureLogInterval)}
}

// errExpired ends a delivery whose oldest message passed the route's retention.
var errExpired = errors.New("retention exceeded")

// Deliver implements actors.Deliverer: it delivers b until the endpoint accepts it, the policy
// gives up, the retention of its oldest message passes before a retry, or ctx ends. Signers see
// the batch's device (auth.Request.Device); one that refuses with auth.ErrPermanent ends the
// delivery at once as GaveUp, with its error as the dead letter's reason.
func (p *Pipeline) Deliver(ctx context.Context, b *actors.Batch) actors.Outcome {
	o := &p.o
	hdr := b.Header
	if o.Compress != nil {
		hdr = append(hdr[:len(hdr):len(hdr)], [2]string{"Content-Encoding", o.Compress.Encoding()})
	}
	req := &deliver.Request{Method: o.Method, URL: b.URL, Header: hdr, Timeout: o.Timeout, Slots: p.slots}
	var (
		batch  auth.Batch
		signed auth.Request // the attempt as last signed
	)
	if o.Auth != nil {
		batch = auth.Batch{ID: batchID(), Time: time.Now()}
	}
	bld := builders.Get().(*format.Builder)
	defer builders.Put(bld)
	var zbuf *[]byte
	if o.Compress != nil {
		zbuf = compressBufs.Get().(*[]byte)
		defer compressBufs.Put(zbuf)
	}
	n := b.Len()
	build := func(attempt int, req *deliver.Request) error {
		if attempt > 0 {
			b.Waiting(false)
			if b.Expired() {
				return errExpired
			}
		}
		var dev *auth.Device
		if o.Auth != nil {
			dev = new(auth.Device)
		}
		req.Body = p.render(bld, b, attempt, dev)
		if zbuf != nil {
			*zbuf = o.Compress.Append((*zbuf)[:0], req.Body)
			req.Body = *zbuf
		}
		if o.Auth != nil {
			ar := auth.Request{Method: o.Method, URL: b.URL, Body: req.Body, Batch: batch, Device: *dev,
				Header: append(make([][2]string, 0, len(hdr)+4), hdr...)}
			if err := o.Auth.Sign(ctx, &ar); errors.Is(err, auth.ErrPermanent) {
				return err // no retry can sign it: given up on (dead-lettered) at once
			} else if err != nil {
				return fmt.Errorf("%w: %w", deliver.ErrNotSent, err)
			}
			req.Method, req.URL, req.Header, req.Body = ar.Method, ar.URL, ar.Header, ar.Body
			signed = ar
		}
		return nil
	}
	var last deliver.Result
	onResult := func(attempt int, res deliver.Result) {
		last = res
		p.metrics.attempt(o.Policy, n, attempt, res)
		p.fails.attempt(b.URL, attempt, n, o.Policy, res)
		if res.Status == 401 && o.Auth != nil {
			o.Auth.Unauthorized(&signed) // a new token for the next attempt
		}
		if res.Err != nil || !o.Policy.Succeeded(res.Status) {
			// It may give up instead of waiting; the route clears the mark when the batch ends.
			b.Waiting(true)
		}
	}
	attempts, err := deliver.Deliver(ctx, o.Client, o.Policy, req, build, onResult)
	out := actors.Outcome{Status: last.Status, Attempts: attempts, Err: err}
	switch {
	case err == nil:
		out.Result = actors.Delivered
	case errors.Is(err, deliver.ErrGaveUp), errors.Is(err, auth.ErrPermanent):
		out.Result = actors.GaveUp
	case errors.Is(err, errExpired):
		out.Result = actors.Expired
	default:
		out.Result = actors.Stopped
	}
	return out
}

// render builds the body of one attempt in bld: every message of b in the route's format, as a
// JSON array, or (Object) the one message's rendering alone. It aliases bld's buffer. dev, if
// not nil, is set to the messages' device as they are read (its ID "" if they are several).
func (p *Pipeline) render(bld *format.Builder, b *actors.Batch, attempt int, dev *auth.Device) []byte {
	bld.Reset(p.o.Format)
	var m format.Message
	for i := range b.Len() {
		b.Message(i, &m)
		switch {
		case dev == nil:
		case i == 0:
			*dev = auth.Device{ID: m.Device, Custom: [3]string{m.Custom1, m.Custom2, m.Custom3}}
		case m.Device != dev.ID:
			*dev = auth.Device{}
		}
		m.Attempt = attempt
		bld.Add(&m)
	}
	body := bld.Bytes()
	if p.o.Object { // one message: its rendering without the array's brackets
		body = body[1 : len(body)-1]
	}
	return body
}

// batchID returns a new batch identity: 16 random bytes, base32. It names the batch to signers
// (webhook-id, object names) the same way across its retries.
func batchID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "b_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

var (
	// builders recycles batch builders between deliveries.
	builders = sync.Pool{New: func() any { return new(format.Builder) }}
	// compressBufs recycles compressed request bodies between deliveries.
	compressBufs = sync.Pool{New: func() any { return new([]byte) }}
)
