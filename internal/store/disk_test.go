package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// fakeFS is a filesystem whose free space the test sets.
type fakeFS struct {
	free, total atomic.Int64
	fail        atomic.Bool
}

func newFakeFS(free, total int64) *fakeFS {
	f := &fakeFS{}
	f.free.Store(free)
	f.total.Store(total)
	return f
}

func (f *fakeFS) statfs(string) (int64, int64, error) {
	if f.fail.Load() {
		return 0, 0, errors.New("statfs: input/output error")
	}
	return f.free.Load(), f.total.Load(), nil
}

// spaceLog records OnSpace calls.
type spaceLog struct {
	mu    sync.Mutex
	calls []bool
}

func (l *spaceLog) on(refused bool) {
	l.mu.Lock()
	l.calls = append(l.calls, refused)
	l.mu.Unlock()
}

func (l *spaceLog) get() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bool(nil), l.calls...)
}

// appendErr appends f and returns what its done callback got.
func appendErr(s *store.Store, f *store.Frame) error {
	errc := make(chan error, 1)
	s.Append(f, func(err error) { errc <- err })
	return <-errc
}

// waitReading waits until the store has read free bytes.
func waitReading(t *testing.T, s *store.Store, free int64) {
	t.Helper()
	checkfor.Check(t, hang, 5*time.Millisecond, func() error {
		if got := s.Space().Free; got != free {
			return errors.New("the store has not read the new free space yet")
		}
		return nil
	})
}

func waitRefused(t *testing.T, s *store.Store, want bool) store.Space {
	t.Helper()
	var sp store.Space
	checkfor.Check(t, hang, 5*time.Millisecond, func() error {
		if sp = s.Space(); sp.Refused != want {
			return errors.New("Space().Refused = " + map[bool]string{true: "true", false: "false"}[sp.Refused])
		}
		return nil
	})
	return sp
}

// The threshold and its hysteresis, with a filesystem whose free space the test moves: new data
// is refused below MinFree (Append answers ErrDiskFull, nothing of the frame is stored, OnSpace
// hears of it), delivery state is still written (segments retire), and new data is taken again
// only once free space reaches Resume, not MinFree.
func TestDiskThresholdAndHysteresis(t *testing.T) {
	fs := newFakeFS(10*gib, 20*gib)
	var calls spaceLog
	s := openHooked(t, t.TempDir(), store.Hooks{OnSpace: calls.on}, store.WithStatfs(fs.statfs), func(o *store.Options) {
		o.MinFree = store.FreeSpace{Bytes: gib}
	})
	defer mustClose(t, s)

	sp := s.Space()
	if sp.Refused || sp.MinFree != gib || sp.Free != 10*gib || sp.Total != 20*gib {
		t.Fatalf("Space() = %+v, want MinFree 1 GiB, free 10 GiB, not refused", sp)
	}
	if sp.Resume <= sp.MinFree || sp.Reserve <= 0 || sp.Reserve >= sp.MinFree {
		t.Fatalf("Space() = %+v: want Reserve < MinFree < Resume", sp)
	}
	appendWait(t, s, frame("a", 1, 2, 1), frame("a", 2, 2, 1))
	before := pendingRefs(t, s, 1)

	fs.free.Store(gib - 1)
	sp = waitRefused(t, s, true)
	if err := appendErr(s, frame("a", 3, 1, 1)); !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Append while refused: done(%v), want ErrDiskFull", err)
	}
	if got := s.LastSeq("a"); got != 2 {
		t.Fatalf("LastSeq after a refused frame = %d, want 2", got)
	}
	if got := s.Space().RefusedFrames; got != 1 {
		t.Fatalf("RefusedFrames = %d, want 1", got)
	}
	// Delivery goes on: marking everything delivered retires the segments.
	retired := s.Stats().SegmentsRetired
	s.MarkDelivered(1, before)
	checkfor.Check(t, hang, 5*time.Millisecond, func() error {
		if n := s.Stats().SegmentsRetired; n == retired {
			return errors.New("no segment retired while new data is refused")
		}
		return nil
	})

	// Above MinFree but below Resume: still refused.
	fs.free.Store(sp.Resume - 1)
	waitReading(t, s, sp.Resume-1)
	if !s.Space().Refused {
		t.Fatalf("reopened at %d bytes free, below Resume %d", sp.Resume-1, sp.Resume)
	}
	fs.free.Store(sp.Resume)
	waitRefused(t, s, false)
	if err := appendErr(s, frame("a", 3, 1, 1)); err != nil {
		t.Fatalf("Append after space came back: %v", err)
	}
	if got := calls.get(); len(got) != 2 || !got[0] || got[1] {
		t.Fatalf("OnSpace calls = %v, want [true false]", got)
	}

	// A failing statfs keeps the last reading (nothing to poll for: wait out two watch periods).
	fs.fail.Store(true)
	fs.free.Store(0)
	time.Sleep(time.Second)
	if s.Space().Refused {
		t.Fatal("a failing statfs refused new data")
	}
}

