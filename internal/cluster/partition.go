package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// A partition's delivery while this node owns it (a run): an ordered consumer on the
// partition's subjects from its cursor on, each fetched batch handed out as one store.Segment,
// and the per-route progress written back as the partition's cursor record.
//
// The cursor record (cursors bucket, key p<n>) says, per route, the last journal sequence that
// route is done with (delivered or dead-lettered) — done meaning every message at or below it —
// as a floor for every route plus the routes ahead of it; and how far the owner had fetched, so
// the next owner counts what it hands out again as redelivered. Each owner only ever writes
// what it knows done, so a record is never ahead of the truth whoever wrote it last: a takeover
// redelivers (at least once) and never skips. Order holds by construction: a run starts at the
// lowest cursor and hands out in sequence order, and the route actors keep a device's records
// in order per lane.

// Partition states, guarded by Queues.mu.
const (
	partFree      = iota // not held by this node
	partOwned            // held: fetching and handing out
	partReleasing        // held, no longer won: not fetching, waiting for what is out, then released
	partHanding          // held, writing its last cursors and deleting its lease (not renewed)
)

// partition is one partition of the journal as this node sees it.
type partition struct {
	id     int
	key    string // in the leases and cursors buckets
	filter string // its journal subjects

	// Guarded by Queues.mu.
	state     int
	rev       uint64 // the lease's revision this node wrote last
	renewedAt time.Time
	run       *partRun // while held
}

// cursorRecord is a partition's cursor record, as JSON in the cursors bucket.
type cursorRecord struct {
	// Floor: every route is done with every message at or below it.
	Floor uint64 `json:"floor"`
	// Routes ahead of Floor: route ID → its cursor. A route not listed is at Floor.
	Routes map[uint16]uint64 `json:"routes,omitempty"`
	// Fetched is how far the owner that wrote it had handed messages out.
	Fetched uint64 `json:"fetched"`
}

// partRun is one ownership of a partition by this node: from the take to the release or loss.
type partRun struct {
	p      *partition
	ctx    context.Context // ended when fetching stops
	cancel context.CancelFunc
	done   chan struct{} // closed when its fetching goroutine ended

	// Guarded by Queues.mu.
	ended     bool
	loaded    cursorRecord // the record it started from (ok: loaded)
	ok        bool
	fetched   uint64          // the last sequence fetched (handed out or skipped)
	fetchedAt time.Time       // when that message was stored
	window    []*pmsg         // messages handed out not yet done by every route, in sequence order
	segs      []*heldSeg      // its segments not yet done
	seen      map[uint16]bool // the routes it handed messages out to
	undone    int             // records handed out not yet done, per route (ack pending)
	pending   uint64          // the consumer's messages after fetched
	dirty     bool            // progress not written yet
	samples   []sample        // (sequence, stored at) once a second, for purges
	purged    uint64          // messages below it purged
	lastPurg  time.Time
}

type sample struct {
	seq uint64
	at  time.Time
}

// pmsg is one journal message handed out: the routes it went to and which of its records each
// route is done with.
type pmsg struct {
	seq    uint64
	nrec   int
	left   int // routes not done
	routes []rtrack
}

type rtrack struct {
	route uint16
	left  int      // records not done
	done  []uint64 // bitmap of records done
}

// heldSeg is a segment handed out, kept until every route is done with all its records.
type heldSeg struct {
	seg  *store.Segment
	run  *partRun
	msgs []*pmsg // per frame
	left int     // frames not done
	gone bool    // done, or its run ended
}

// cursorOf returns route's cursor as the run's loaded record says.
func (r *partRun) cursorOf(route uint16) uint64 {
	if c, ok := r.loaded.Routes[route]; ok {
		return c
	}
	return r.loaded.Floor
}

// startRun starts delivering p (held). q.mu is held.
func (q *Queues) startRun(p *partition) *partRun {
	run := &partRun{p: p, done: make(chan struct{}), seen: make(map[uint16]bool)}
	run.ctx, run.cancel = context.WithCancel(q.ctx)
	q.wg.Add(1)
	go q.fetch(run)
	return run
}

