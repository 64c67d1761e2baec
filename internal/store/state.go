package store

import (
	"slices"
	"sort"
)

// In-memory delivery tracking. Everything in this file is guarded by
// Store.state (see the lock notes on Store).

// segState tracks one live segment.
type segState struct {
	id       uint64
	nrec     uint32
	frames   []frameMeta
	routes   []routeTrack
	left     int  // routes with undone records
	bytes    int  // encoded size, for stats
	dirty    bool // some route bitmap changed since it was last persisted
	retiring bool // every route done; deletion queued or in flight
	evicting bool // chosen for eviction by the commit in flight (see resident.go)
	wasCold  bool // it was cold once: c/ keys may exist for it
}

// frameMeta is what the store keeps of a committed frame: enough to map a
// record position to its frame and to maintain the device watermark.
type frameMeta struct {
	// dev is the frame's device, nil for a command result (Frame.Result): a result
	// is outside the device's seq space, so it is neither pending in the device's
	// watermark nor a candidate for its checkpoint.
	dev       *deviceState
	seq       uint64
	base      uint32
	n         uint32
	routes    []uint16
	remaining uint32 // undone (record, route) pairs
	window    bool   // a windowed frame (Frame.Window; window.go)
}

func (f *frameMeta) hasRoute(route uint16) bool { return slices.Contains(f.routes, route) }

// routeTrack is the delivery progress of one route in one segment.
type routeTrack struct {
	route     uint16
	total     uint32 // records of the segment that go to this route
	done      uint32
	bits      []byte // done bitmap by position; nil until the first mark
	dirty     bool
	persisted bool // an r/ key exists for it
}

func (r *routeTrack) isSet(pos uint32) bool {
	return r.bits != nil && r.bits[pos>>3]&(1<<(pos&7)) != 0
}

// deviceState is the sequence state of one device.
type deviceState struct {
	name      string
	lastSeq   uint64
	delivered uint64
	// pending holds frames of resident segments not yet known to be done,
	// ordered by seq; entries before head are consumed. Done entries stay
	// until they reach the head.
	pending []*frameMeta
	head    int
	// cold counts the device's frames with undone records in cold segments
	// (see resident.go); coldLow is at most the lowest of their seqs: exact
	// when they went cold, a lower bound once some of them are back.
	cold    uint32
	coldLow uint64
	// win is the window of windowed seqs (window.go); nil until the device stores a windowed frame.
	win *window
}

func (d *deviceState) addPending(fm *frameMeta) {
	p := d.pending[d.head:]
	if len(p) == 0 || p[len(p)-1].seq <= fm.seq {
		d.pending = append(d.pending, fm)
		return
	}
	i := d.head + sort.Search(len(p), func(i int) bool { return p[i].seq > fm.seq })
	d.pending = slices.Insert(d.pending, i, fm)
}

// removePending drops fm from the pending list (its segment goes cold).
// Segments go cold newest first, so it searches from the end.
func (d *deviceState) removePending(fm *frameMeta) {
	for i := len(d.pending) - 1; i >= d.head; i-- {
		if d.pending[i] == fm {
			d.pending = slices.Delete(d.pending, i, i+1)
			return
		}
	}
}

// watermark computes the delivered watermark: one below the lowest seq still
// pending in a resident segment or cold, or the last stored seq when none
// is. It drops done frames from the head of the pending list.
func (d *deviceState) watermark() uint64 {
	for d.head < len(d.pending) && d.pending[d.head].remaining == 0 {
		d.pending[d.head] = nil
		d.head++
	}
	switch {
	case d.head == len(d.pending):
		d.pending, d.head = d.pending[:0], 0
	case d.head > 32 && d.head > len(d.pending)/2:
		n := copy(d.pending, d.pending[d.head:])
		clear(d.pending[n:])
		d.pending, d.head = d.pending[:n], 0
	}
	low, found := uint64(0), false
	if d.head < len(d.pending) {
		low, found = d.pending[d.head].seq, true
	}
	if d.cold > 0 && (!found || d.coldLow < low) {
		low, found = d.coldLow, true
	}
	switch {
	case !found:
		return d.lastSeq
	case low > 0:
		return low - 1
	}
	return 0
}

// device returns the state of a device, creating it.
func (s *Store) deviceLocked(name string) *deviceState {
	d := s.devices[name]
	if d == nil {
		d = &deviceState{name: name}
		s.devices[name] = d
		s.deviceBytes += int64(len(name) + checkpointEntryOverhead)
	}
	return d
}

