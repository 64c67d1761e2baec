package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
)

// Resident and cold segments.
//
// The delivery state of a live segment (segState: its frames and, per route,
// a done bitmap) is kept in memory while the segment is resident. Memory must
// not grow with a backlog, so while the resident segments hold more than
// Options.MaxResident records, the committer turns some of them cold: their
// state is written to disk (the route bitmaps, plus a c/<route>/<segment> key
// for every route with undone records in it) and dropped from memory. What
// stays in memory of a cold segment is counted, not listed: per route its
// undone records (Backlog), per device how many of its frames are cold and a
// lower bound of their lowest seq (the delivered watermark).
//
// A cold segment comes back (warms) when a route reads it with Pending,
// through the route's c/ keys, or when a mark arrives for it. Routes hold
// records in memory (their in-memory queues) only of segments they took, so a
// segment is made cold only if no route with undone records in it may hold
// it: each route's loaded mark (see Spilled and Pending) says up to which
// segment it may. Cold segments get no marks, so their state on disk stays
// exact, and they never retire while cold.
//
// The committer picks the newest segments nobody holds first: a route that
// spilled reads the oldest ones back first, and a route that keeps up holds
// the newest ones only for a moment.
//
// A c/ key may outlive its segment's coldness (stale): it is deleted when the
// segment goes cold again with the route done, when the segment retires, or
// at Open; readers check residency first, so a stale key costs a lookup.
type residency struct {
	budget  int64 // resident records above which segments go cold
	records int64 // records of resident segments
	// loaded is, per route, the highest segment ID of which the route may hold
	// records in memory. Absent: none (a route that has not paged, or does not
	// run); allSegments: every one (the route takes segments as they commit).
	loaded map[uint16]uint64

	coldSegs, coldRecs, coldBytes int64
	coldUndone                    map[uint16]int64 // per route: undone records in cold segments
	coldHas                       map[uint16]int   // per route: cold segments with undone records for it
	marks                         []coldMark       // marks whose segment was not resident, for the committer

	// evictDue asks the committer to look for segments to make cold although
	// nothing else is to be written (a route spilled).
	evictDue bool

	// warmGen and coldGen count segments that warmed and went cold, so that
	// readers working outside the lock can tell whether residency changed.
	warmGen, coldGen uint64
}

// coldMark is a MarkDelivered for a segment that was not resident.
type coldMark struct {
	route uint16
	ref   Ref
}

// allSegments is the loaded mark of a route that holds whatever is committed.
const allSegments = math.MaxUint64

// defaultMaxResident is Options.MaxResident's default.
const defaultMaxResident = 1 << 18

// maxEvictScan bounds the resident segments the committer examines per commit
// when looking for segments to make cold.
const maxEvictScan = 4096

func newResidency(budget int) residency {
	return residency{
		budget:     int64(budget),
		loaded:     make(map[uint16]uint64),
		coldUndone: make(map[uint16]int64),
		coldHas:    make(map[uint16]int),
	}
}

var prefixCold = []byte("c/")

const coldKeyLen = bitmapKeyLen

func appendColdKey(dst []byte, route uint16, seg uint64) []byte {
	dst = binary.BigEndian.AppendUint16(append(dst, prefixCold...), route)
	return binary.BigEndian.AppendUint64(append(dst, '/'), seg)
}

func coldRoutePrefix(route uint16) []byte {
	return append(binary.BigEndian.AppendUint16(append([]byte(nil), prefixCold...), route), '/')
}

// Spilled tells the store that route holds in memory no records of segments
// above upTo: it stopped taking new segments and will read them back with
// Pending. Those segments may then go cold. Safe for concurrent use.
func (s *Store) Spilled(route uint16, upTo uint64) {
	s.state.Lock()
	s.res.loaded[route] = upTo
	due := s.res.records > s.res.budget
	s.res.evictDue = s.res.evictDue || due
	s.state.Unlock()
	if due {
		s.signal()
	}
}

// heldLocked reports whether a route with undone records in seg may hold them
// in memory.
func (s *Store) heldLocked(seg *segState) bool {
	for i := range seg.routes {
		rt := &seg.routes[i]
		if rt.done < rt.total && seg.id <= s.res.loaded[rt.route] {
			return true
		}
	}
	return false
}

// takeLocked records that route takes segment id (Pending hands it out).
func (s *Store) takeLocked(route uint16, id uint64) {
	if id > s.res.loaded[route] {
		s.res.loaded[route] = id
	}
}

