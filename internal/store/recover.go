package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

type loadedBitmap struct {
	route uint16
	bits  []byte
}

// load rebuilds the in-memory state from disk. It runs before the store's
// goroutines start.
func (s *Store) load() error {
	s.loading = true
	defer func() { s.loading = false }()
	bitmaps := make(map[uint64][]loadedBitmap)
	var orphans [][]byte
	var metaMaxSeg, lastSeg uint64
	var scratch []byte // decompressed segment; only frame metadata is kept
	formatMissing := false

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
			orphans = append(orphans, clone(k))
			return nil
		}); err != nil {
			return err
		}

		first := true
		if err := scan(txn, prefixCheckpoint, func(k, v []byte) error {
			id, ok := parseIDKey(k)
			if !ok {
				orphans = append(orphans, clone(k))
				return nil
			}
			if first {
				s.c.ckFirst, first = id, false
			}
			s.c.ckNext = id + 1
			s.c.ckKeys++
			s.c.ckBytes += int64(len(v))
			return decodeCheckpointWindows(v, func(name []byte, seq uint64, win *ckWindow) {
				d := s.devices[string(name)]
				if d == nil {
					d = s.deviceLocked(string(name))
				}
				s.windowLoadLocked(d, seq, win) // window.go: before lastSeq moves
				d.lastSeq = max(d.lastSeq, seq)
			})
		}); err != nil {
			return fmt.Errorf("load device checkpoints: %w", err)
		}

		if err := scan(txn, prefixBitmap, func(k, v []byte) error {
			route, seg, ok := parseBitmapKey(k)
			if !ok {
				orphans = append(orphans, clone(k))
				return nil
			}
			bitmaps[seg] = append(bitmaps[seg], loadedBitmap{route: route, bits: clone(v)})
			return nil
		}); err != nil {
			return fmt.Errorf("load delivery bitmaps: %w", err)
		}

		return scan(txn, prefixSegment, func(k, v []byte) error {
			id, ok := parseIDKey(k)
			if !ok {
				orphans = append(orphans, clone(k))
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
			for _, f := range dec.Frames {
				normalizeRoutes(f)
			}
			// Result frames are tracked for their routes only (see registerLocked).
			seg := s.registerLocked(id, dec.Frames, len(v))
			for _, b := range bitmaps[id] {
				rt := seg.track(b.route)
				if rt == nil {
					orphans = append(orphans, appendBitmapKey(nil, b.route, id))
					continue
				}
				for pos := uint32(0); pos < seg.nrec && int(pos>>3) < len(b.bits); pos++ {
					if b.bits[pos>>3]&(1<<(pos&7)) != 0 {
						s.markLocked(seg, rt, pos)
					}
				}
				rt.persisted = true
			}
			delete(bitmaps, id)
			if seg.left == 0 && !seg.retiring {
				seg.retiring = true
				s.retire = append(s.retire, seg)
			}
			lastSeg = id
			return nil
		})
	})
	if err != nil {
		return err
	}

	for id, bs := range bitmaps {
		for _, b := range bs {
			orphans = append(orphans, appendBitmapKey(nil, b.route, id))
		}
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

	if !formatMissing && len(orphans) == 0 {
		return nil
	}
	// In as many transactions as Badger's limits need (small memtables make
	// them small): neither write depends on the other.
	w := s.newBatchWriter()
	defer w.discard()
	if formatMissing {
		err = w.set(keyFormat, []byte{formatVersion})
	}
	for _, k := range orphans {
		if err == nil {
			err = w.del(k)
		}
	}
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return fmt.Errorf("write format and drop %d orphan keys: %w", len(orphans), err)
	}
	if len(orphans) > 0 {
		s.log.Info("dropped orphan keys", "count", len(orphans))
	}
	return nil
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