// advanceLocked recomputes a device's watermark and queues OnDelivered when
// it moved forward. The watermark never moves backwards.
func (s *Store) advanceLocked(d *deviceState) {
	if s.loading {
		return
	}
	if w := d.watermark(); w > d.delivered {
		d.delivered = w
		s.notify.push(d.name, w)
	}
}

// registerLocked starts tracking a committed segment. Every frame must have at
// least one record and one route, with no duplicate routes. Result frames are
// tracked per route like any other but leave device state alone.
func (s *Store) registerLocked(id uint64, frames []*Frame, size int) *segState {
	seg := &segState{id: id, frames: make([]frameMeta, len(frames)), bytes: size}
	var pos uint32
	for i, f := range frames {
		fm := &seg.frames[i]
		n := uint32(len(f.Records))
		*fm = frameMeta{seq: f.Seq, base: pos, n: n, routes: f.Routes, remaining: n * uint32(len(f.Routes))}
		pos += n
		for _, r := range f.Routes {
			rt := seg.track(r)
			if rt == nil {
				seg.routes = append(seg.routes, routeTrack{route: r})
				rt = &seg.routes[len(seg.routes)-1]
			}
			rt.total += n
		}
		if f.unsequenced() {
			continue
		}
		d := s.deviceLocked(f.Device)
		fm.dev = d
		s.windowRegisterLocked(d, fm, f) // window.go: before lastSeq moves
		d.lastSeq = max(d.lastSeq, f.Seq)
		d.addPending(fm)
	}
	seg.nrec = pos
	seg.left = len(seg.routes)
	s.segs[id] = seg
	s.order.ReplaceOrInsert(id)
	s.liveBytes += int64(size)
	s.res.records += int64(pos)
	return seg
}

func (seg *segState) track(route uint16) *routeTrack {
	for i := range seg.routes {
		if seg.routes[i].route == route {
			return &seg.routes[i]
		}
	}
	return nil
}

// frameAt returns the frame holding record position pos (pos < seg.nrec).
func (seg *segState) frameAt(pos uint32) *frameMeta {
	i := sort.Search(len(seg.frames), func(i int) bool { return seg.frames[i].base > pos }) - 1
	return &seg.frames[i]
}

// markLocked marks one record of a segment done for a route. It reports
// whether anything changed.
func (s *Store) markLocked(seg *segState, rt *routeTrack, pos uint32) bool {
	return s.setLocked(seg, rt, pos, true)
}

// setLocked marks one record done for a route; dirty false applies a mark
// that is on disk already (a bitmap read back), which need not be written.
func (s *Store) setLocked(seg *segState, rt *routeTrack, pos uint32, dirty bool) bool {
	if pos >= seg.nrec || rt.isSet(pos) {
		return false
	}
	fm := seg.frameAt(pos)
	if !fm.hasRoute(rt.route) {
		return false
	}
	if rt.bits == nil {
		rt.bits = make([]byte, (seg.nrec+7)/8)
	}
	rt.bits[pos>>3] |= 1 << (pos & 7)
	rt.done++
	if dirty && !rt.dirty {
		rt.dirty = true
		if !seg.dirty {
			seg.dirty = true
			s.dirty = append(s.dirty, seg)
		}
	}
	fm.remaining--
	if fm.remaining == 0 && fm.dev != nil {
		if fm.window {
			s.windowDoneLocked(fm, dirty) // window.go: OnWindowDelivered for a new mark
		}
		d := fm.dev
		if d.head < len(d.pending) && d.pending[d.head] == fm {
			s.advanceLocked(d)
		}
	}
	if rt.done == rt.total {
		seg.left--
		if seg.left == 0 {
			seg.retiring = true
			s.retire = append(s.retire, seg)
		}
	}
	return true
}

// undoneLocked appends to dst the sorted positions of seg that go to route
// and are not done.
func (seg *segState) undoneLocked(dst []uint32, rt *routeTrack) []uint32 {
	for i := range seg.frames {
		fm := &seg.frames[i]
		if !fm.hasRoute(rt.route) {
			continue
		}
		for p := fm.base; p < fm.base+fm.n; p++ {
			if !rt.isSet(p) {
				dst = append(dst, p)
			}
		}
	}
	return dst
}

// dropLocked forgets a resident segment (retired, or gone cold).
func (s *Store) dropLocked(seg *segState) {
	delete(s.segs, seg.id)
	s.order.Delete(seg.id)
	s.liveBytes -= int64(seg.bytes)
	s.res.records -= int64(seg.nrec)
}