// chooseEvictionsLocked picks resident segments to go cold while the resident
// records exceed the budget, newest first, as far as the transaction budget
// allows. Their bitmaps and c/ keys join the commit; applyEvictionsLocked
// drops them from memory once it is durable.
func (s *Store) chooseEvictionsLocked(used *txnBudget) {
	c := &s.c
	s.res.evictDue = false
	over := s.res.records - s.res.budget
	if over <= 0 {
		return
	}
	// A segment at or below every route's loaded mark is held by whichever
	// route has undone records in it; only those above the lowest mark can
	// be free.
	floor := uint64(allSegments)
	s.routesMu.Lock()
	for _, route := range s.routes {
		floor = min(floor, s.res.loaded[route])
	}
	s.routesMu.Unlock()
	if floor == allSegments {
		return
	}
	scanned := 0
	s.order.Descend(func(id uint64) bool {
		if id <= floor || over <= 0 || scanned >= maxEvictScan {
			return false
		}
		scanned++
		seg := s.segs[id]
		if seg == nil || seg.retiring || seg.evicting || s.heldLocked(seg) {
			return true
		}
		count, bytes := 0, int64(0)
		for i := range seg.routes {
			rt := &seg.routes[i]
			switch {
			case rt.done < rt.total:
				count++
				bytes += entryCost(coldKeyLen, 0)
			case seg.wasCold:
				count++
				bytes += entryCost(coldKeyLen, 0)
			}
			if rt.bits != nil && (rt.dirty || !rt.persisted) {
				count++
				bytes += s.valueCost(bitmapKeyLen, len(rt.bits))
			}
		}
		if !s.fits(*used, count, bytes) && (len(c.evict) > 0 || len(c.batch) > 0 || len(c.retire) > 0) {
			return false
		}
		used.add(count, bytes)
		for i := range seg.routes {
			rt := &seg.routes[i]
			switch {
			case rt.done < rt.total:
				c.coldSet = append(c.coldSet, s.arenaKey(appendColdKey, rt.route, seg.id))
			case seg.wasCold:
				c.coldDel = append(c.coldDel, s.arenaKey(appendColdKey, rt.route, seg.id))
			}
			if rt.bits != nil && (rt.dirty || !rt.persisted) {
				s.addBitmapWrite(seg, i)
			}
		}
		seg.evicting = true
		c.evict = append(c.evict, seg)
		over -= int64(seg.nrec)
		return true
	})
}

// arenaKey builds a key in the commit's arena.
func (s *Store) arenaKey(appendKey func([]byte, uint16, uint64) []byte, route uint16, seg uint64) []byte {
	c := &s.c
	start := len(c.arena)
	c.arena = appendKey(c.arena, route, seg)
	return c.arena[start:len(c.arena):len(c.arena)]
}

// applyEvictionsLocked drops the segments chosen for eviction from memory
// after their state was written. A segment that got marks or was taken by a
// route meanwhile stays resident (its c/ keys are stale then).
func (s *Store) applyEvictionsLocked() {
	for _, seg := range s.c.evict {
		seg.evicting = false
		seg.wasCold = true
		if seg.dirty || seg.retiring || s.heldLocked(seg) {
			continue
		}
		s.coldLocked(seg)
	}
}

// coldLocked turns a resident segment cold.
func (s *Store) coldLocked(seg *segState) {
	for i := range seg.routes {
		rt := &seg.routes[i]
		if n := rt.total - rt.done; n > 0 {
			s.res.coldUndone[rt.route] += int64(n)
			s.res.coldHas[rt.route]++
		}
	}
	for i := range seg.frames {
		fm := &seg.frames[i]
		d := fm.dev
		if d == nil {
			continue
		}
		d.removePending(fm)
		if fm.remaining == 0 {
			continue
		}
		if d.cold == 0 || fm.seq < d.coldLow {
			d.coldLow = fm.seq
		}
		d.cold++
	}
	s.dropLocked(seg)
	s.res.coldSegs++
	s.res.coldRecs += int64(seg.nrec)
	s.res.coldBytes += int64(seg.bytes)
	s.res.coldGen++
}

