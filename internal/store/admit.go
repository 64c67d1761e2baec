package store

import "time"

// Ingest admission: new data yields to delivery while a healthy route falls behind.
//
// At full load the relay used to acknowledge ≈1.3× what it delivered: ingest and delivery share
// the CPU, and ingest (a read, a commit, an ACK per frame) won, so a backlog grew for as long as
// the fleet sent, and with it the memory of the routes' queues. The committer now holds the
// frames queued for the next commit while some route's backlog (records committed and not yet
// done) has grown by more than Options.IngestHold above the lowest it was since the route last
// became healthy (delivered something within healthyWithin): the endpoint is up and merely
// slower than ingest. Devices then wait for their ACKs (their windows fill, TCP flow control
// holds them) and the CPU goes to delivery until the growth is down to half the threshold. A
// route that delivers nothing (an endpoint down, a route disabled) never holds ingest, and the
// backlog it left behind is not held against it when it comes back (the lowest backlog is
// counted from then, and follows it down while it catches up): the store buffers outages, which
// is what it is for. A hold lasts at most maxHold at a time, after which one batch goes through
// whatever the counts say, so a wrong count can slow ingest but never stop it.

// routeFlow counts, since Open, the records a route got from commits and those it marked done.
// Guarded by Store.state. Backlogs found at Open are not counted: delivering them makes
// backlog() negative, which holds nothing.
type routeFlow struct {
	in, out   int64
	delivered time.Time // last MarkDelivered that marked something
	low       int64     // lowest backlog() since the route last became healthy
	healthy   bool      // low is valid
	holding   bool      // backlog() > low+IngestHold: holds until backlog() <= low+IngestHold/2
}

func (f *routeFlow) backlog() int64 { return f.in - f.out }

const (
	// healthyWithin: a route that marked records done this recently has an endpoint that works.
	healthyWithin = time.Second
	// maxHold bounds one hold; holdPoll is how often a hold rechecks without a wake-up.
	maxHold  = 100 * time.Millisecond
	holdPoll = 5 * time.Millisecond
)

// flowLocked returns route's counters, creating them.
func (s *Store) flowLocked(route uint16) *routeFlow {
	f := s.flows[route]
	if f == nil {
		f = &routeFlow{}
		s.flows[route] = f
	}
	return f
}

// countInLocked adds the records of the committed frames to their routes' counts.
func (s *Store) countInLocked(frames []*Frame) {
	if s.opts.IngestHold <= 0 {
		return
	}
	for _, f := range frames {
		for _, r := range f.Routes {
			s.flowLocked(r).in += int64(len(f.Records))
		}
	}
}

// countOutLocked counts n records of route newly marked done at now.
func (s *Store) countOutLocked(route uint16, n int, now time.Time) {
	if s.opts.IngestHold <= 0 || n == 0 {
		return
	}
	f := s.flowLocked(route)
	f.out += int64(n)
	f.delivered = now
}

// holdIngest reports whether the committer should leave the queued frames for now.
func (s *Store) holdIngest(now time.Time) bool {
	if s.opts.IngestHold <= 0 {
		return false
	}
	limit := int64(s.opts.IngestHold)
	s.state.Lock()
	defer s.state.Unlock()
	hold := false
	for _, f := range s.flows {
		if now.Sub(f.delivered) > healthyWithin {
			f.healthy, f.holding = false, false
			continue
		}
		b := f.backlog()
		if !f.healthy || b < f.low {
			f.low, f.healthy = b, true
		}
		switch {
		case b-f.low > limit:
			f.holding = true
		case b-f.low <= limit/2:
			f.holding = false
		}
		hold = hold || f.holding
	}
	return hold
}

// admit waits while ingest is held (see holdIngest), at most maxHold, doing the delivery-state
// work that MarkDelivered wakes it for meanwhile.
func (s *Store) admit() {
	start := time.Now()
	for now := start; now.Sub(start) < maxHold && s.holdIngest(now); now = time.Now() {
		s.mu.Lock()
		closed, queued := s.closed, len(s.queue) > 0
		s.mu.Unlock()
		if closed || !queued {
			return
		}
		if start == now {
			s.stats.ingestHolds.Add(1)
		}
		s.applyColdMarks()
		if !s.idle(false) {
			_ = s.commit() // c.batch is empty: delivery state only; a failure is retried by runCommitter
		}
		if s.c.hold == nil {
			s.c.hold = time.NewTimer(holdPoll)
		} else {
			s.c.hold.Reset(holdPoll)
		}
		select {
		case <-s.c.hold.C:
		case <-s.wake:
			s.c.hold.Stop()
		}
	}
}
