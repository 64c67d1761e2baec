package store

import (
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Test hooks for the black-box tests in package store_test.

// SetCommitHook installs fn to run before every Badger commit (nil removes
// it). Set it only while no Store is open.
func SetCommitHook(fn func() error) { testCommitHook = fn }

// SetSnapshotThresholds changes when device checkpoints are rewritten and
// returns a function restoring the defaults.
func SetSnapshotThresholds(minKeys int, slack int64, chunk int) (restore func()) {
	k, s, c := snapshotMinKeys, snapshotSlack, snapshotChunkSize
	snapshotMinKeys, snapshotSlack, snapshotChunkSize = minKeys, slack, chunk
	return func() { snapshotMinKeys, snapshotSlack, snapshotChunkSize = k, s, c }
}

// SetValueLogFileSize changes the size of Badger's value-log files for stores
// opened from now on and returns a function restoring the default.
func SetValueLogFileSize(n int64) (restore func()) {
	old := valueLogFileSize
	valueLogFileSize = n
	return func() { valueLogFileSize = old }
}

// NewestVlog is the value-log file the writeback loop would flush: its path, or "".
func NewestVlog(dir string) string {
	if id := newestVlog(dir); id >= 0 {
		return dir + "/" + vlogName(id)
	}
	return ""
}

// WriteDeadLetterOnly writes d as DeadLetter does but does not mark its Refs,
// as if the process died right after the write.
func WriteDeadLetterOnly(s *Store, d *DeadLetter) error {
	d.ID = s.dead.next.Add(1)
	return s.update(func(txn *badger.Txn) error {
		return txn.Set(appendDeadKey(nil, prefixDead, d.Route, d.ID), encodeDeadLetter(d))
	})
}

// EncodeDeadLetter and DecodeDeadLetter expose the dead-letter encoding to the fuzz test.
func EncodeDeadLetter(d *DeadLetter) []byte { return encodeDeadLetter(d) }

func DecodeDeadLetter(route uint16, id uint64, v []byte) (*DeadLetter, error) {
	return decodeDeadLetter(route, id, v)
}

// WithStatfs makes a store read its filesystem's free space and size from
// fn instead of statfs(2).
func WithStatfs(fn func(dir string) (free, total int64, err error)) func(*Options) {
	return func(o *Options) { o.statfs = fn }
}

// DebugResidency describes the residency state (for test failures).
func DebugResidency(s *Store) string {
	s.state.RLock()
	defer s.state.RUnlock()
	out := fmt.Sprintf("loaded=%v coldHas=%v coldUndone=%v coldSegs=%d resident=%d", s.res.loaded, s.res.coldHas, s.res.coldUndone, s.res.coldSegs, len(s.segs))
	for id, seg := range s.segs {
		out += fmt.Sprintf("\n resident %d: routes=%+v left=%d wasCold=%v", id, seg.routes, seg.left, seg.wasCold)
	}
	return out
}