// fetch is a run's goroutine: it reads the cursor record, then hands out the partition's
// messages from it on until the run's context ends.
func (q *Queues) fetch(run *partRun) {
	defer q.wg.Done()
	defer close(run.done)
	ctx := run.ctx
	rec, err := retryForever(ctx, func(ctx context.Context) (cursorRecord, error) {
		var rec cursorRecord
		e, err := q.cursors.Get(ctx, run.p.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return rec, nil
		}
		if err != nil {
			return rec, err
		}
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			q.log.Error("partition cursor record unreadable; starting from the journal's start",
				"partition", run.p.id, "err", err)
			return cursorRecord{}, nil
		}
		return rec, nil
	})
	if err != nil {
		return // ended
	}
	q.mu.Lock()
	run.loaded, run.ok, run.fetched = rec, true, rec.Floor
	q.mu.Unlock()
	for ctx.Err() == nil {
		err := q.consume(ctx, run)
		if ctx.Err() != nil {
			return
		}
		q.warn("consume partition", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// consume hands out the partition's messages after run.fetched through one ordered consumer,
// until ctx ends or the consumer fails for good.
func (q *Queues) consume(ctx context.Context, run *partRun) error {
	q.mu.Lock()
	start := run.fetched + 1
	q.mu.Unlock()
	cons, err := retryForever(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return q.journal.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects:    []string{run.p.filter},
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       start,
			InactiveThreshold: 30 * time.Second,
			// The client's own resets of a failed consumer retry without end by default,
			// inside Next and deaf to its context (nats.go 1.56): after a few, Next fails and
			// fetch makes a new consumer, as it does for any failure.
			MaxResetAttempts: 3,
		})
	})
	if err != nil {
		return err
	}
	defer func() {
		// An ordered consumer is ephemeral and would go after its inactive threshold; gone
		// at once, it stops holding the server's memory now.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = q.journal.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	// Heartbeats every 500 ms (the client's least): a consumer whose NATS node is gone, or
	// whose first pull request was lost (NATS clusters with pooled routes lose one now and
	// then: README "Cluster mode"), is made again after two are missed. The default, 5 s, held
	// a partition for 10 s after a node's loss.
	it, err := cons.Messages(jetstream.PullMaxMessages(fetchBatch), jetstream.PullHeartbeat(consumerHeartbeat))
	if err != nil {
		return err
	}
	defer it.Stop()
	// Stopped when ctx ends, from another goroutine: a reset in progress inside Next does not
	// watch ctx, only the iterator's stop.
	defer context.AfterFunc(ctx, it.Stop)()
	batch := make([]jetstream.Msg, 0, fetchBatch)
	for {
		room, err := q.waitRoom(ctx)
		if err != nil {
			return err
		}
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		batch = append(batch[:0], m)
		for len(batch) < min(fetchBatch, room) {
			m, err := it.Next(jetstream.NextMaxWait(coalesce))
			if err != nil {
				break // nothing more right now (nats.ErrTimeout), or the next Next says why
			}
			batch = append(batch, m)
		}
		q.handOut(run, batch)
		clear(batch)
	}
}

// consumerHeartbeat is the partition consumers' idle heartbeat (see consume); fetchBatch is
// the most messages of one segment (and the consumer's read-ahead); coalesce is how long a
// batch waits for one more message before it is handed out.
const (
	consumerHeartbeat = 500 * time.Millisecond
	fetchBatch        = 256
	coalesce          = 500 * time.Microsecond
)

// waitRoom waits while the records handed out and not done reach MaxResident, and returns
// the room left: the most messages of the next batch. (Partitions fetching at the same moment,
// and frames of several records, may overshoot it by a batch.)
func (q *Queues) waitRoom(ctx context.Context) (int, error) {
	for {
		q.mu.Lock()
		if room := q.opts.MaxResident - q.resident; room > 0 {
			q.mu.Unlock()
			return room, nil
		}
		ch := q.room
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		}
	}
}

