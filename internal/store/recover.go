package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
)

// load rebuilds the in-memory state from disk. It runs before the store's
// goroutines start. It reads every live segment once, in ID order, with the
// delivery bitmaps and c/ keys of its routes read in step (see routeKeys), so
// its memory does not depend on how much is stored: segments stay resident
// up to the budget (the oldest, which routes read first) and the rest are
// counted cold, their c/ keys made exact. Keys that belong to nothing are
// deleted. deadMarks are the records of dead letters by segment (see
// loadDead): they are marked done for their routes, and their bitmaps
// written where that changes them.
func (s *Store) load(deadMarks map[uint64][]coldMark) error {
	s.loading = true
	defer func() { s.loading = false }()
	var metaMaxSeg, lastSeg uint64
	var scratch []byte // decompressed segment; only frame metadata is kept
	formatMissing := false
	// Fixes are written while reading: Badger reads from the read
	// transaction's snapshot meanwhile.
	w := s.newBatchWriter()
	defer w.discard()
	var fixErr error
	var fixes int
	put := func(k, v []byte, del bool) {
		fixes++
		if fixErr == nil {
			fixErr = w.put(clone(k), v, del)
		}
	}
	fix := func(k []byte, del bool) { put(k, nil, del) }

	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyFormat)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			formatMissing = true
		case err != nil:
			return fmt.Errorf("read format: %w", err)
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read format: %w", err)
			}
			if len(v) != 1 || v[0] != formatVersion {
				return fmt.Errorf("format %v: %w", v, ErrVersion)
			}
		}
		if item, err := txn.Get(keyMaxSegment); err == nil {
			v, err := item.ValueCopy(nil)
			if err != nil || len(v) != 8 {
				return fmt.Errorf("read max segment: %w", errors.Join(err, ErrCorrupt))
			}
			metaMaxSeg = binary.BigEndian.Uint64(v)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("read max segment: %w", err)
		}

		if err := scan(txn, prefixRouteName, func(k, v []byte) error {
			if len(v) != 2 {
				return fmt.Errorf("route name %q: %w", k[len(prefixRouteName):], ErrCorrupt)
			}
			id := binary.BigEndian.Uint16(v)
			s.routes[string(k[len(prefixRouteName):])] = id
			s.nextRoute = max(s.nextRoute, uint32(id)+1)
			return nil
		}); err != nil {
			return err
		}

		// Padding left by a crash during a memtable nudge (see gc.go).
		if err := scan(txn, prefixPad, func(k, _ []byte) error {
			fix(k, true)
			return nil
		}); err != nil {
			return err
		}

		first := true
		if err := scan(txn, prefixCheckpoint, func(k, v []byte) error {
			id, ok := parseIDKey(k)
			if !ok {
				fix(k, true)
				return nil
			}
			if first {
				s.c.ckFirst, first = id, false
			}
			s.c.ckNext = id + 1
			s.c.ckKeys++
			s.c.ckBytes += int64(len(v))
			return decodeCheckpoint(v, func(name []byte, seq uint64) {
				d := s.devices[string(name)]
				if d == nil {
					d = s.deviceLocked(string(name))
				}
				d.lastSeq = max(d.lastSeq, seq)
			})
		}); err != nil {
			return fmt.Errorf("load device checkpoints: %w", err)
		}

		bitmaps := newRouteKeys(txn, prefixBitmap, fix)
		defer bitmaps.close()
		colds := newRouteKeys(txn, prefixCold, fix)
		defer colds.close()
		bits := make(map[uint16][]byte)
		err = scan(txn, prefixSegment, func(k, v []byte) error {
			id, ok := parseIDKey(k)
			if !ok {
				fix(k, true)
				return nil
			}
			enc, decompressed, err := segmentValue(id, v, scratch)
			if err != nil {
				return err
			}
			if decompressed {
				scratch = enc
			}
			dec, err := DecodeSegment(id, enc)
			if err != nil {
				return err
			}
			clear(bits)
			for _, f := range dec.Frames {
				normalizeRoutes(f)
				for _, r := range f.Routes {
					if _, ok := bits[r]; ok {
						continue
					}
					b, err := bitmaps.at(r, id)
					if err != nil {
						return fmt.Errorf("read delivery bitmap of segment %d: %w", id, err)
					}
					bits[r] = b
				}
			}
			if marks := deadMarks[id]; len(marks) > 0 {
				repairMarks(dec, bits, marks, func(route uint16, b []byte) {
					put(appendBitmapKey(nil, route, id), b, false)
				})
			}
			lastSeg = id
			if s.res.records >= s.res.budget && s.loadColdLocked(dec, len(v), bits, func(route uint16, undone bool) {
				switch has := colds.has(route, id); {
				case undone && !has:
					fix(appendColdKey(nil, route, id), false)
				case !undone && has:
					fix(appendColdKey(nil, route, id), true)
				}
			}) {
				return nil
			}
			// Resident. Result frames are tracked for their routes only (see registerLocked).
			seg := s.registerLocked(id, dec.Frames, len(v))
			s.applyBitsLocked(seg, bits)
			for i := range seg.routes {
				if colds.has(seg.routes[i].route, id) {
					fix(appendColdKey(nil, seg.routes[i].route, id), true)
				}
			}
			if seg.left == 0 && !seg.retiring {
				seg.retiring = true
				s.retire = append(s.retire, seg)
			}
			return nil
		})
		if err != nil {
			return err
		}
		bitmaps.rest()
		colds.rest()
		return nil
	})
	if err != nil {
		return err
	}

	// Marks replayed from disk are persisted already.
	for _, seg := range s.dirty {
		seg.dirty = false
		for i := range seg.routes {
			seg.routes[i].dirty = false
		}
	}
	s.dirty = nil
	for _, d := range s.devices {
		d.delivered = d.watermark()
	}
	top := max(metaMaxSeg, lastSeg)
	s.maxSeg.Store(top)
	s.c.nextSeg = top + 1
	s.stats.ckKeys.Store(int64(s.c.ckKeys))

	if formatMissing && fixErr == nil {
		fixErr = w.set(keyFormat, []byte{formatVersion})
	}
	if fixErr == nil {
		fixErr = w.flush()
	}
	if fixErr != nil {
		return fmt.Errorf("write format and %d key repairs: %w", fixes, fixErr)
	}
	if fixes > 0 {
		s.log.Info("repaired store keys at open (orphans dropped, cold index fixed)", "count", fixes)
	}
	return nil
}

