package actors

import (
	"errors"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Route is a compiled route: where and how its batches go.
type Route struct {
	ID          uint16
	Name        string
	Method      string
	URL         *fields.Template
	Headers     []Header
	MaxMessages int
	MaxBytes    int
	Linger      time.Duration
	Concurrency int           // batches in flight at once, over all lanes
	Timeout     time.Duration // per request; 0: the client's
	Policy      *deliver.Policy
	Compress    deliver.Compressor // nil: bodies go uncompressed
	Format      format.Format      // how each message is rendered; nil: envelope
	Object      bool               // one message per request, the body its rendering (no array)
	Filter      *Filter            // the devices it takes; nil: all
}

// Header is one configured request header; its value may hold dynamic fields.
type Header struct {
	Name  string
	Value *fields.Template
}

// Route actor messages.
type (
	segmentMsg struct{ seg *store.Segment }
	batchDone  struct {
		lane  *lane
		items []item
		err   error
	}
	tickMsg struct{}
	waitMsg struct { // a lane's batch starts (on) or ends (off) waiting to retry
		lane *lane
		on   bool
	}
	drainMsg    struct{}
	idleQuery   struct{} // answered once no batch is in flight after drainMsg
	oldestQuery struct{} // answered with the oldest pending record's receivedAt (Unix ms, 0: none)
)

// item is one record waiting in a lane.
type item struct {
	f    *store.Frame
	rec  uint16 // record index in its frame
	size int32  // estimated envelope size
	ref  store.Ref
}

// lane holds the records bound for one resolved destination (one shard of it, see laneFor), in
// the order they were stored, so per-device order holds even through retries: a lane has at most
// one batch in flight.
type lane struct {
	url     string
	headers [][2]string
	q       []item
	bytes   int
	since   time.Time // when the oldest queued record arrived
	busy    bool
	waiting bool  // the batch in flight is waiting to retry (holds no request slot)
	flying  int64 // receivedAt (Unix ms) of the oldest record of the batch in flight
}

func (l *lane) ready(r *Route, now time.Time) bool {
	return !l.busy && len(l.q) > 0 &&
		(len(l.q) >= r.MaxMessages || l.bytes >= r.MaxBytes || now.Sub(l.since) >= r.Linger)
}

// routeActor owns one route's in-memory queue. It is the only goroutine that touches its lanes;
// deliveries run in goroutines that report back with batchDone.
type routeActor struct {
	sys    *System
	r      *Route
	self   *actor.PID
	lanes  map[string]*lane
	queued int    // records in lanes (including in flight)
	cursor uint64 // highest segment loaded into memory
	spill  bool   // the in-memory queue is full: new segments are paged from the store later

	inflight  int           // batches in flight
	waiting   int           // of which waiting to retry
	slots     chan struct{} // request slots: Concurrency requests at once
	draining  bool
	respond   []*actor.PID // idleQuery senders waiting for in-flight batches to end
	timerAt   time.Time
	key       []byte
	vals      fields.Values
	staticKey bool
}

func newRouteActor(s *System, r *Route) *routeActor {
	if r.Format == nil {
		r.Format, _ = format.Lookup(format.NameEnvelope, format.Options{})
	}
	static := r.URL.Static()
	for _, h := range r.Headers {
		static = static && h.Value.Static()
	}
	return &routeActor{sys: s, r: r, lanes: make(map[string]*lane), spill: true, staticKey: static,
		slots: make(chan struct{}, max(1, r.Concurrency))}
}

func (ra *routeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ra.self = ctx.Self()
		ra.page() // recovery: whatever the store holds for this route
		ra.pump()
	case *segmentMsg:
		if m.seg.ID > ra.cursor && !ra.spill {
			ra.loadSegment(m.seg)
			ra.cursor = m.seg.ID
			if ra.queued >= ra.sys.opts.MaxQueued {
				ra.spill = true
			}
		}
		ra.pump()
	case *batchDone:
		ra.done(m)
		if ra.spill && ra.queued < ra.sys.opts.MaxQueued/2 && !ra.draining {
			ra.page()
		}
		ra.pump()
		ra.answerIdle()
	case *waitMsg:
		if m.lane.busy && m.lane.waiting != m.on {
			m.lane.waiting = m.on
			if m.on {
				ra.waiting++
			} else {
				ra.waiting--
			}
		}
		ra.pump()
	case tickMsg:
		ra.timerAt = time.Time{}
		if ra.spill && ra.queued < ra.sys.opts.MaxQueued/2 && !ra.draining {
			ra.page()
		}
		ra.pump()
	case drainMsg:
		ra.draining = true
	case idleQuery:
		ra.respond = append(ra.respond, ctx.Sender())
		ra.answerIdle()
	case oldestQuery:
		ctx.Respond(ra.oldest())
	}
}

// oldest is the receivedAt (Unix ms) of the oldest record the route has not delivered, 0 if
// none. Records are paged in from the store oldest first, so the oldest are in memory.
func (ra *routeActor) oldest() int64 {
	var o int64
	for _, l := range ra.lanes {
		for _, t := range []int64{l.flying, l.first()} {
			if t > 0 && (o == 0 || t < o) {
				o = t
			}
		}
	}
	return o
}