// handOut turns one fetched batch into a segment: each frame's routes reduced to the routes
// this node runs that are not done with it, frames left without routes skipped; the segment is
// kept until every route is done with it and handed to onCommit.
func (q *Queues) handOut(run *partRun, msgs []jetstream.Msg) {
	runs := q.routeSet()
	type fetched struct {
		seq     uint64
		pending uint64
		at      time.Time
		f       *store.Frame
	}
	in := make([]fetched, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			q.warn("journal message metadata", err)
			continue
		}
		f, err := DecodeFrame(m.Data())
		if err != nil {
			// Nothing to deliver: it counts as done (the cursor passes it).
			q.log.Error("journal message undecodable; skipped", "partition", run.p.id, "seq", md.Sequence.Stream, "err", err)
			f = nil
		}
		in = append(in, fetched{seq: md.Sequence.Stream, pending: md.NumPending, at: md.Timestamp, f: f})
	}
	if len(in) == 0 {
		return
	}
	if runs != nil {
		frames := make([]*store.Frame, len(in))
		for i, x := range in {
			frames[i] = x.f
		}
		runs = q.awaitRoutes(run.ctx, frames, runs)
	}
	var late []lateDiscard
	q.commitMu.Lock()
	defer q.commitMu.Unlock()
	q.mu.Lock()
	if run.ended || q.stopped {
		q.mu.Unlock()
		return
	}
	var frames []*store.Frame
	var pms []*pmsg
	redelivered := 0
	for _, x := range in {
		if x.seq <= run.fetched {
			continue // the ordered consumer never repeats; a defence all the same
		}
		run.fetched, run.fetchedAt, run.pending, run.dirty = x.seq, x.at, x.pending, true
		if n := len(run.samples); n == 0 || x.at.Sub(run.samples[n-1].at) >= time.Second {
			run.samples = append(run.samples, sample{seq: x.seq, at: x.at})
		}
		f := x.f
		if f == nil || len(f.Records) == 0 {
			continue
		}
		var keep []uint16
		for _, r := range f.Routes {
			switch {
			case runs != nil && !runs[r]:
			case x.seq <= run.cursorOf(r):
			case q.discarded[r] != nil:
				late = append(late, lateDiscard{fn: q.discarded[r], n: len(f.Records)})
			default:
				keep = append(keep, r)
			}
		}
		if len(keep) == 0 {
			continue
		}
		f.Routes = keep
		pm := &pmsg{seq: x.seq, nrec: len(f.Records), left: len(keep), routes: make([]rtrack, len(keep))}
		for i, r := range keep {
			pm.routes[i] = rtrack{route: r, left: pm.nrec, done: make([]uint64, (pm.nrec+63)/64)}
			run.seen[r] = true
		}
		if x.seq <= run.loaded.Fetched {
			redelivered++
		}
		frames = append(frames, f)
		pms = append(pms, pm)
		run.window = append(run.window, pm)
		run.undone += pm.nrec * len(keep)
		q.resident += pm.nrec
	}
	var seg *store.Segment
	if len(frames) > 0 {
		q.nextSeg++
		seg = store.NewSegment(q.nextSeg, frames)
		h := &heldSeg{seg: seg, run: run, msgs: pms, left: len(pms)}
		q.compactLocked()
		q.segs[seg.ID] = h
		q.order = append(q.order, h)
		run.segs = append(run.segs, h)
	}
	q.trimLocked(run)
	q.mu.Unlock()
	part := strconv.Itoa(run.p.id)
	if redelivered > 0 {
		q.metrics.redelivered.WithLabelValues(part).Add(float64(redelivered))
	}
	for _, l := range late {
		l.fn(l.n)
	}
	if seg != nil && q.onCommit != nil {
		q.onCommit(seg)
	}
}

type lateDiscard struct {
	fn func(int)
	n  int
}

