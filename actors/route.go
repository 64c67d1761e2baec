package actors

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Route is a compiled route as the route actor sees it: which records it takes, how it batches
// them into lanes, and the Deliverer that takes its batches to the endpoint.
type Route struct {
	ID          uint16
	Name        string
	URL         *fields.Template // resolved per device: the lane's destination
	Headers     []Header
	MaxMessages int
	MaxBytes    int
	Linger      time.Duration
	Concurrency int           // batches in flight at once, over all lanes (those waiting to retry aside)
	Format      format.Format // its size hints bound a batch's bytes; nil: envelope
	Filter      *Filter       // the devices it takes; nil: all
	// Account, if set, is the account the route belongs to: it takes only devices whose
	// metadata has this account (a device without metadata has none).
	Account string
	// Paused (enabled: false): the route takes no new frames and sends nothing; what it holds
	// stays, in memory and in the store, until it is resumed (PutRoute without Paused).
	Paused bool
	// Retention is how long a message may wait for delivery (from arrival, or from its replay);
	// older ones move to the dead-letter list. 0: no limit.
	Retention time.Duration
	// Notifications makes the route a notification route (notify.go): it takes the relay's
	// notification messages (of its Account's devices, or of all without one) and no device
	// data or command results.
	Notifications bool
	// Deliver renders, signs and sends the route's batches. Required.
	Deliver Deliverer
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
		lane      *lane
		items     []item
		out       Outcome
		cancelled bool // the route's generation ended while it ran (update, removal, shutdown)
	}
	deadDone struct { // a dead letter was written (err nil), or not
		lane     *lane
		items    []item
		finished []uint64 // replay entries it finished
		why      string
		err      error
	}
	replayMsg struct{} // dead letters were moved to the replay list
	pageMsg   struct{} // page on: the last page stopped at pageChunk records
	tickMsg   struct{}
	waitMsg   struct { // a lane's batch starts (on) or ends (off) waiting to retry
		lane *lane
		on   bool
	}
	drainMsg    struct{}
	idleQuery   struct{ done chan struct{} } // done is closed once no request is running after drainMsg (see answerIdle)
	oldestQuery struct{}                     // answered with the oldest pending record's receivedAt (Unix ms, 0: none)
	// updateMsg: the route's settings change to r (same ID and name). See routeActor.update.
	updateMsg struct{ r *Route }
	// removeQuery: the route is being removed; done is closed once nothing is in flight.
	removeQuery struct{ done chan struct{} }
)

// item is one record waiting in a lane.
type item struct {
	f      *store.Frame
	rec    uint16 // record index in its frame
	size   int32  // estimated rendered size
	ref    store.Ref
	replay uint64 // the replay entry it came from (then ref is zero), 0 if from the journal
	since  int64  // Unix ms its retention counts from: arrival, or replay
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
	waiting bool      // the batch in flight is waiting to retry (holds no request slot)
	hold    time.Time // after a failed dead-letter write: no batch before this
	flying  int64     // receivedAt (Unix ms) of the oldest record of the batch in flight
}

func (l *lane) ready(r *Route, now time.Time) bool {
	return !l.busy && len(l.q) > 0 && !now.Before(l.hold) &&
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

	metrics     *routeMetrics
	clock       Clock
	inflight    int // batches in flight
	waiting     int // of which waiting to retry
	draining    bool
	respond     []chan struct{} // idle queries waiting for in-flight batches to end: closed then
	replays     map[uint64]int  // replay entries in memory: records not yet delivered or dead again
	moreReplays bool            // replay entries left in the store for lack of memory
	timerAt     time.Time
	key         []byte
	vals        fields.Values
	staticKey   bool

	// The route's generation: its batches run under ctx (derived from the system's), which an
	// update or removal cancels. A new generation starts with every update.
	ctx      context.Context
	cancel   context.CancelFunc
	next     *Route          // an update waiting for the batches in flight to end
	removing []chan struct{} // removeQuery's waiting for the batches in flight to end
	removed  bool            // the route is being removed: it sends nothing more
}

func newRouteActor(s *System, r *Route) *routeActor {
	if r.Format == nil {
		r.Format, _ = format.Lookup(format.NameEnvelope, format.Options{})
	}
	ra := &routeActor{sys: s, r: r, lanes: make(map[string]*lane), spill: true, staticKey: staticKey(r),
		replays: make(map[uint64]int), metrics: s.opts.Metrics.route(r.Name), clock: s.clock}
	ra.ctx, ra.cancel = context.WithCancel(s.ctx)
	return ra
}

