package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Dead letters. A route gives up on records that exhausted its attempts or
// outlived its retention; they move, a batch at a time, to the route's
// dead-letter list:
//
//	d/<routeID u16 BE>/<id u64 BE>   dead letter: why, and a copy of its frames
//	q/<routeID u16 BE>/<id u64 BE>   the same, being replayed
//
// A dead letter holds a copy of the frames its records came from, so the
// journal segments can retire. DeadLetter writes the key in its own
// transaction, durably, before it marks the records done for the route; a
// crash in between is repaired at Open, which marks the Refs of every dead
// letter done again. Replay moves entries from d/ to q/ (each entry in one
// transaction, so it is replayed once); the route delivers q/ entries like
// journal records and deletes each once all its records are delivered
// (ReplayDone) or dead again (DeadLetter's finished).

var (
	prefixDead   = []byte("d/")
	prefixReplay = []byte("q/")
)

const (
	deadKeyLen  = 2 + 2 + 1 + 8
	deadVersion = 1
)

// DeadLetter is one batch of records a route gave up on.
type DeadLetter struct {
	ID       uint64     // assigned by DeadLetter; increasing
	Route    uint16     // the route that gave up
	Items    []DeadItem // the records, in delivery order
	Status   int        // the last HTTP status, 0 if none (transport error, or no attempt)
	Error    string     // why: the last error, or the retention exceeded
	Attempts int        // attempts made
	At       int64      // when it was dead-lettered (Unix ms)
	// Refs are the journal records the route is done with. They are marked done
	// when the dead letter is written, and again at Open. Empty for records that
	// came from a replay.
	Refs []Ref
}

// DeadItem is one record of a dead letter: record Record of Frame.
type DeadItem struct {
	Frame  *Frame
	Record int
}

// Records returns the number of records of d.
func (d *DeadLetter) Records() int { return len(d.Items) }

func appendDeadKey(dst, prefix []byte, route uint16, id uint64) []byte {
	dst = binary.BigEndian.AppendUint16(append(dst, prefix...), route)
	return binary.BigEndian.AppendUint64(append(dst, '/'), id)
}

func deadRoutePrefix(prefix []byte, route uint16) []byte {
	return append(binary.BigEndian.AppendUint16(append([]byte(nil), prefix...), route), '/')
}

// encodeDeadLetter encodes d: version, status, attempts, at, error, refs,
// items (frame index, record), then the frames as a segment value.
func encodeDeadLetter(d *DeadLetter) []byte {
	var frames []*Frame
	index := make(map[*Frame]int)
	b := []byte{deadVersion}
	b = binary.AppendUvarint(b, uint64(max(d.Status, 0)))
	b = binary.AppendUvarint(b, uint64(max(d.Attempts, 0)))
	b = binary.AppendVarint(b, d.At)
	b = appendString(b, d.Error)
	b = binary.AppendUvarint(b, uint64(len(d.Refs)))
	for _, r := range d.Refs {
		b = binary.AppendUvarint(b, r.Seg)
		b = binary.AppendUvarint(b, uint64(r.Pos))
	}
	b = binary.AppendUvarint(b, uint64(len(d.Items)))
	for _, it := range d.Items {
		i, ok := index[it.Frame]
		if !ok {
			i = len(frames)
			index[it.Frame] = i
			frames = append(frames, it.Frame)
		}
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(it.Record))
	}
	seg := AppendSegment(nil, frames)
	if z, ok := compressSegment(nil, seg); ok {
		seg = z
	}
	return append(b, seg...)
}

func decodeDeadLetter(route uint16, id uint64, v []byte) (*DeadLetter, error) {
	bad := func(what string) error {
		return fmt.Errorf("dead letter %d of route %d: %s: %w", id, route, what, ErrCorrupt)
	}
	if len(v) == 0 || v[0] != deadVersion {
		return nil, fmt.Errorf("dead letter %d of route %d: %w", id, route, ErrVersion)
	}
	d := &DeadLetter{ID: id, Route: route}
	p := v[1:]
	uv := func() uint64 {
		x, n := binary.Uvarint(p)
		if n <= 0 {
			p = nil
			return 0
		}
		p = p[n:]
		return x
	}
	d.Status, d.Attempts = int(uv()), int(uv())
	at, n := binary.Varint(p)
	if n <= 0 {
		return nil, bad("header")
	}
	d.At, p = at, p[n:]
	l := uv()
	if l > uint64(len(p)) {
		return nil, bad("error text")
	}
	d.Error, p = string(p[:l]), p[l:]
	nrefs := uv()
	if nrefs > uint64(len(p)) {
		return nil, bad("refs")
	}
	d.Refs = make([]Ref, nrefs)
	for i := range d.Refs {
		d.Refs[i] = Ref{Seg: uv(), Pos: uint32(uv())}
	}
	nitems := uv()
	if p == nil || nitems > uint64(len(p)) {
		return nil, bad("items")
	}
	type ref struct{ frame, rec uint64 }
	items := make([]ref, nitems)
	for i := range items {
		items[i] = ref{uv(), uv()}
	}
	if len(p) == 0 {
		return nil, bad("items")
	}
	enc, decompressed, err := segmentValue(id, p, nil)
	if err != nil {
		return nil, err
	}
	if !decompressed {
		enc = clone(enc) // v is only valid during the read
	}
	seg, err := DecodeSegment(id, enc)
	if err != nil {
		return nil, err
	}
	d.Items = make([]DeadItem, len(items))
	for i, it := range items {
		if it.frame >= uint64(len(seg.Frames)) || it.rec >= uint64(len(seg.Frames[it.frame].Records)) {
			return nil, bad("item out of range")
		}
		d.Items[i] = DeadItem{Frame: seg.Frames[it.frame], Record: int(it.rec)}
	}
	return d, nil
}

