package store

import (
	"fmt"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// committer is the state owned by the committer goroutine.
type committer struct {
	batch   []request         // requests taken from the queue
	frames  []*Frame          // frames of the batch that go into the segment
	buf     []byte            // segment encoding
	zbuf    []byte            // compressed segment encoding
	val     []byte            // the segment value written: buf or zbuf
	arena   []byte            // keys and small values of the current transaction
	ck      map[string]uint64 // checkpoint entries of the current transaction
	order   map[string]uint64 // highest seq per device accepted into the current batch
	bitmaps []bitmapWrite
	retire  []*segState
	evict   []*segState // segments going cold (see resident.go)
	coldSet [][]byte    // c/ keys to write
	coldDel [][]byte    // c/ keys to delete
	win     ckWindows   // window.go: the windows of the current transaction's checkpoint entries

	nextSeg uint64      // ID of the next segment
	linger  *time.Timer // CommitLinger's, created on first use
	// lastCommit is when the last commit that stored frames started (ns since the store
	// opened, like request.at).
	lastCommit int64
	hold       *time.Timer // admit.go's poll, created on first use

	// Device checkpoint keys: IDs in [ckFirst, ckNext) may exist.
	ckFirst, ckNext uint64
	ckKeys          int
	ckBytes         int64
	ckRetryAt       int64 // after a failed snapshot, retry once ckBytes exceeds this
	ckLen           int   // size of the checkpoint value of the current transaction

	retired int64 // stored bytes of segments retired since the GC loop was last woken
}

type bitmapWrite struct {
	seg      *segState
	rt       int // index in seg.routes
	key, val []byte
}

func (c *committer) init() {
	c.ck = make(map[string]uint64)
	c.order = make(map[string]uint64)
	c.nextSeg = 1
	c.ckFirst, c.ckNext = 1, 1
}

// txnBudget mirrors Badger's transaction size accounting (Txn.checkSize),
// counting values at full length, which over-estimates values that Badger
// moves to the value log.
type txnBudget struct {
	count, bytes int64
}

func entryCost(key, val int) int64 { return int64(key+val) + 2 + 10 }

// valueCost is entryCost for a value that Badger moves to the value log when
// it reaches the value threshold, leaving a 12-byte pointer in the LSM tree.
func (s *Store) valueCost(key, val int) int64 {
	if int64(val) >= s.valueThreshold {
		val = 12
	}
	return entryCost(key, val)
}

func (b *txnBudget) add(count int, bytes int64) {
	b.count += int64(count)
	b.bytes += bytes
}

func (s *Store) fits(b txnBudget, count int, bytes int64) bool {
	return b.count+int64(count) <= s.maxTxnCount && b.bytes+bytes <= s.maxTxnBytes
}

// testCommitHook, set only by tests before Open, is called before each
// Badger commit; an error fails the commit as a write error would.
var testCommitHook func() error

// errBackoff is how long the committer waits before it retries state-only
// work (bitmaps, retirements) after a failed commit, unless woken earlier.
const errBackoff = time.Second

func (s *Store) runCommitter() {
	defer close(s.committerDone)
	var retry <-chan time.Time
	for {
		s.admit() // admit.go
		s.linger()
		closed := s.take()
		s.applyColdMarks()
		if len(s.c.batch) == 0 && s.idle(closed) {
			if closed {
				return
			}
			select {
			case <-s.wake:
			case <-retry:
			}
			retry = nil
			continue
		}
		stateOnly := len(s.c.batch) == 0
		if err := s.commit(); err != nil && stateOnly {
			if closed {
				s.stop()
				return
			}
			retry = time.After(errBackoff)
			select {
			case <-s.wake:
			case <-retry:
			}
			continue
		}
		s.maybeSnapshot()
	}
}

// linger waits while the queue holds a small batch, until CommitLinger after
// the start of the previous commit, or after the oldest frame's Append if that
// was earlier (see Options.CommitLinger): commits are paced, and a frame that
// finds the committer idle for longer is committed at once. Append wakes it
// when the batch grows large; Close wakes it too.
func (s *Store) linger() {
	if s.opts.CommitLinger <= 0 {
		return
	}
	s.mu.Lock()
	var wait time.Duration
	if !s.closed && len(s.queue) > 0 && len(s.queue) < lingerFrames && s.queueBytes < lingerBytes {
		wait = time.Duration(min(s.queue[0].at, s.c.lastCommit)) + s.opts.CommitLinger - time.Since(s.opened)
	}
	s.mu.Unlock()
	if wait <= 0 {
		return
	}
	if s.c.linger == nil {
		s.c.linger = time.NewTimer(wait)
	} else {
		s.c.linger.Reset(wait)
	}
	select {
	case <-s.c.linger.C:
	case <-s.wake:
		s.c.linger.Stop()
	}
}

// take moves up to one commit's worth of requests from the queue into
// c.batch and reports whether the store is closed.
func (s *Store) take() (closed bool) {
	c := &s.c
	s.mu.Lock()
	n, bytes := 0, 0
	for n < len(s.queue) {
		sz := s.queue[n].size
		if n > 0 && (n >= s.opts.MaxCommitFrames || bytes+sz > s.opts.MaxCommitBytes) {
			break
		}
		bytes += sz
		n++
	}
	if n == len(s.queue) {
		c.batch, s.queue = s.queue, c.batch[:0]
	} else {
		c.batch = append(c.batch[:0], s.queue[:n]...)
		m := copy(s.queue, s.queue[n:])
		clear(s.queue[m:])
		s.queue = s.queue[:m]
	}
	s.queueBytes -= bytes
	closed = s.closed
	if n > 0 {
		s.notFull.Broadcast()
	}
	s.mu.Unlock()
	return closed
}

// idle reports whether there is no delivery state to persist; when closed it
// also stops MarkDelivered, atomically with the check, so no mark is lost
// between the last commit and the stop.
func (s *Store) idle(closed bool) bool {
	s.state.Lock()
	defer s.state.Unlock()
	if len(s.dirty) > 0 || len(s.retire) > 0 || len(s.res.marks) > 0 || s.res.evictDue {
		return false
	}
	if closed {
		s.stopped = true
	}
	return true
}

func (s *Store) stop() {
	s.state.Lock()
	s.stopped = true
	s.state.Unlock()
}

// commit writes the current batch and pending delivery state in one Badger
// transaction, then updates the in-memory state and runs the callbacks.
func (s *Store) commit() error {
	c := &s.c
	s.diskGate() // disk.go: reads free space when due; refuses the batch's frames while it is low
	start := time.Now()
	if len(c.batch) > 0 {
		c.lastCommit = int64(start.Sub(s.opened))
	}
	c.frames = c.frames[:0]
	clear(c.ck)
	c.ckWindowsReset() // window.go
	s.refuseGaps()
	for _, r := range c.batch {
		f := r.f
		normalizeRoutes(f)
		switch {
		case len(f.Routes) > 0 && len(f.Records) > 0:
			c.frames = append(c.frames, f)
		case f.unsequenced(): // notice.go
			// Nothing to deliver, and no seq to remember: nothing is written.
		default:
			s.ckWindowFrame(f) // window.go: a windowed device's entry carries its window
			if cur, ok := c.ck[f.Device]; !ok || f.Seq > cur {
				c.ck[f.Device] = f.Seq
			}
		}
	}
	var used txnBudget
	var segID uint64
	if len(c.frames) > 0 {
		segID = c.nextSeg
		c.buf = AppendSegment(c.buf[:0], c.frames)
		c.val = c.buf
		var ok bool
		if c.zbuf, ok = compressSegment(c.zbuf, c.buf); ok {
			c.val = c.zbuf
		}
		used.add(1, s.valueCost(segKeyLen, len(c.val)))
	}
	var ckBytes int64 = 1
	for dev := range c.ck {
		ckBytes += int64(len(dev) + checkpointEntryOverhead)
	}
	ckBytes += c.ckWindowBytes() // window.go
	used.add(2, s.valueCost(ckKeyLen, int(ckBytes))+entryCost(len(keyMaxSegment), 8))
	c.arena = c.arena[:0]
	s.collect(&used)

	if segID == 0 && len(c.ck) == 0 && len(c.bitmaps) == 0 && len(c.retire) == 0 && len(c.evict) == 0 {
		// Only retiring segments were dirty, or the batch holds only results
		// without routes: nothing to write, but their callbacks are due.
		if len(c.batch) > 0 {
			s.finish(nil, 0, false, start)
		}
		return nil
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	err := s.fill(txn, segID)
	ckWritten := len(c.ck) > 0
	if err == nil && testCommitHook != nil {
		err = testCommitHook()
	}
	if err == nil {
		release := s.badgerWrite() // badgerrace.go
		err = txn.Commit()
		release()
	}
	s.finish(err, segID, ckWritten, start)
	return err
}

// refuseGaps drops from the batch every frame whose PrevSeq was not stored, answering ErrGap.
// Result frames take no part: they are never refused, and they do not count as stored seqs.
func (s *Store) refuseGaps() {
	c := &s.c
	clear(c.order)
	kept := c.batch[:0]
	for _, r := range c.batch {
		f := r.f
		if f.unsequenced() { // notice.go
			kept = append(kept, r)
			continue
		}
		if f.PrevSeq != 0 && !f.Window { // window.go: windowed frames are not chained
			prev, ok := c.order[f.Device]
			if !ok {
				prev = s.LastSeq(f.Device)
			}
			if prev != f.PrevSeq {
				if r.done != nil {
					r.done(fmt.Errorf("%w: device %q seq %d follows %d, stored %d", ErrGap, f.Device, f.Seq, f.PrevSeq, prev))
				}
				continue
			}
		}
		c.order[f.Device] = max(c.order[f.Device], f.Seq)
		kept = append(kept, r)
	}
	clear(c.batch[len(kept):])
	c.batch = kept
}

// fill adds the writes of the commit to txn.
func (s *Store) fill(txn *badger.Txn, segID uint64) error {
	c := &s.c
	if segID != 0 {
		if err := txn.Set(appendSegKey(nil, segID), c.val); err != nil {
			return err
		}
	}
	if len(c.ck) > 0 {
		start := len(c.arena)
		c.arena = append(c.arena, c.ckVersion()) // window.go: 2 if an entry carries a window
		for dev, seq := range c.ck {
			c.arena = c.appendCkEntry(c.arena, dev, seq) // window.go
		}
		val := c.arena[start:]
		c.ckLen = len(val)
		if err := txn.Set(appendCheckpointKey(nil, c.ckNext), val); err != nil {
			return err
		}
	}
	for _, b := range c.bitmaps {
		if err := txn.Set(b.key, b.val); err != nil {
			return err
		}
	}
	for _, k := range c.coldSet {
		if err := txn.Set(k, nil); err != nil {
			return err
		}
	}
	for _, k := range c.coldDel {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	if len(c.retire) > 0 {
		for _, seg := range c.retire {
			if err := txn.Delete(appendSegKey(nil, seg.id)); err != nil {
				return err
			}
			for i := range seg.routes {
				if rt := &seg.routes[i]; rt.persisted {
					if err := txn.Delete(appendBitmapKey(nil, rt.route, seg.id)); err != nil {
						return err
					}
				}
			}
		}
		// Retiring may delete the highest segment key; keep the ID counter.
		top := max(s.maxSeg.Load(), segID)
		if err := txn.Set(keyMaxSegment, appendU64(nil, top)); err != nil {
			return err
		}
	}
	return nil
}

// collect takes dirty bitmaps and segments to retire from the delivery
// state, as far as the transaction budget allows.
func (s *Store) collect(used *txnBudget) {
	c := &s.c
	c.bitmaps = c.bitmaps[:0]
	c.retire = c.retire[:0]
	c.evict = c.evict[:0]
	c.coldSet = c.coldSet[:0]
	c.coldDel = c.coldDel[:0]
	s.state.Lock()
	defer s.state.Unlock()

	taken := 0
	for _, seg := range s.retire {
		count := 1
		bytes := entryCost(segKeyLen, 0)
		for i := range seg.routes {
			if seg.routes[i].persisted {
				count++
				bytes += entryCost(bitmapKeyLen, 0)
			}
			if seg.wasCold {
				count++
				bytes += entryCost(coldKeyLen, 0)
			}
		}
		for i := range seg.frames {
			if fm := &seg.frames[i]; fm.dev != nil && fm.seq >= fm.dev.lastSeq {
				bytes += int64(len(fm.dev.name) + checkpointEntryOverhead)
			}
		}
		bytes += s.retireWindowCostLocked(seg) // window.go
		if !s.fits(*used, count, bytes) && (taken > 0 || len(c.batch) > 0) {
			break
		}
		used.add(count, bytes)
		c.retire = append(c.retire, seg)
		if seg.wasCold {
			for i := range seg.routes {
				c.coldDel = append(c.coldDel, s.arenaKey(appendColdKey, seg.routes[i].route, seg.id))
			}
		}
		// Only a device's highest seq needs a checkpoint: a higher one is
		// on disk already, in a live segment (which checkpoints it when it
		// retires) or in a checkpoint.
		for i := range seg.frames {
			fm := &seg.frames[i]
			s.ckWindowRetireLocked(fm) // window.go: a windowed frame's entry carries its window
			if fm.dev == nil || fm.seq < fm.dev.lastSeq {
				continue // a result, or not the device's highest seq
			}
			if cur, ok := c.ck[fm.dev.name]; !ok || fm.seq > cur {
				c.ck[fm.dev.name] = fm.seq
			}
		}
		taken++
	}
	n := copy(s.retire, s.retire[taken:])
	clear(s.retire[n:])
	s.retire = s.retire[:n]

	s.chooseEvictionsLocked(used)

	kept := s.dirty[:0]
	full := false
	for _, seg := range s.dirty {
		if seg.retiring || seg.evicting {
			// Retiring: nothing to persist; going cold: its bitmaps are in the eviction.
			seg.dirty = false
			continue
		}
		if full {
			kept = append(kept, seg)
			continue
		}
		for i := range seg.routes {
			rt := &seg.routes[i]
			if !rt.dirty {
				continue
			}
			cost := s.valueCost(bitmapKeyLen, len(rt.bits))
			if !s.fits(*used, 1, cost) && (len(c.bitmaps) > 0 || len(c.retire) > 0 || len(c.batch) > 0) {
				full = true
				break
			}
			used.add(1, cost)
			s.addBitmapWrite(seg, i)
		}
		if full {
			kept = append(kept, seg) // some of its routes are still dirty
			continue
		}
		seg.dirty = false
	}
	clear(s.dirty[len(kept):])
	s.dirty = kept
}

// addBitmapWrite adds the bitmap of route i of seg to the commit.
func (s *Store) addBitmapWrite(seg *segState, i int) {
	c := &s.c
	rt := &seg.routes[i]
	k := s.arenaKey(appendBitmapKey, rt.route, seg.id)
	start := len(c.arena)
	c.arena = append(c.arena, rt.bits...)
	v := c.arena[start:len(c.arena):len(c.arena)]
	c.bitmaps = append(c.bitmaps, bitmapWrite{seg: seg, rt: i, key: k, val: v})
	rt.dirty = false
}

// finish applies the outcome of a commit to the in-memory state and calls
// the callbacks.
func (s *Store) finish(err error, segID uint64, ckWritten bool, start time.Time) {
	c := &s.c
	if segID != 0 {
		c.nextSeg++ // consumed even on failure: a failed write may still reach disk
	}
	if ckWritten {
		c.ckNext++
	}
	if err == nil {
		s.applyCommit(segID, ckWritten)
	} else {
		s.state.Lock()
		for _, b := range c.bitmaps {
			b.seg.routes[b.rt].dirty = true
			if !b.seg.dirty && !b.seg.retiring {
				b.seg.dirty = true
				s.dirty = append(s.dirty, b.seg)
			}
		}
		s.retire = append(s.retire, c.retire...)
		for _, seg := range c.evict {
			seg.evicting = false
		}
		s.state.Unlock()
		s.stats.commitErrors.Add(1)
		if segID != 0 {
			err = fmt.Errorf("commit segment %d: %w", segID, err)
		} else {
			err = fmt.Errorf("commit delivery state: %w", err)
		}
	}
	took := time.Since(start)
	s.stats.lastLatency.Store(int64(took))
	s.stats.lastFrames.Store(int64(len(c.batch)))
	if err == nil && len(c.batch) > 0 {
		oldest := c.batch[0].at
		for _, r := range c.batch[1:] {
			oldest = min(oldest, r.at)
		}
		s.metrics.observeCommit(len(c.batch), took, time.Since(s.opened)-time.Duration(oldest))
	}
	for _, r := range c.batch {
		if r.done != nil {
			r.done(err)
		}
	}
	if err == nil && segID != 0 && s.hooks.OnCommit != nil {
		s.hooks.OnCommit(NewSegment(segID, slices.Clone(c.frames)))
	}
	clear(c.batch)
	c.batch = c.batch[:0]
	clear(c.frames)
	c.frames = c.frames[:0]
	clear(c.bitmaps)
	clear(c.retire)
	clear(c.evict)
}

// applyCommit updates the in-memory state after a durable commit.
func (s *Store) applyCommit(segID uint64, ckWritten bool) {
	c := &s.c
	var records int
	for _, f := range c.frames {
		records += len(f.Records)
	}
	var late []lateDiscard
	s.state.Lock()
	if segID != 0 {
		seg := s.registerLocked(segID, c.frames, len(c.val))
		s.countInLocked(c.frames)      // admit.go
		late = s.discardNewLocked(seg) // discard.go: records of routes discarded meanwhile
	}
	for _, r := range c.batch {
		f := r.f
		if f.unsequenced() {
			continue // not in the device's seq space
		}
		d := s.deviceLocked(f.Device)
		s.windowCommitLocked(d, f) // window.go: before lastSeq moves
		d.lastSeq = max(d.lastSeq, f.Seq)
		s.advanceLocked(d)
	}
	for _, b := range c.bitmaps {
		b.seg.routes[b.rt].persisted = true
	}
	s.applyEvictionsLocked()
	var retired int64
	for _, seg := range c.retire {
		retired += int64(seg.bytes)
		s.dropLocked(seg)
	}
	s.state.Unlock()
	for _, l := range late {
		l.fn(l.n)
	}
	if retired > 0 {
		s.retiredSinceNudge.Add(retired)
		if c.retired += retired; c.retired >= s.vlogFileSize/2 {
			c.retired = 0
			select {
			case s.gcWake <- struct{}{}:
			default:
			}
		}
	}

	if ckWritten {
		c.ckKeys++
		c.ckBytes += int64(c.ckLen)
		s.stats.ckKeys.Store(int64(c.ckKeys))
	}
	if segID != 0 {
		s.maxSeg.Store(segID)
		s.stats.segmentsWritten.Add(1)
		s.stats.bytes.Add(uint64(len(c.val)))
		s.stats.records.Add(uint64(records))
	}
	s.stats.commits.Add(1)
	s.stats.frames.Add(uint64(len(c.batch)))
	s.stats.segmentsRetired.Add(uint64(len(c.retire)))
}

// normalizeRoutes removes duplicate route IDs (the store owns the frame).
func normalizeRoutes(f *Frame) {
	r := f.Routes
	for i := 1; i < len(r); i++ {
		if slices.Contains(r[:i], r[i]) {
			slices.Sort(r)
			f.Routes = slices.Compact(r)
			return
		}
	}
}