// loadColdLocked counts a segment read at Open as cold without building its
// state: per route its undone records, per device its frames with undone
// records. It calls index for each route of the segment with whether the
// route has undone records in it. It returns false, doing nothing, if every
// route is done with the segment: it must be resident to retire.
func (s *Store) loadColdLocked(dec *Segment, size int, bits map[uint16][]byte, index func(route uint16, undone bool)) bool {
	type count struct {
		route  uint16
		undone int64
	}
	var counts []count // a segment has a handful of routes
	frameUndone := make([]bool, len(dec.Frames))
	var total int64
	for i, f := range dec.Frames {
		base, n := dec.base[i], uint32(len(f.Records))
		for _, r := range f.Routes {
			u := int64(n) - int64(countSet(bits[r], base, base+n))
			j := slices.IndexFunc(counts, func(c count) bool { return c.route == r })
			if j < 0 {
				counts = append(counts, count{route: r})
				j = len(counts) - 1
			}
			counts[j].undone += u
			total += u
			frameUndone[i] = frameUndone[i] || u > 0
		}
	}
	if total == 0 {
		return false
	}
	for _, c := range counts {
		index(c.route, c.undone > 0)
		if c.undone > 0 {
			s.res.coldUndone[c.route] += c.undone
			s.res.coldHas[c.route]++
		}
	}
	var d *deviceState
	for i, f := range dec.Frames {
		if f.unsequenced() || len(f.Records) == 0 {
			continue
		}
		if d == nil || d.name != f.Device {
			d = s.deviceLocked(f.Device)
		}
		s.windowColdLocked(d, f, frameUndone[i]) // window.go: before lastSeq moves
		d.lastSeq = max(d.lastSeq, f.Seq)
		if !frameUndone[i] {
			continue
		}
		if d.cold == 0 || f.Seq < d.coldLow {
			d.coldLow = f.Seq
		}
		d.cold++
	}
	s.res.coldSegs++
	s.res.coldRecs += int64(dec.n)
	s.res.coldBytes += int64(size)
	return true
}

// countSet counts the bits set in b at positions [from, to).
func countSet(b []byte, from, to uint32) int {
	n := 0
	for p := from; p < to && int(p>>3) < len(b); p++ {
		if p&7 == 0 && p+8 <= to && int(p>>3) < len(b) {
			n += bits.OnesCount8(b[p>>3])
			p += 7
			continue
		}
		if b[p>>3]&(1<<(p&7)) != 0 {
			n++
		}
	}
	return n
}

// warm reads cold segment id back into memory and returns it decoded. It
// returns nil, nil if id is no longer a live segment (retired, or a stale c/
// key), and the segment without registering it if it is resident already.
// A route other than 0 takes the segment (see takeLocked) in the same step, so
// that it cannot go cold again before the route has it.
func (s *Store) warm(id uint64, route uint16) (*Segment, error) {
	for {
		s.state.RLock()
		resident := s.segs[id] != nil
		gen := s.res.warmGen
		s.state.RUnlock()
		dec, size, bits, err := s.readCold(id)
		if err != nil || dec == nil || resident {
			return dec, err
		}
		s.state.Lock()
		if s.segs[id] != nil {
			if route != 0 {
				s.takeLocked(route, id)
			}
			s.state.Unlock()
			return dec, nil
		}
		if s.res.warmGen != gen {
			// Another reader warmed something meanwhile: id may have warmed and
			// retired since it was read. Read again.
			s.state.Unlock()
			continue
		}
		s.warmLocked(dec, size, bits)
		if route != 0 {
			s.takeLocked(route, id)
		}
		s.state.Unlock()
		return dec, nil
	}
}