// MinFree as a percentage of the filesystem, and the floor: a MinFree below what Badger can
// still write once ingest stops is raised to it.
func TestDiskMinFreeResolved(t *testing.T) {
	f := func(min store.FreeSpace, total int64, want func(sp store.Space) int64) {
		t.Helper()
		fs := newFakeFS(total/2, total)
		s := open(t, t.TempDir(), store.WithStatfs(fs.statfs), func(o *store.Options) { o.MinFree = min })
		defer mustClose(t, s)
		sp := s.Space()
		if w := want(sp); sp.MinFree != w {
			t.Fatalf("MinFree %+v on a %d-byte filesystem = %d, want %d (Space %+v)", min, total, sp.MinFree, w, sp)
		}
		if sp.MinFree < sp.Reserve+2*mib {
			t.Fatalf("MinFree %d below the floor: Reserve %d + 2 MiB", sp.MinFree, sp.Reserve)
		}
	}
	floor := func(sp store.Space) int64 { return sp.Reserve + 2*mib }
	f(store.FreeSpace{Percent: 5}, 100*gib, func(store.Space) int64 { return 5 * gib })
	f(store.FreeSpace{Percent: 2.5}, 100*gib, func(store.Space) int64 { return 5 * gib / 2 })
	f(store.FreeSpace{Bytes: 512 * mib}, 100*gib, func(store.Space) int64 { return 512 * mib })
	f(store.FreeSpace{Bytes: mib}, 100*gib, floor)
	f(store.FreeSpace{Percent: 5}, 200*mib, floor)
	f(store.FreeSpace{}, 100*gib, floor)
}

// Open refuses a filesystem without the space opening needs, with the directory and both
// figures in the error; with more than that but less than MinFree it opens, refusing new data
// from the start (and says so through OnSpace), and what it holds can still be delivered.
func TestDiskOpen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	appendWait(t, s, frame("a", 1, 1, 1))
	mustClose(t, s)

	fs := newFakeFS(3*mib, 64*mib)
	opts := store.Options{Dir: dir}
	store.WithStatfs(fs.statfs)(&opts)
	_, err := store.Open(context.Background(), opts)
	if !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Open with 3 MiB free = %v, want ErrDiskFull", err)
	}
	t.Log(err)
	for _, want := range []string{dir, "3.0 MiB", "needs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q does not mention %q", err, want)
		}
	}

	fs.free.Store(40 * mib)
	var calls spaceLog
	s = openHooked(t, dir, store.Hooks{OnSpace: calls.on}, store.WithStatfs(fs.statfs))
	defer mustClose(t, s)
	if !s.Space().Refused {
		t.Fatalf("opened with 40 MiB free, below the floor, and takes new data: %+v", s.Space())
	}
	if got := calls.get(); len(got) != 1 || !got[0] {
		t.Fatalf("OnSpace calls at Start = %v, want [true]", got)
	}
	if err := appendErr(s, frame("a", 2, 1, 1)); !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Append = %v, want ErrDiskFull", err)
	}
	refs := pendingRefs(t, s, 1)
	if len(refs) != 1 {
		t.Fatalf("pending = %v, want the stored record", refs)
	}
	s.MarkDelivered(1, refs)
	checkfor.Check(t, hang, 5*time.Millisecond, func() error {
		if n := s.Stats().SegmentsRetired; n != 1 {
			return errors.New("the stored segment did not retire")
		}
		return nil
	})
}

// Frames queued before the refusal began are refused by the committer: a frame of more than a
// MiB makes it read free space before its commit.
func TestDiskCommitterRefusesQueued(t *testing.T) {
	fs := newFakeFS(10*gib, 20*gib)
	s := open(t, t.TempDir(), store.WithStatfs(fs.statfs))
	defer mustClose(t, s)
	appendWait(t, s, frame("a", 1, 1, 1))
	fs.free.Store(10 * mib) // the store has not looked yet
	big := &store.Frame{Device: "a", Seq: 2, Routes: []uint16{1}}
	for range 20 {
		big.Records = append(big.Records, []byte(`{"x":"`+strings.Repeat("x", 64*int(kib))+`"}`))
	}
	if err := appendErr(s, big); !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Append of a 1.3 MiB frame after free space fell = %v, want ErrDiskFull from the committer", err)
	}
	if got := s.LastSeq("a"); got != 1 {
		t.Fatalf("LastSeq = %d, want 1", got)
	}
}

// Dead letters may use free space down to the reserve (they retire what they copy), not into it;
// a replay is new data and waits while new data is refused.
func TestDiskDeadLetters(t *testing.T) {
	fs := newFakeFS(10*gib, 20*gib)
	s := open(t, t.TempDir(), store.WithStatfs(fs.statfs))
	defer mustClose(t, s)
	a := frame("a", 1, 2, 1)
	appendWait(t, s, a)
	refs := pendingRefs(t, s, 1)
	sp := s.Space()

	fs.free.Store(sp.Reserve + 10) // below MinFree, and a dead letter would go into the reserve
	waitRefused(t, s, true)
	d := &store.DeadLetter{Route: 1, Status: 503, Items: []store.DeadItem{{Frame: a, Record: 0}}, Refs: refs[:1]}
	if err := s.DeadLetter(d, nil); !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("DeadLetter with the reserve left = %v, want ErrDiskFull", err)
	}
	if got := pendingRefs(t, s, 1); len(got) != 2 {
		t.Fatalf("a refused dead letter marked records: pending %v", got)
	}
	fs.free.Store(sp.Reserve + mib) // still refused for new data, but room for delivery state
	waitReading(t, s, sp.Reserve+mib)
	if err := s.DeadLetter(d, nil); err != nil {
		t.Fatalf("DeadLetter above the reserve = %v", err)
	}
	if _, _, err := s.Replay(1); !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Replay while new data is refused = %v, want ErrDiskFull", err)
	}
	fs.free.Store(10 * gib)
	waitRefused(t, s, false)
	if letters, _, err := s.Replay(1); err != nil || letters != 1 {
		t.Fatalf("Replay = %d, %v; want 1 letter", letters, err)
	}
}