// deadIDs hands out dead-letter IDs, initialised at Open above every ID on disk, and counts
// the messages in each route's dead-letter list (not the ones being replayed).
type deadIDs struct {
	next  atomic.Uint64
	mu    sync.Mutex
	count map[uint16]int
}

func (d *deadIDs) add(route uint16, n int) {
	d.mu.Lock()
	if d.count == nil {
		d.count = make(map[uint16]int)
	}
	d.count[route] += n
	d.mu.Unlock()
}

// DeadLetterCount returns how many messages route's dead-letter list holds (replays excluded).
func (s *Store) DeadLetterCount(route uint16) int {
	s.dead.mu.Lock()
	defer s.dead.mu.Unlock()
	return s.dead.count[route]
}

// DeadLetter writes d to its route's dead-letter list (assigning d.ID),
// deletes the replay entries
// listed in finished (whose records are now all delivered or dead again) in
// the same transaction, and then marks d.Refs done for d.Route, as
// MarkDelivered does. Nothing is marked when the write fails.
func (s *Store) DeadLetter(d *DeadLetter, finished []uint64) error {
	if len(d.Items) == 0 && len(finished) == 0 {
		return nil
	}
	var val []byte
	if len(d.Items) > 0 {
		val = encodeDeadLetter(d)
		if err := s.diskRoom(int64(len(val)), false); err != nil { // disk.go: never into Badger's reserve
			return fmt.Errorf("write dead letter of route %d: %w", d.Route, err)
		}
	}
	d.ID = s.dead.next.Add(1)
	err := s.update(func(txn *badger.Txn) error {
		if len(d.Items) > 0 {
			if err := txn.Set(appendDeadKey(nil, prefixDead, d.Route, d.ID), val); err != nil {
				return err
			}
		}
		for _, id := range finished {
			if err := txn.Delete(appendDeadKey(nil, prefixReplay, d.Route, id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write dead letter of route %d: %w", d.Route, err)
	}
	s.dead.add(d.Route, len(d.Items))
	s.MarkDelivered(d.Route, d.Refs)
	return nil
}

// DeadLetters calls fn for each dead letter of route, oldest first, until fn
// returns false.
func (s *Store) DeadLetters(route uint16, fn func(*DeadLetter) bool) error {
	return s.scanDead(prefixDead, route, fn)
}

// Replaying calls fn for each dead letter of route being replayed, oldest
// first, until fn returns false.
func (s *Store) Replaying(route uint16, fn func(*DeadLetter) bool) error {
	return s.scanDead(prefixReplay, route, fn)
}

func (s *Store) scanDead(prefix []byte, route uint16, fn func(*DeadLetter) bool) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	return s.db.View(func(txn *badger.Txn) error {
		pre := deadRoutePrefix(prefix, route)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pre, PrefetchValues: false})
		defer it.Close()
		for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
			k := it.Item().Key()
			if len(k) != deadKeyLen {
				continue
			}
			id := binary.BigEndian.Uint64(k[len(pre):])
			var d *DeadLetter
			err := it.Item().Value(func(v []byte) error {
				var err error
				d, err = decodeDeadLetter(route, id, v)
				return err
			})
			if err != nil {
				return err
			}
			if !fn(d) {
				return nil
			}
		}
		return nil
	})
}