// readCold reads a segment and the bitmaps of its routes.
func (s *Store) readCold(id uint64) (*Segment, int, map[uint16][]byte, error) {
	var (
		dec  *Segment
		size int
		bits map[uint16][]byte
	)
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(appendSegKey(nil, id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		err = item.Value(func(v []byte) error {
			enc, decompressed, err := segmentValue(id, v, nil)
			if err != nil {
				return err
			}
			if !decompressed {
				enc = clone(v)
			}
			size = len(v)
			dec, err = DecodeSegment(id, enc)
			return err
		})
		if err != nil {
			return err
		}
		for _, f := range dec.Frames {
			normalizeRoutes(f)
			for _, r := range f.Routes {
				if _, ok := bits[r]; ok {
					continue
				}
				if bits == nil {
					bits = make(map[uint16][]byte)
				}
				bits[r] = nil
				item, err := txn.Get(appendBitmapKey(nil, r, id))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if bits[r], err = item.ValueCopy(nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("read segment %d: %w", id, err)
	}
	return dec, size, bits, nil
}

// warmLocked registers a cold segment read back from disk.
func (s *Store) warmLocked(dec *Segment, size int, bits map[uint16][]byte) *segState {
	seg := s.registerLocked(dec.ID, dec.Frames, size)
	s.applyBitsLocked(seg, bits)
	for i := range seg.routes {
		rt := &seg.routes[i]
		if n := rt.total - rt.done; n > 0 {
			s.res.coldUndone[rt.route] -= int64(n)
			s.res.coldHas[rt.route]--
		}
	}
	var touched []*deviceState
	for i := range seg.frames {
		fm := &seg.frames[i]
		if d := fm.dev; d != nil && fm.remaining > 0 && d.cold > 0 {
			d.cold--
			if d.cold == 0 {
				d.coldLow = 0
			}
			if len(touched) == 0 || touched[len(touched)-1] != d {
				touched = append(touched, d)
			}
		}
	}
	for _, d := range touched {
		s.advanceLocked(d)
	}
	s.discardWarmedLocked(seg) // discard.go: after the devices' cold counts saw its undone frames
	seg.wasCold = true
	s.res.coldSegs--
	s.res.coldRecs -= int64(seg.nrec)
	s.res.coldBytes -= int64(size)
	s.res.warmGen++
	if seg.left == 0 && !seg.retiring {
		seg.retiring = true
		s.retire = append(s.retire, seg)
	}
	return seg
}

// applyBitsLocked applies done bitmaps read from disk to a segment just
// registered; they are persisted already.
func (s *Store) applyBitsLocked(seg *segState, bits map[uint16][]byte) {
	for route, b := range bits {
		rt := seg.track(route)
		if rt == nil || b == nil {
			continue
		}
		for pos := uint32(0); pos < seg.nrec && int(pos>>3) < len(b); pos++ {
			if b[pos>>3]&(1<<(pos&7)) != 0 {
				s.setLocked(seg, rt, pos, false)
			}
		}
		rt.persisted = true
	}
}

// nextColdKey returns the first segment above cursor (and below limit,
// unless limit is 0) that has a c/ key for route and is not resident; 0 if
// none.
func (s *Store) nextColdKey(route uint16, cursor, limit uint64) (uint64, error) {
	var found uint64
	err := s.view(func(txn *badger.Txn) error {
		prefix := coldRoutePrefix(route)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(appendColdKey(nil, route, cursor+1)); it.ValidForPrefix(prefix); it.Next() {
			k := it.Item().Key()
			_, id, ok := parseBitmapKey(k)
			if !ok {
				continue
			}
			if limit != 0 && id >= limit {
				return nil
			}
			s.state.RLock()
			resident := s.segs[id] != nil
			s.state.RUnlock()
			if !resident {
				found = id
				return nil
			}
		}
		return nil
	})
	return found, err
}

// view runs fn in a read transaction unless the store is closed.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// applyColdMarks warms the segments that marks arrived for while they were
// not resident, and applies the marks. It runs on the committer goroutine.
func (s *Store) applyColdMarks() {
	s.state.Lock()
	marks := s.res.marks
	s.res.marks = nil
	s.state.Unlock()
	if len(marks) == 0 {
		return
	}
	slices.SortFunc(marks, func(a, b coldMark) int {
		switch {
		case a.ref.Seg != b.ref.Seg:
			if a.ref.Seg < b.ref.Seg {
				return -1
			}
			return 1
		case a.route != b.route:
			return int(a.route) - int(b.route)
		}
		return int(a.ref.Pos) - int(b.ref.Pos)
	})
	for i := 0; i < len(marks); {
		j := i
		for j < len(marks) && marks[j].ref.Seg == marks[i].ref.Seg {
			j++
		}
		id := marks[i].ref.Seg
		dec, err := s.warm(id, 0)
		if err != nil {
			s.log.Warn("read cold segment for marks; they are applied after a restart", "segment", id, "err", err)
		}
		if dec != nil {
			s.state.Lock()
			if seg := s.segs[id]; seg != nil {
				for _, m := range marks[i:j] {
					if rt := seg.track(m.route); rt != nil {
						s.markLocked(seg, rt, m.ref.Pos)
					}
				}
			}
			s.state.Unlock()
		}
		i = j
	}
}
