package store

import (
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Device checkpoint snapshots. Every commit that stores frames without
// routes or retires segments appends one checkpoint key; when these keys
// hold more than twice the size of the whole device table (plus 1 MiB), the
// committer writes the device table as new checkpoint keys and deletes the
// old ones. The rewrite costs about as much as the deltas it replaces, so
// device state stays at amortized O(1) small writes per commit. New keys are
// written before old ones are deleted, and checkpoints merge by maximum, so
// a crash in between loses nothing.

// Snapshot thresholds; variables so tests can force snapshots.
var (
	snapshotMinKeys         = 8
	snapshotSlack     int64 = 1 << 20
	snapshotChunkSize       = 256 << 10
)

func (s *Store) maybeSnapshot() {
	c := &s.c
	if c.ckKeys < snapshotMinKeys || c.ckBytes < c.ckRetryAt {
		return
	}
	s.state.RLock()
	devBytes := s.deviceBytes
	s.state.RUnlock()
	if c.ckBytes < 2*devBytes+snapshotSlack {
		return
	}
	if s.diskRoom(devBytes, false) != nil { // disk.go: not into Badger's reserve; tried again after the next commit
		return
	}
	if err := s.snapshot(); err != nil {
		c.ckRetryAt = 2 * c.ckBytes
		s.log.Warn("rewrite device checkpoints", "err", err, "keys", c.ckKeys, "bytes", c.ckBytes)
		return
	}
	c.ckRetryAt = 0
	s.stats.snapshots.Add(1)
}

func (s *Store) snapshot() error {
	c := &s.c
	oldFirst, oldEnd := c.ckFirst, c.ckNext

	// Last seqs in memory are durable: they are updated after each commit,
	// and this runs on the committer goroutine between commits.
	var chunks [][]byte
	chunk := []byte{checkpointVersion}
	s.state.RLock()
	for _, d := range s.devices {
		if d.lastSeq == 0 {
			continue
		}
		chunk = appendCheckpointEntry(chunk, d.name, d.lastSeq)
		if len(chunk) >= snapshotChunkSize {
			chunks = append(chunks, chunk)
			chunk = []byte{checkpointVersion}
		}
	}
	s.state.RUnlock()
	if len(chunk) > 1 {
		chunks = append(chunks, chunk)
	}

	w := s.newBatchWriter()
	defer w.discard()
	var written int64
	for _, ch := range chunks {
		if err := w.set(appendCheckpointKey(nil, c.ckNext), ch); err != nil {
			return fmt.Errorf("write snapshot: %w", err)
		}
		c.ckNext++
		written += int64(len(ch))
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	// The snapshot is durable; the old keys are redundant from here on.
	c.ckKeys += len(chunks)
	c.ckBytes += written
	for id := oldFirst; id < oldEnd; id++ {
		if err := w.del(appendCheckpointKey(nil, id)); err != nil {
			return fmt.Errorf("delete old checkpoints: %w", err)
		}
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("delete old checkpoints: %w", err)
	}
	c.ckFirst = oldEnd
	c.ckKeys = len(chunks)
	c.ckBytes = written
	s.stats.ckKeys.Store(int64(c.ckKeys))
	return nil
}

// batchWriter writes in as many transactions as Badger's limits need. Unlike
// badger.WriteBatch it commits in order and synchronously, so the caller
// knows what is durable.
type batchWriter struct {
	s    *Store
	txn  *badger.Txn
	used txnBudget
}

func (s *Store) newBatchWriter() *batchWriter { return &batchWriter{s: s} }

func (w *batchWriter) put(key, val []byte, del bool) error {
	cost := w.s.valueCost(len(key), len(val))
	if w.txn != nil && !w.s.fits(w.used, 1, cost) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if w.txn == nil {
		w.txn = w.s.db.NewTransaction(true)
		w.used = txnBudget{}
	}
	w.used.add(1, cost)
	if del {
		return w.txn.Delete(key)
	}
	return w.txn.Set(key, val)
}

func (w *batchWriter) set(key, val []byte) error { return w.put(key, val, false) }

func (w *batchWriter) del(key []byte) error { return w.put(key, nil, true) }

func (w *batchWriter) discard() {
	if w.txn != nil {
		w.txn.Discard()
		w.txn = nil
	}
}

func (w *batchWriter) flush() error {
	if w.txn == nil {
		return nil
	}
	txn := w.txn
	w.txn = nil
	defer txn.Discard()
	defer w.s.badgerWrite()() // badgerrace.go
	return txn.Commit()
}