// repairMarks sets the bits of the dead-lettered records of a segment read at
// Open (marks, all of this segment) in the bitmaps read with it, and calls
// changed with each bitmap it had to change.
func repairMarks(dec *Segment, bits map[uint16][]byte, marks []coldMark, changed func(route uint16, b []byte)) {
	var touched []uint16
	for _, m := range marks {
		fi, _, ok := dec.Locate(m.ref.Pos)
		if !ok || !slices.Contains(dec.Frames[fi].Routes, m.route) {
			continue
		}
		b := bits[m.route]
		if need := int(dec.n+7) / 8; len(b) < need {
			b = append(b, make([]byte, need-len(b))...)
		}
		p := m.ref.Pos
		if b[p>>3]&(1<<(p&7)) != 0 {
			continue
		}
		b[p>>3] |= 1 << (p & 7)
		bits[m.route] = b
		if !slices.Contains(touched, m.route) {
			touched = append(touched, m.route)
		}
	}
	for _, r := range touched {
		changed(r, bits[r])
	}
}

// routeKeys reads the keys <prefix><route u16>/<segment u64> of every route
// in step with the segments, which load reads in ascending order: one
// iterator per route that has such keys. A key passed over, or left at the
// end, belongs to no live segment of its route and is handed to orphan.
type routeKeys struct {
	prefix []byte
	its    map[uint16]*badger.Iterator
	orphan func(k []byte, del bool)
}

func newRouteKeys(txn *badger.Txn, prefix []byte, orphan func(k []byte, del bool)) *routeKeys {
	r := &routeKeys{prefix: prefix, its: make(map[uint16]*badger.Iterator), orphan: orphan}
	// Find the routes with keys, one seek per route.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); {
		k := it.Item().Key()
		route, _, ok := parseBitmapKey(k)
		if !ok {
			orphan(k, true)
			it.Next()
			continue
		}
		rp := append(binary.BigEndian.AppendUint16(append([]byte(nil), prefix...), route), '/')
		rit := txn.NewIterator(badger.IteratorOptions{Prefix: rp})
		rit.Seek(rp)
		r.its[route] = rit
		if route == math.MaxUint16 {
			break
		}
		it.Seek(binary.BigEndian.AppendUint16(append([]byte(nil), prefix...), route+1))
	}
	return r
}

// seek moves route's iterator to the first key at or after seg, reporting the
// keys passed over, and reports whether it stands at seg.
func (r *routeKeys) seek(route uint16, seg uint64) (*badger.Iterator, bool) {
	it := r.its[route]
	if it == nil {
		return nil, false
	}
	for ; it.Valid(); it.Next() {
		k := it.Item().Key()
		_, id, ok := parseBitmapKey(k)
		switch {
		case !ok || id < seg:
			r.orphan(k, true)
		case id == seg:
			return it, true
		default:
			return it, false
		}
	}
	return it, false
}

// at returns a copy of the value of route's key for seg, nil if there is none.
func (r *routeKeys) at(route uint16, seg uint64) ([]byte, error) {
	it, ok := r.seek(route, seg)
	if !ok {
		return nil, nil
	}
	v, err := it.Item().ValueCopy(nil)
	it.Next()
	return v, err
}

// has reports whether route has a key for seg.
func (r *routeKeys) has(route uint16, seg uint64) bool {
	it, ok := r.seek(route, seg)
	if ok {
		it.Next()
	}
	return ok
}

// rest hands every key not read to orphan.
func (r *routeKeys) rest() {
	for _, it := range r.its {
		for ; it.Valid(); it.Next() {
			r.orphan(it.Item().Key(), true)
		}
	}
}

func (r *routeKeys) close() {
	for _, it := range r.its {
		it.Close()
	}
}

// scan calls fn for every key with prefix; v is only valid during the call.
func scan(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
			return err
		}
	}
	return nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