func (l *lane) first() int64 {
	if len(l.q) == 0 {
		return 0
	}
	return l.q[0].f.ReceivedAt
}

func (ra *routeActor) answerIdle() {
	if ra.inflight > 0 || len(ra.respond) == 0 {
		return
	}
	for _, p := range ra.respond {
		ra.sys.root.Send(p, true)
	}
	ra.respond = nil
}

// page loads undelivered records from the store until the memory budget is reached.
func (ra *routeActor) page() {
	complete := true
	err := ra.sys.opts.Journal.Pending(ra.r.ID, ra.cursor, func(seg *store.Segment, pos []uint32) bool {
		ra.loadPositions(seg, pos)
		ra.cursor = seg.ID
		if ra.queued >= ra.sys.opts.MaxQueued {
			complete = false
			return false
		}
		return true
	})
	if err != nil {
		ra.sys.log.Error("read pending records", "route", ra.r.Name, "err", err)
		ra.schedule(time.Now().Add(time.Second))
		return
	}
	ra.spill = !complete
}

func (ra *routeActor) loadSegment(seg *store.Segment) {
	now := time.Now()
	for fi, f := range seg.Frames {
		if !hasRoute(f.Routes, ra.r.ID) {
			continue
		}
		l := ra.laneFor(f)
		for ri := range f.Records {
			ra.enqueue(l, f, ri, store.Ref{Seg: seg.ID, Pos: seg.Pos(fi, ri)}, now)
		}
	}
	ra.setGauge()
}

// loadPositions enqueues the records at the given sorted positions of seg.
func (ra *routeActor) loadPositions(seg *store.Segment, pos []uint32) {
	now := time.Now()
	fi, lfi := 0, -1
	var l *lane
	for _, p := range pos {
		for fi < len(seg.Frames) && seg.Pos(fi, 0)+uint32(len(seg.Frames[fi].Records)) <= p {
			fi++
		}
		if fi == len(seg.Frames) {
			break
		}
		if fi != lfi {
			l, lfi = ra.laneFor(seg.Frames[fi]), fi
		}
		ri := int(p - seg.Pos(fi, 0))
		ra.enqueue(l, seg.Frames[fi], ri, store.Ref{Seg: seg.ID, Pos: p}, now)
	}
	ra.setGauge()
}

func hasRoute(ids []uint16, id uint16) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func (ra *routeActor) enqueue(l *lane, f *store.Frame, ri int, ref store.Ref, now time.Time) {
	if len(l.q) == 0 && !l.busy {
		l.since = now
	}
	// The format's own estimate (an upper bound for envelope).
	m := format.Message{Device: f.Device, Serial: f.Serial, IMEI: f.IMEI, ICCID: f.ICCID, Seq: f.Seq, Index: ri,
		ReceivedAt: f.ReceivedAt, Data: f.Records[ri]}
	size := int32(ra.r.Format.SizeHint(&m))
	l.q = append(l.q, item{f: f, rec: uint16(ri), size: size, ref: ref})
	l.bytes += int(size)
	ra.queued++
}

// laneFor returns the lane of a frame: its resolved destination (URL and header values) and, so
// that one destination can take Concurrency batches at once without reordering any device, a
// shard chosen by a hash of the device identity.
func (ra *routeActor) laneFor(f *store.Frame) *lane {
	k := ra.key[:0]
	if ra.r.Concurrency > 1 {
		k = append(k, byte(shard(f.Device, ra.r.Concurrency)), byte(shard(f.Device, ra.r.Concurrency)>>8))
	}
	if !ra.staticKey {
		ra.vals = ra.sys.values(f)
		k = ra.r.URL.Append(k, &ra.vals)
		for _, h := range ra.r.Headers {
			k = append(k, '\n')
			k = h.Value.Append(k, &ra.vals)
		}
	}
	ra.key = k
	if l := ra.lanes[string(k)]; l != nil {
		return l
	}
	return ra.newLane(string(k), f)
}