// staticKey reports whether r's lanes do not depend on the device: no dynamic fields in its URL
// and headers.
func staticKey(r *Route) bool {
	static := r.URL.Static()
	for _, h := range r.Headers {
		static = static && h.Value.Static()
	}
	return static
}

func (ra *routeActor) now() time.Time { return ra.clock.Now() }

func (ra *routeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ra.self = ctx.Self()
		ra.page() // recovery: whatever the store holds for this route
		ra.loadReplays()
		ra.pump()
	case *segmentMsg:
		if m.seg.ID > ra.cursor && !ra.spill {
			ra.loadSegment(m.seg)
			ra.cursor = m.seg.ID
			if ra.queued >= ra.sys.opts.MaxQueued {
				ra.spill = true
				// Newer segments stay in the store until page reads them back.
				ra.sys.opts.Journal.Spilled(ra.r.ID, ra.cursor)
			}
		}
		ra.pump()
	case *batchDone:
		ra.done(m)
		ra.settled()
		ra.refill()
		ra.pump()
		ra.answerIdle()
	case *deadDone:
		ra.deadDone(m)
		ra.settled()
		ra.refill()
		ra.pump()
		ra.answerIdle()
	case pageMsg:
		if ra.spill && !ra.draining && ra.queued < ra.sys.opts.MaxQueued {
			ra.page()
		}
		ra.pump()
	case replayMsg:
		if !ra.draining {
			ra.loadReplays()
		}
		ra.pump()
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
		ra.answerIdle()
	case tickMsg:
		ra.timerAt = time.Time{}
		ra.refill()
		ra.pump()
	case drainMsg:
		ra.draining = true
	case idleQuery:
		ra.respond = append(ra.respond, m.done)
		ra.answerIdle()
	case oldestQuery:
		ctx.Respond(ra.oldest())
	case *updateMsg:
		ra.next = m.r
		ra.cancel() // batches in flight end and come back to their lanes
		ra.settled()
		ra.pump()
	case *removeQuery:
		ra.removed = true
		ra.removing = append(ra.removing, m.done)
		ra.cancel()
		ra.settled()
	case *actor.Stopping:
		ra.cancel()
	}
}

// settled applies what waited for the batches in flight to end (waiting to retry included, and
// dead-letter writes): an update, or the answer to a removal.
func (ra *routeActor) settled() {
	if ra.inflight > 0 {
		return
	}
	if len(ra.removing) > 0 {
		for _, done := range ra.removing {
			close(done)
		}
		ra.removing = nil
		return
	}
	if ra.next != nil {
		ra.update()
	}
}

// update swaps the route's settings for ra.next once nothing is in flight: every queued record
// moves, in order, to its lane under the new settings (a device's records are all in one lane,
// so they stay in order in one new lane), with its size hint recomputed for the new format. The
// queue, replays and dead letters stay; a new generation starts.
func (ra *routeActor) update() {
	r := ra.next
	ra.next = nil
	if r.Format == nil {
		r.Format, _ = format.Lookup(format.NameEnvelope, format.Options{})
	}
	old := make([]*lane, 0, len(ra.lanes))
	for _, l := range ra.lanes {
		if len(l.q) > 0 {
			old = append(old, l)
		}
	}
	// Oldest lane first: should one device's records be in two lanes (its metadata changed
	// a dynamic field of the destination meanwhile), the older ones lead.
	slices.SortFunc(old, func(a, b *lane) int { return cmpRef(a.q[0].ref, b.q[0].ref) })
	ra.r, ra.staticKey = r, staticKey(r)
	ra.lanes = make(map[string]*lane)
	ra.ctx, ra.cancel = context.WithCancel(ra.sys.ctx)
	var m format.Message
	for _, ol := range old {
		for _, it := range ol.q {
			l := ra.laneFor(it.f)
			if len(l.q) == 0 || ol.since.Before(l.since) {
				l.since = ol.since
			}
			messageOf(it.f, int(it.rec), &m)
			it.size = int32(r.Format.SizeHint(&m))
			l.q = append(l.q, it)
			l.bytes += int(it.size)
		}
	}
	ra.timerAt = time.Time{} // the new lanes arm their own linger
}