// awaitRoutes gives a route that frames go to and this node does not run unknownWait to
// appear (a route created through another node reaches this one's registry a moment later,
// and the journal may hold its frames first) before it counts as deleted: its records are
// then done here without delivery. It returns the routes run once the wait is over.
func (q *Queues) awaitRoutes(ctx context.Context, frames []*store.Frame, runs map[uint16]bool) map[uint16]bool {
	for {
		now := time.Now()
		wait := false
		q.mu.Lock()
		for r := range q.unknown {
			if runs[r] {
				delete(q.unknown, r)
			}
		}
		for _, f := range frames {
			if f == nil {
				continue
			}
			for _, r := range f.Routes {
				if runs[r] {
					continue
				}
				since, ok := q.unknown[r]
				if !ok {
					since = now
					q.unknown[r] = now
				}
				wait = wait || now.Sub(since) < unknownWait
			}
		}
		q.mu.Unlock()
		if !wait {
			return runs
		}
		select {
		case <-ctx.Done():
			return runs // the run ended: handOut hands nothing out
		case <-time.After(50 * time.Millisecond):
		}
		runs = q.routeSet()
	}
}

// unknownWait is how long a partition waits for a route its frames go to and this node does
// not run (yet) before it counts as deleted.
const unknownWait = 5 * time.Second