// Replay moves every dead letter of route to its replay list, where the
// route delivers it again, and returns how many dead letters and records it
// moved. Each dead letter moves in one transaction, so none is replayed
// twice, and none is lost if Replay fails half way.
func (s *Store) Replay(route uint16) (letters, records int, err error) {
	type entry struct {
		id uint64
		n  int
	}
	var all []entry
	err = s.DeadLetters(route, func(d *DeadLetter) bool {
		all = append(all, entry{id: d.ID, n: len(d.Items)})
		return true
	})
	if err != nil {
		return 0, 0, err
	}
	for _, e := range all {
		err := s.update(func(txn *badger.Txn) error {
			key := appendDeadKey(nil, prefixDead, route, e.id)
			item, err := txn.Get(key)
			if err != nil {
				return err // gone meanwhile (another replay): ErrKeyNotFound
			}
			val, err := item.ValueCopy(nil) // moved as stored
			if err != nil {
				return err
			}
			if err := s.diskRoom(int64(len(val)), true); err != nil { // disk.go: a replay is new data
				return err
			}
			if err := txn.Delete(key); err != nil {
				return err
			}
			return txn.Set(appendDeadKey(nil, prefixReplay, route, e.id), val)
		})
		if errors.Is(err, badger.ErrKeyNotFound) || errors.Is(err, badger.ErrConflict) {
			continue
		}
		if err != nil {
			return letters, records, fmt.Errorf("replay dead letter %d of route %d: %w", e.id, route, err)
		}
		letters++
		records += e.n
		s.dead.add(route, -e.n)
	}
	return letters, records, nil
}

// Purge deletes the dead letters of route written before the given time (all of them for the
// zero time) and returns how many dead letters and messages it deleted. Replays in progress are
// not touched.
func (s *Store) Purge(route uint16, before time.Time) (letters, records int, err error) {
	type entry struct {
		id uint64
		n  int
	}
	var doomed []entry
	err = s.DeadLetters(route, func(d *DeadLetter) bool {
		if before.IsZero() || d.At < before.UnixMilli() {
			doomed = append(doomed, entry{d.ID, len(d.Items)})
		}
		return true
	})
	if err != nil {
		return 0, 0, err
	}
	for len(doomed) > 0 {
		batch := doomed[:min(len(doomed), 1000)]
		var gone []entry // the ones still there: a replay may have moved some meanwhile
		err := s.update(func(txn *badger.Txn) error {
			gone = gone[:0]
			for _, e := range batch {
				key := appendDeadKey(nil, prefixDead, route, e.id)
				if _, err := txn.Get(key); errors.Is(err, badger.ErrKeyNotFound) {
					continue
				} else if err != nil {
					return err
				}
				if err := txn.Delete(key); err != nil {
					return err
				}
				gone = append(gone, e)
			}
			return nil
		})
		if errors.Is(err, badger.ErrConflict) {
			continue // a replay touched the same keys: read them again
		}
		if err != nil {
			return letters, records, fmt.Errorf("purge dead letters of route %d: %w", route, err)
		}
		doomed = doomed[len(batch):]
		n := 0
		for _, e := range gone {
			n += e.n
		}
		letters, records = letters+len(gone), records+n
		s.dead.add(route, -n)
	}
	return letters, records, nil
}

// ReplayDone deletes the replay entries ids of route: all their records were
// delivered.
func (s *Store) ReplayDone(route uint16, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	return s.update(func(txn *badger.Txn) error {
		for _, id := range ids {
			if err := txn.Delete(appendDeadKey(nil, prefixReplay, route, id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// update runs fn in a read-write transaction unless the store is closed.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	defer s.badgerWrite()() // badgerrace.go
	return s.db.Update(fn)
}

// loadDead runs at Open, before load: it sets the next dead-letter ID above
// every one on disk, counts the dead letters, and returns the Refs of every
// dead letter and replay entry by segment, for load to mark done (repairing a
// crash between DeadLetter's write and the persisting of its marks).
func (s *Store) loadDead() (map[uint64][]coldMark, error) {
	var top uint64
	marks := make(map[uint64][]coldMark)
	counts := make(map[uint16]int)
	err := s.db.View(func(txn *badger.Txn) error {
		for _, prefix := range [][]byte{prefixDead, prefixReplay} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				k := it.Item().Key()
				if len(k) != deadKeyLen {
					continue
				}
				route, id := binary.BigEndian.Uint16(k[2:]), binary.BigEndian.Uint64(k[5:])
				top = max(top, id)
				err := it.Item().Value(func(v []byte) error {
					d, err := decodeDeadLetter(route, id, v)
					if err == nil {
						for _, r := range d.Refs {
							marks[r.Seg] = append(marks[r.Seg], coldMark{route: route, ref: r})
						}
						if prefix[0] == prefixDead[0] {
							counts[route] += len(d.Items)
						}
					}
					return err
				})
				if err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.dead.next.Store(top)
	s.dead.count = counts
	return marks, nil
}