func cmpRef(a, b store.Ref) int {
	if c := cmp.Compare(a.Seg, b.Seg); c != 0 {
		return c
	}
	return cmp.Compare(a.Pos, b.Pos)
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

// answerIdle answers the idle queries once no request or dead-letter write is running. Batches
// waiting to retry do not count: shutdown abandons them at once (their messages stay stored)
// rather than letting a backoff against a failing endpoint hold it for the whole grace.
func (ra *routeActor) answerIdle() {
	if ra.inflight-ra.waiting > 0 || len(ra.respond) == 0 {
		return
	}
	for _, done := range ra.respond {
		close(done)
	}
	ra.respond = nil
}

// refill pages records (and replay entries) left in the store back in once the memory queue
// has room.
func (ra *routeActor) refill() {
	if ra.draining || ra.removed || ra.queued >= ra.sys.opts.MaxQueued/2 {
		return
	}
	if ra.spill {
		ra.page()
	}
	if ra.moreReplays {
		ra.loadReplays()
	}
}

// loadReplays enqueues the route's replay entries that are not in memory yet, until the memory
// budget is reached. Their retention counts from now.
func (ra *routeActor) loadReplays() {
	now := ra.now()
	more := false
	err := ra.sys.opts.Journal.Replaying(ra.r.ID, func(d *store.DeadLetter) bool {
		if _, ok := ra.replays[d.ID]; ok {
			return true
		}
		if ra.queued >= ra.sys.opts.MaxQueued {
			more = true
			return false
		}
		ra.replays[d.ID] = len(d.Items)
		for _, it := range d.Items {
			ra.enqueue(ra.laneFor(it.Frame), item{f: it.Frame, rec: uint16(it.Record), replay: d.ID, since: now.UnixMilli()}, now)
		}
		return true
	})
	if err != nil {
		ra.sys.log.Error("read replayed dead letters", "route", ra.r.Name, "err", err)
		more = true
		ra.schedule(now.Add(time.Second))
	}
	ra.moreReplays = more
	ra.setGauge()
}

// page loads undelivered records from the store until the memory budget is reached, at most
// pageChunk at a time: with a long backlog (recovery at start-up) the first batches go out
// after the first chunk instead of after the whole queue was read, and the rest follows in
// pageMsg turns between deliveries.
func (ra *routeActor) page() {
	complete, more, loaded := true, false, 0
	err := ra.sys.opts.Journal.Pending(ra.r.ID, ra.cursor, func(seg *store.Segment, pos []uint32) bool {
		ra.loadPositions(seg, pos)
		ra.cursor = seg.ID
		loaded += len(pos)
		switch {
		case ra.queued >= ra.sys.opts.MaxQueued:
			complete = false
			return false
		case loaded >= pageChunk:
			complete, more = false, true
			return false
		}
		return true
	})
	if err != nil {
		ra.sys.log.Error("read pending records", "route", ra.r.Name, "err", err)
		ra.schedule(ra.now().Add(time.Second))
		return
	}
	ra.spill = !complete
	if more {
		ra.sys.root.Send(ra.self, pageMsg{})
	}
}

// pageChunk is how many records page reads in one actor turn.
const pageChunk = 16384

func (ra *routeActor) loadSegment(seg *store.Segment) {
	now := ra.now()
	for fi, f := range seg.Frames {
		if !hasRoute(f.Routes, ra.r.ID) {
			continue
		}
		l := ra.laneFor(f)
		for ri := range f.Records {
			ra.enqueue(l, item{f: f, rec: uint16(ri), ref: store.Ref{Seg: seg.ID, Pos: seg.Pos(fi, ri)}, since: f.ReceivedAt}, now)
		}
	}
	ra.setGauge()
}

// loadPositions enqueues the records at the given sorted positions of seg.
func (ra *routeActor) loadPositions(seg *store.Segment, pos []uint32) {
	now := ra.now()
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
		f := seg.Frames[fi]
		ra.enqueue(l, item{f: f, rec: uint16(p - seg.Pos(fi, 0)), ref: store.Ref{Seg: seg.ID, Pos: p}, since: f.ReceivedAt}, now)
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

func (ra *routeActor) enqueue(l *lane, it item, now time.Time) {
	if len(l.q) == 0 && !l.busy {
		l.since = now
	}
	// The format's own estimate (an upper bound for envelope).
	var m format.Message
	messageOf(it.f, int(it.rec), &m)
	it.size = int32(ra.r.Format.SizeHint(&m))
	l.q = append(l.q, it)
	l.bytes += int(it.size)
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
	if ra.draining || ra.r.Paused || ra.next != nil || ra.removed {
		return
	}
	now := ra.now()
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
	ra.clock.AfterFunc(at.Sub(ra.now()), func() { root.Send(self, tickMsg{}) })
}

func (ra *routeActor) dispatch(l *lane) {
	now := ra.now()
	if ra.r.Retention > 0 {
		// Messages past their retention leave without an attempt.
		cut := now.Add(-ra.r.Retention).UnixMilli()
		n := 0
		for n < len(l.q) && l.q[n].since < cut {
			n++
		}
		if n > 0 {
			dead := slices.Clone(l.q[:n])
			l.q = l.q[n:]
			for _, it := range dead {
				l.bytes -= int(it.size)
			}
			l.busy = true
			ra.inflight++
			ra.deadLetter(l, dead, 0, fmt.Sprintf("retention %s exceeded", ra.r.Retention), 0)
			return
		}
	}
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
	oldest := items[0].since
	for _, it := range items[1:] {
		l.flying = min(l.flying, it.f.ReceivedAt)
		oldest = min(oldest, it.since)
	}
	ra.inflight++

	b := &Batch{URL: l.url, Header: l.headers, ra: ra, r: ra.r, lane: l, items: items, oldest: oldest}
	sys, self, d, ctx := ra.sys, ra.self, ra.r.Deliver, ra.ctx
	sys.wg.Add(1)
	go func() {
		defer sys.wg.Done()
		out := d.Deliver(ctx, b)
		sys.root.Send(self, &batchDone{lane: l, items: items, out: out, cancelled: ctx.Err() != nil})
	}()
}

func (ra *routeActor) done(m *batchDone) {
	l := m.lane
	if l.waiting {
		ra.waiting--
	}
	l.flying, l.waiting = 0, false
	switch m.out.Result {
	case Delivered:
		ra.delivered(m.items)
		if len(l.q) > 0 {
			l.since = ra.now().Add(-ra.r.Linger) // backlog: the rest is due now
		}
	case GaveUp:
		why := "gave up"
		if m.out.Err != nil {
			why = m.out.Err.Error()
		}
		ra.deadLetter(l, m.items, m.out.Status, why, m.out.Attempts)
		return // the lane stays busy until the dead letter is written
	case Expired:
		// The expired messages leave; the others go back to the front of the lane.
		cut := ra.now().Add(-ra.r.Retention).UnixMilli()
		var dead, rest []item
		for _, it := range m.items {
			if it.since < cut {
				dead = append(dead, it)
			} else {
				rest = append(rest, it)
			}
		}
		ra.requeue(l, rest)
		why := fmt.Sprintf("retention %s exceeded after %d attempts", ra.r.Retention, m.out.Attempts)
		if m.out.Status != 0 {
			why += fmt.Sprintf(", last status %d", m.out.Status)
		}
		ra.deadLetter(l, dead, m.out.Status, why, m.out.Attempts)
		return
	default:
		// Only shutdown, an update or a removal ends a delivery otherwise; the records stay in
		// the store, and go back to the front of their lane.
		if !m.cancelled {
			ra.sys.log.Warn("delivery ended", "route", ra.r.Name, "err", m.out.Err)
		}
		ra.requeue(l, m.items)
	}
	ra.inflight--
	l.busy = false
}

// requeue puts items back at the front of l.
func (ra *routeActor) requeue(l *lane, items []item) {
	l.q = append(items, l.q...)
	for _, it := range items {
		l.bytes += int(it.size)
	}
}

// delivered records that the route's endpoint has items.
func (ra *routeActor) delivered(items []item) {
	refs := make([]store.Ref, 0, len(items))
	var finished []uint64
	for i := range items {
		if id := items[i].replay; id != 0 {
			if ra.replays[id]--; ra.replays[id] == 0 {
				finished = append(finished, id)
			}
			continue
		}
		refs = append(refs, items[i].ref)
	}
	ra.sys.opts.Journal.MarkDelivered(ra.r.ID, refs)
	if len(finished) > 0 {
		// Deleted before the entries leave the map, so a reload cannot deliver them twice.
		if err := ra.sys.opts.Journal.ReplayDone(ra.r.ID, finished); err != nil {
			ra.sys.log.Error("delete delivered replay entries; they will be delivered again after a restart",
				"route", ra.r.Name, "err", err)
		}
		for _, id := range finished {
			delete(ra.replays, id)
		}
	}
	ra.queued -= len(items)
	ra.metrics.deliveredN(len(items))
	ra.setGauge()
}

// deadLetter writes items, which lane l (busy, counted in flight) gave up on, to the route's
// dead-letter list; deadDone frees the lane.
func (ra *routeActor) deadLetter(l *lane, items []item, status int, why string, attempts int) {
	if len(items) == 0 {
		ra.inflight--
		l.busy = false
		return
	}
	d := &store.DeadLetter{Route: ra.r.ID, Status: status, Error: why, Attempts: attempts, At: ra.now().UnixMilli(),
		Items: make([]store.DeadItem, len(items))}
	left := make(map[uint64]int)
	for i, it := range items {
		d.Items[i] = store.DeadItem{Frame: it.f, Record: int(it.rec)}
		if it.replay != 0 {
			left[it.replay]++
		} else {
			d.Refs = append(d.Refs, it.ref)
		}
	}
	var finished []uint64
	for id, n := range left {
		if ra.replays[id] == n {
			finished = append(finished, id)
		}
	}
	sys, self := ra.sys, ra.self
	sys.wg.Add(1)
	go func() {
		defer sys.wg.Done()
		err := sys.opts.Journal.DeadLetter(d, finished)
		sys.root.Send(self, &deadDone{lane: l, items: items, finished: finished, why: why, err: err})
	}()
}

func (ra *routeActor) deadDone(m *deadDone) {
	l := m.lane
	ra.inflight--
	l.busy = false
	if m.err != nil {
		// Nothing was marked: the messages go back and are tried again in a while.
		ra.sys.log.Error("write dead letter; retrying", "route", ra.r.Name, "err", m.err)
		ra.requeue(l, m.items)
		l.hold = ra.now().Add(deadRetry)
		ra.schedule(l.hold)
		return
	}
	var later []uint64
	for _, it := range m.items {
		if it.replay != 0 {
			if ra.replays[it.replay]--; ra.replays[it.replay] == 0 && !slices.Contains(m.finished, it.replay) {
				later = append(later, it.replay) // finished meanwhile by a delivery in another lane
			}
		}
	}
	for _, id := range m.finished {
		delete(ra.replays, id)
	}
	if len(later) > 0 {
		if err := ra.sys.opts.Journal.ReplayDone(ra.r.ID, later); err != nil {
			ra.sys.log.Error("delete finished replay entries", "route", ra.r.Name, "err", err)
		}
		for _, id := range later {
			delete(ra.replays, id)
		}
	}
	ra.queued -= len(m.items)
	ra.metrics.deadN(len(m.items))
	ra.sys.log.Warn("messages moved to the dead-letter list (fleetrelay dlq list)", "route", ra.r.Name,
		"messages", len(m.items), "why", m.why)
	ra.setGauge()
}

// deadRetry is the wait before a failed dead-letter write is tried again.
const deadRetry = time.Second

func (ra *routeActor) setGauge() { ra.metrics.setQueued(ra.queued) }

// Messages that may reach a route actor after it stopped (at shutdown, or once the route was
// removed while it ran: a timer's tick, a commit's wake-up, the shutdown's own queries) are
// expected there: protoactor's dead-letter log leaves them out.
func (tickMsg) IgnoreDeadLetterLogging()     {}
func (pageMsg) IgnoreDeadLetterLogging()     {}
func (replayMsg) IgnoreDeadLetterLogging()   {}
func (drainMsg) IgnoreDeadLetterLogging()    {}
func (idleQuery) IgnoreDeadLetterLogging()   {}
func (oldestQuery) IgnoreDeadLetterLogging() {}
func (*segmentMsg) IgnoreDeadLetterLogging() {}
func (*batchDone) IgnoreDeadLetterLogging()  {}
func (*deadDone) IgnoreDeadLetterLogging()   {}