// shard maps a device to one of n shards (FNV-1a).
func shard(device string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(device); i++ {
		h ^= uint32(device[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

func (ra *routeActor) newLane(key string, f *store.Frame) *lane {
	v := ra.sys.values(f)
	l := &lane{url: string(ra.r.URL.Append(nil, &v))}
	for _, h := range ra.r.Headers {
		l.headers = append(l.headers, [2]string{h.Name, string(h.Value.Append(nil, &v))})
	}
	ra.lanes[key] = l
	return l
}

// pump starts batches on ready lanes while the route's concurrency allows, and arms the linger
// timer for the lanes still filling.
func (ra *routeActor) pump() {
	if ra.draining {
		return
	}
	now := time.Now()
	var next time.Time
	for key, l := range ra.lanes {
		if ra.inflight-ra.waiting >= ra.r.Concurrency {
			return // batchDone or waitMsg will pump again
		}
		switch {
		case l.ready(ra.r, now):
			ra.dispatch(l)
		case len(l.q) == 0 && !l.busy:
			delete(ra.lanes, key)
		case !l.busy:
			if at := l.since.Add(ra.r.Linger); next.IsZero() || at.Before(next) {
				next = at
			}
		}
	}
	if !next.IsZero() {
		ra.schedule(next)
	}
}

func (ra *routeActor) schedule(at time.Time) {
	if !ra.timerAt.IsZero() && !at.Before(ra.timerAt) {
		return
	}
	ra.timerAt = at
	self, root := ra.self, ra.sys.root
	time.AfterFunc(time.Until(at), func() { root.Send(self, tickMsg{}) })
}

func (ra *routeActor) dispatch(l *lane) {
	n, size := 0, 2 // the array's brackets
	for n < len(l.q) && n < ra.r.MaxMessages {
		s := int(l.q[n].size)
		if n > 0 && size+s+1 > ra.r.MaxBytes {
			break
		}
		size += s + 1
		l.bytes -= s
		n++
	}
	items := make([]item, n)
	copy(items, l.q)
	l.q = l.q[n:]
	l.busy = true
	l.flying = items[0].f.ReceivedAt
	for _, it := range items[1:] {
		l.flying = min(l.flying, it.f.ReceivedAt)
	}
	ra.inflight++

	sys, r, self := ra.sys, ra.r, ra.self
	req := &deliver.Request{Method: r.Method, URL: l.url, Header: l.headers, Timeout: r.Timeout, Slots: ra.slots}
	if r.Compress != nil {
		req.Header = append(l.headers[:len(l.headers):len(l.headers)], [2]string{"Content-Encoding", r.Compress.Encoding()})
	}
	sys.wg.Add(1)
	go func() {
		defer sys.wg.Done()
		b := builders.get()
		defer builders.put(b)
		b.Reset(r.Format)
		var zbuf *[]byte
		if r.Compress != nil {
			zbuf = compressBufs.Get().(*[]byte)
			defer compressBufs.Put(zbuf)
		}
		build := func(attempt int, req *deliver.Request) error {
			if attempt > 0 {
				sys.root.Send(self, &waitMsg{lane: l, on: false})
			}
			b.Reset(r.Format)
			var m format.Message
			for i := range items {
				it := &items[i]
				m = format.Message{Device: it.f.Device, Serial: it.f.Serial, IMEI: it.f.IMEI, ICCID: it.f.ICCID,
					Seq: it.f.Seq, Index: int(it.rec), ReceivedAt: it.f.ReceivedAt, Attempt: attempt, Data: it.f.Records[it.rec]}
				if md := sys.meta(it.f.Device); md != nil {
					m.Custom1, m.Custom2, m.Custom3 = md.Custom1, md.Custom2, md.Custom3
					m.Tags, m.Groups, m.Account = md.Tags, md.Groups, md.Account
				}
				b.Add(&m)
			}
			req.Body = b.Bytes()
			if r.Object { // one message: its rendering without the array's brackets
				req.Body = req.Body[1 : len(req.Body)-1]
			}
			if zbuf != nil {
				*zbuf = r.Compress.Append((*zbuf)[:0], req.Body)
				req.Body = *zbuf
			}
			return nil
		}
		observe := sys.opts.Metrics.observe(r.Name, r.Policy, len(items))
		onResult := func(attempt int, res deliver.Result) {
			if observe != nil {
				observe(attempt, res)
			}
			if res.Err != nil || !r.Policy.Succeeded(res.Status) {
				// It may give up instead of waiting; batchDone clears the mark then.
				sys.root.Send(self, &waitMsg{lane: l, on: true})
			}
		}
		_, err := sys.opts.Send(sys.ctx, r.Policy, req, build, onResult)
		sys.root.Send(self, &batchDone{lane: l, items: items, err: err})
	}()
}

// compressBufs recycles compressed request bodies between deliveries.
var compressBufs = sync.Pool{New: func() any { return new([]byte) }}

func (ra *routeActor) done(m *batchDone) {
	ra.inflight--
	l := m.lane
	if l.waiting {
		ra.waiting--
	}
	l.busy, l.flying, l.waiting = false, 0, false
	if m.err != nil {
		// Only shutdown ends a delivery unsuccessfully; the records stay in the store.
		if !errors.Is(m.err, ra.sys.ctx.Err()) {
			ra.sys.log.Warn("delivery ended", "route", ra.r.Name, "err", m.err)
		}
		l.q = append(m.items, l.q...)
		for _, it := range m.items {
			l.bytes += int(it.size)
		}
		return
	}
	refs := make([]store.Ref, len(m.items))
	for i := range m.items {
		refs[i] = m.items[i].ref
	}
	ra.sys.opts.Journal.MarkDelivered(ra.r.ID, refs)
	ra.queued -= len(m.items)
	if len(l.q) > 0 {
		l.since = time.Now().Add(-ra.r.Linger) // backlog: the rest is due now
	}
	ra.sys.opts.Metrics.delivered(ra.r.Name, len(m.items))
	ra.setGauge()
}

func (ra *routeActor) setGauge() { ra.sys.opts.Metrics.queued(ra.r.Name, ra.queued) }
