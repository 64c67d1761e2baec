package store

import (
	"errors"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// runGC runs Badger's value-log GC every GCInterval, rewriting files until
// none has enough garbage (ErrNoRewrite).
func (s *Store) runGC() {
	defer close(s.gcDone)
	t := time.NewTicker(s.opts.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		for {
			err := s.db.RunValueLogGC(gcDiscardRatio)
			if err == nil {
				s.stats.vlogGC.Add(1)
				select {
				case <-s.gcStop:
					return
				default:
				}
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("value log gc", "err", err)
			}
			break
		}
	}
}
