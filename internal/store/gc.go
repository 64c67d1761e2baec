package store

import (
	"errors"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Value-log garbage collection.
//
// Segments live in Badger's value log (see badgerOptions). Badger only
// rewrites a value-log file once its discard statistics say that at least
// gcDiscardRatio of it is garbage, and it counts a retired segment's bytes as
// garbage only when a compaction drops the segment's key, which happens after
// the memtable holding the deletion has been flushed. Two things follow:
//
//   - GC is worth running soon after segments are retired, not only every
//     GCInterval: the committer wakes the GC loop whenever half a value-log
//     file's worth of segments was retired since it last did, and the loop
//     looks again gcFollowUp later, when the compaction has caught up;
//   - a memtable holds the keys of thousands of segments (a few hundred bytes
//     each against up to 960 KiB of value), so it may take a long time to
//     fill, or never fill once the load stops, and the garbage of the
//     segments it retired would not be collected meanwhile. When a GC run
//     finds nothing to rewrite although two value-log files' worth of
//     segments was retired since the last nudge, the loop writes (then
//     deletes) a memtable's worth of padding keys, which makes Badger flush
//     the memtable; the follow-up run then finds the garbage. Badger has no
//     call to flush a memtable (DropPrefix does, but it refuses all writes
//     meanwhile). Where GC cannot reclaim what was retired (files with less
//     than half garbage), this costs one memtable (1 MiB) of writes per two
//     value-log files (32 MiB) of retired segments.
const gcFollowUp = time.Second

// runGC is the GC loop: it runs Badger's value-log GC every GCInterval and
// when woken by the committer (see above).
func (s *Store) runGC() {
	defer close(s.gcDone)
	var tick <-chan time.Time
	if s.opts.GCInterval > 0 {
		t := time.NewTicker(s.opts.GCInterval)
		defer t.Stop()
		tick = t.C
	}
	var followUp <-chan time.Time
	for {
		select {
		case <-s.gcStop:
			return
		case <-tick:
		case <-followUp:
			followUp = nil
		case <-s.gcWake:
			followUp = time.After(gcFollowUp)
		}
		rewrote, ok := s.collectGarbage()
		if !ok {
			return
		}
		if !rewrote && s.retiredSinceNudge.Load() >= 2*s.vlogFileSize {
			s.retiredSinceNudge.Store(0)
			if err := s.nudgeMemtable(); err != nil {
				s.log.Warn("value log gc: flush memtable", "err", err)
			}
			followUp = time.After(gcFollowUp)
		}
	}
}

// collectGarbage rewrites value-log files until none has enough garbage. It
// reports whether it rewrote any, and ok false if the store is closing.
func (s *Store) collectGarbage() (rewrote, ok bool) {
	for {
		release := s.badgerGC() // badgerrace.go
		err := s.db.RunValueLogGC(gcDiscardRatio)
		release()
		if err == nil {
			rewrote = true
			s.stats.vlogGC.Add(1)
			select {
			case <-s.gcStop:
				return rewrote, false
			default:
			}
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			s.log.Warn("value log gc", "err", err)
		}
		return rewrote, true
	}
}

// nudgeMemtable makes Badger flush its current memtable by writing more than
// a memtable's worth of padding keys (values below the value threshold, so
// they fill the memtable), then deletes them.
func (s *Store) nudgeMemtable() error {
	val := make([]byte, s.valueThreshold-1)
	// Each entry takes at least its key and value in the memtable.
	n := s.memTableSize/(int64(len(val))+padKeyLen) + 1
	for _, del := range []bool{false, true} {
		w := s.newBatchWriter()
		for i := range uint32(n) {
			var err error
			if del {
				err = w.del(appendPadKey(nil, i))
			} else {
				err = w.set(appendPadKey(nil, i), val)
			}
			if err != nil {
				w.discard()
				return err
			}
		}
		if err := w.flush(); err != nil {
			return err
		}
	}
	return nil
}
