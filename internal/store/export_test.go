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

// TestWindow exposes the window of windowed seqs (window.go) to the black-box tests.
type TestWindow struct{ w window }

// NewTestWindow starts a window with every seq up to last stored, as a device's first windowed
// frame does.
func NewTestWindow(last uint64) *TestWindow { return &TestWindow{*newWindow(last)} }

func (t *TestWindow) Add(seq uint64)      { t.w.add(seq) }
func (t *TestWindow) Fill(seq uint64)     { t.w.fill(seq) }
func (t *TestWindow) Has(seq uint64) bool { return t.w.has(seq) }
func (t *TestWindow) Top() uint64         { return t.w.top }

// Checkpoint returns a version-2 checkpoint value with the window as device's only entry.
func (t *TestWindow) Checkpoint(device string) []byte {
	return appendCheckpointEntryV([]byte{checkpointVersionWindow}, checkpointVersionWindow, device, t.w.top, &t.w)
}

// LoadCheckpoints applies checkpoint values as Open does and returns every device's last seq
// and window (nil for a device without one).
func LoadCheckpoints(values ...[]byte) (last map[string]uint64, wins map[string]*TestWindow, err error) {
	s := &Store{devices: make(map[string]*deviceState)}
	for _, v := range values {
		if err := decodeCheckpointWindows(v, func(name []byte, seq uint64, win *ckWindow) {
			d := s.deviceLocked(string(name))
			s.windowLoadLocked(d, seq, win)
			d.lastSeq = max(d.lastSeq, seq)
		}); err != nil {
			return nil, nil, err
		}
	}
	last, wins = make(map[string]uint64), make(map[string]*TestWindow)
	for name, d := range s.devices {
		last[name] = d.lastSeq
		if d.win != nil {
			wins[name] = &TestWindow{*d.win}
		} else {
			wins[name] = nil
		}
	}
	return last, wins, nil
}

// DecodeCheckpoint decodes a checkpoint value of either version into last seqs, as the callers
// that ignore windows see it.
func DecodeCheckpoint(v []byte) (map[string]uint64, error) {
	m := make(map[string]uint64)
	err := decodeCheckpoint(v, func(name []byte, seq uint64) { m[string(name)] = max(m[string(name)], seq) })
	return m, err
}