// routeSet returns the routes this node runs (nil: every route).
func (q *Queues) routeSet() map[uint16]bool {
	if q.opts.Routes == nil {
		return nil
	}
	ids := q.opts.Routes()
	set := make(map[uint16]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set
}

// markLocked records that route is done with record rec of h's frame fi; repeated marks and
// routes the frame does not go to are ignored. q.mu is held.
func (q *Queues) markLocked(h *heldSeg, fi, rec int, route uint16) {
	pm := h.msgs[fi]
	for i := range pm.routes {
		rt := &pm.routes[i]
		if rt.route != route {
			continue
		}
		w, b := rec/64, uint64(1)<<(rec%64)
		if rt.done[w]&b != 0 {
			return
		}
		rt.done[w] |= b
		rt.left--
		h.run.undone--
		if rt.left > 0 {
			return
		}
		h.run.dirty = true
		if pm.left--; pm.left > 0 {
			return
		}
		q.freeLocked(pm.nrec)
		if h.left--; h.left == 0 {
			q.dropSegLocked(h)
		}
		return
	}
}

// freeLocked takes n records off the resident count, waking fetching below MaxResident.
func (q *Queues) freeLocked(n int) {
	was := q.resident
	q.resident -= n
	if was >= q.opts.MaxResident && q.resident < q.opts.MaxResident {
		close(q.room)
		q.room = make(chan struct{})
	}
}

// dropSegLocked forgets h: done, or its run ended.
func (q *Queues) dropSegLocked(h *heldSeg) {
	if h.gone {
		return
	}
	h.gone = true
	delete(q.segs, h.seg.ID)
	q.gone++
}

// compactLocked drops the gone segments from q.order once they are half of it. Only handOut
// calls it: no one ranges over q.order then.
func (q *Queues) compactLocked() {
	if q.gone <= 64 || q.gone <= len(q.order)/2 {
		return
	}
	live := q.order[:0]
	for _, x := range q.order {
		if !x.gone {
			live = append(live, x)
		}
	}
	clear(q.order[len(live):])
	q.order, q.gone = live, 0
}

// trimLocked drops the done messages at the front of run's window, and its done segments from
// its list.
func (q *Queues) trimLocked(run *partRun) {
	n := 0
	for n < len(run.window) && run.window[n].left == 0 {
		n++
	}
	if n > 0 {
		clear(run.window[:n])
		run.window = run.window[n:]
	}
	n = 0
	for n < len(run.segs) && run.segs[n].gone {
		n++
	}
	if n > 0 {
		clear(run.segs[:n])
		run.segs = run.segs[n:]
	}
}

// recordLocked returns run's cursor record as of now.
func (q *Queues) recordLocked(run *partRun) cursorRecord {
	q.trimLocked(run)
	rec := cursorRecord{Floor: run.fetched, Fetched: run.fetched}
	if len(run.window) > 0 {
		rec.Floor = run.window[0].seq - 1
	}
	first := make(map[uint16]uint64)
	for _, pm := range run.window {
		for _, rt := range pm.routes {
			if rt.left > 0 && first[rt.route] == 0 {
				first[rt.route] = pm.seq
			}
		}
	}
	set := func(route uint16, c uint64) {
		c = max(c, run.cursorOf(route))
		if c > rec.Floor {
			if rec.Routes == nil {
				rec.Routes = make(map[uint16]uint64)
			}
			rec.Routes[route] = c
		}
	}
	for r, s := range first {
		set(r, s-1)
	}
	// The routes without undone messages are done up to what was fetched; those that were
	// ahead of it when the run started stay ahead.
	for r := range run.seen {
		if _, ok := first[r]; !ok {
			set(r, run.fetched)
		}
	}
	for r := range run.loaded.Routes {
		if _, ok := first[r]; !ok {
			set(r, run.fetched)
		}
	}
	if rec.Floor < run.loaded.Floor {
		rec.Floor = run.loaded.Floor // not fetched up to it yet
	}
	if rec.Fetched < run.loaded.Fetched {
		rec.Fetched = run.loaded.Fetched
	}
	return rec
}

// endRunLocked ends run: fetching stops, its segments are forgotten (what the route actors
// still hold of them is delivered, its marks ignored: the next owner delivers them again from
// the cursor), and what it held leaves the resident count.
func (q *Queues) endRunLocked(run *partRun) {
	if run == nil || run.ended {
		return
	}
	run.ended = true
	run.cancel()
	for _, pm := range run.window {
		if pm.left > 0 {
			q.freeLocked(pm.nrec)
		}
	}
	for _, h := range run.segs {
		q.dropSegLocked(h)
	}
	run.window, run.segs, run.undone = nil, nil, 0
	part := strconv.Itoa(run.p.id)
	q.metrics.ackPending.WithLabelValues(part).Set(0)
	q.metrics.pending.WithLabelValues(part).Set(0)
}

// release hands p back: fetching stops, what is out gets until releaseWait to be done, then
// its cursors are written and its lease deleted. Run in its own goroutine.
func (q *Queues) release(ctx context.Context, p *partition, run *partRun) {
	defer q.wg.Done()
	run.cancel()
	select {
	case <-run.done:
	case <-ctx.Done():
		return // Close hands it back
	}
	deadline := time.Now().Add(q.releaseWait())
	for {
		q.mu.Lock()
		q.trimLocked(run)
		out := len(run.window)
		q.mu.Unlock()
		if out == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	q.mu.Lock()
	if p.run != run || p.state != partReleasing || q.stopped {
		q.mu.Unlock()
		return // lost meanwhile, or Close hands it back
	}
	p.state = partHanding
	q.mu.Unlock()
	// Not under ctx: a Close beginning now waits for the hand-back rather than leaving the
	// lease to expire.
	hctx, cancel := context.WithTimeout(context.Background(), 2*attemptTimeout)
	q.handBack(hctx, p)
	cancel()
	q.announce()
}

// releaseWait bounds how long a release waits for the records out to be done.
func (q *Queues) releaseWait() time.Duration { return q.opts.Lease }

// handBack writes the cursors of p (held, not renewed any more) and deletes its lease.
func (q *Queues) handBack(ctx context.Context, p *partition) {
	q.mu.Lock()
	run, rev := p.run, p.rev
	var rec cursorRecord
	write := run != nil && run.ok
	if write {
		rec = q.recordLocked(run)
	}
	q.endRunLocked(run)
	q.mu.Unlock()
	if write {
		if err := q.writeCursor(ctx, p, rec); err != nil {
			q.log.Warn("write partition cursors at release; its next owner delivers again from the last ones written",
				"partition", p.id, "err", err)
		}
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	err := q.leases.Delete(actx, p.key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// A renewal of ours that was on its way when the release began moved the revision:
		// still ours, the lease goes now rather than when it expires.
		if e, gerr := q.leases.Get(actx, p.key); gerr == nil && string(e.Value()) == q.opts.Node {
			err = q.leases.Delete(actx, p.key, jetstream.LastRevision(e.Revision()))
		}
	}
	cancel()
	if err != nil {
		q.log.Warn("delete partition lease; it expires by itself", "partition", p.id, "err", err)
	}
	q.mu.Lock()
	p.state, p.run = partFree, nil
	q.mu.Unlock()
	q.metrics.owned.WithLabelValues(strconv.Itoa(p.id)).Set(0)
}

func (q *Queues) writeCursor(ctx context.Context, p *partition, rec cursorRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	_, err = q.cursors.Put(actx, p.key, b)
	return err
}

// cursorLoop writes the cursors of the partitions held every cursorEvery when they moved,
// purges what every route is done with, and updates the partitions' gauges.
func (q *Queues) cursorLoop(ctx context.Context) {
	defer q.wg.Done()
	tick := time.NewTicker(cursorEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, p := range q.parts {
			q.mu.Lock()
			run := p.run
			if run == nil || run.ended || !run.ok || p.state != partOwned && p.state != partReleasing {
				q.mu.Unlock()
				continue
			}
			part := strconv.Itoa(p.id)
			q.metrics.ackPending.WithLabelValues(part).Set(float64(run.undone))
			q.metrics.pending.WithLabelValues(part).Set(float64(run.pending + uint64(len(run.window))))
			dirty := run.dirty
			run.dirty = false
			var rec cursorRecord
			if dirty {
				rec = q.recordLocked(run)
			}
			purgeTo := uint64(0)
			if time.Since(run.lastPurg) >= purgeEvery {
				run.lastPurg = time.Now()
				purgeTo = q.purgePointLocked(run)
			}
			q.mu.Unlock()
			if dirty {
				if err := q.writeCursor(ctx, p, rec); err != nil {
					if ctx.Err() != nil {
						return
					}
					q.warn("write partition cursors", err)
					q.mu.Lock()
					run.dirty = true
					q.mu.Unlock()
				}
			}
			if purgeTo > 0 {
				q.purge(ctx, run, purgeTo)
			}
		}
	}
}

// Cursor writes and purges: how often.
const cursorEvery = 200 * time.Millisecond

// purgeAge is the least time the journal keeps a message every route is done with: the
// ingest's devices bucket holds each device's last seq within a second or so, and a device's
// last message may go after that. An owner waits longer when the journal's duplicate window is
// longer (q.purgeAge): within it, the ingest's resent frames are answered as duplicates by
// their message IDs and the subject's last message answers LoadLastSeq. purgeEvery is how often
// an owner purges. (Variables for the tests; purgeExact makes purgeAge the wait, whatever the
// window.)
var (
	purgeAge   = time.Minute
	purgeEvery = 10 * time.Second
	purgeExact = false
)

// purgePointLocked returns the sequence below which run's partition may be purged (every route
// done, stored more than purgeAge ago), 0 if none beyond what was purged.
func (q *Queues) purgePointLocked(run *partRun) uint64 {
	q.trimLocked(run)
	floor := run.fetched
	if len(run.window) > 0 {
		floor = run.window[0].seq - 1
	}
	cut := time.Now().Add(-q.purgeAge)
	var to uint64
	n := 0
	for n < len(run.samples) && run.samples[n].at.Before(cut) && run.samples[n].seq <= floor {
		to = run.samples[n].seq + 1
		n++
	}
	if n > 0 {
		// Keep the last sample taken: the next one is a second after it.
		run.samples = append(run.samples[:0], run.samples[n-1:]...)
	}
	if floor == run.fetched && run.fetched > 0 && run.fetchedAt.Before(cut) {
		to = run.fetched + 1 // all done, the last one too
	}
	if to <= run.purged {
		return 0
	}
	return to
}

// purge deletes run's partition's messages below seq.
func (q *Queues) purge(ctx context.Context, run *partRun, seq uint64) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	err := q.journal.Purge(actx, jetstream.WithPurgeSubject(run.p.filter), jetstream.WithPurgeSequence(seq))
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			q.warn("purge partition", err)
		}
		return
	}
	q.mu.Lock()
	run.purged = max(run.purged, seq)
	q.mu.Unlock()
}

// retryForever runs fn until it succeeds or ctx ends, every failure tried again (a partition's
// reads wait out a NATS outage for as long as the partition is held).
func retryForever[T any](ctx context.Context, fn func(ctx context.Context) (T, error)) (T, error) {
	wait := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			if err == nil {
				return v, nil
			}
			return v, ctx.Err()
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}
