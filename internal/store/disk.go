package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Free space.
//
// Badger writes its value log, its memtable logs and its tables through
// shared memory mappings of files it creates sparse (ristretto's
// z.OpenMmapFile truncates a new file to its full size: a value-log file to
// twice ValueLogFileSize, a memtable log to twice MemTableSize, a table to
// its size). A write into a hole of such a file needs a new block; on a full
// filesystem the kernel answers the page fault with SIGBUS, which Go cannot
// recover: the relay dies, and dies again in badger.Open on every restart
// while the disk stays full. Nothing in Badger's API lets the store
// preallocate those files, so the store stops writing early instead:
//
//   - The store watches the free space of the data directory's filesystem
//     (statfs(2): the blocks available to unprivileged users). Below MinFree
//     it refuses new data: the committer answers every frame it takes with
//     ErrDiskFull (through Append's done) instead of writing it. Delivery state
//     (bitmaps, retirements, checkpoints) is still written, so delivery goes
//     on, and the space that retired segments free (retirement → compaction →
//     value-log GC, see gc.go) reopens ingest once free space is back above
//     MinFree plus a hysteresis (a value-log file, or a tenth of MinFree if
//     that is more), so ingest does not flap at every GC.
//   - MinFree is never below the floor: Badger's reserve (below) plus the
//     most the store can write between two checks (diskSlack). The committer
//     checks before a commit once diskCheckBytes were committed or
//     diskCheckAge passed since the last check, so at most diskCheckBytes of
//     frames go in after free space fell below MinFree; a loop checks every
//     diskInterval as well, so ingest reopens while nothing is written.
//   - The reserve is what Badger can still write, at most, once new data is
//     refused and before delivered segments give space back (reserve):
//     the value log's head file, mapped at twice the value-log file size,
//     takes one GC rewrite (at most half a file: GC only rewrites files at
//     least half garbage) and checkpoint values, and a rewrite that crosses
//     its rotation point goes on in a new file: 2 × ValueLogFileSize in all;
//     the memtable logs, mapped at twice the memtable size, the active one
//     and up to NumMemtables waiting for their flush, and the level-0 tables
//     those flushes write (a memtable's size each) before their logs are
//     deleted — the GC loop's nudge (gc.go) is two memtables' worth of
//     these; compactions, which write their output before they delete their
//     input, at most the whole LSM tree (its current size); and 1 MiB for
//     Badger's DISCARD file, which doubles when full, and the MANIFEST and
//     KEYREGISTRY rewrites. With the settings of badgerOptions that is
//     51 MiB plus the LSM tree (small: keys, pointers, bitmaps).
//   - Writes that add data outside the committer's accounting are checked
//     against the same figures: a dead letter and a checkpoint snapshot are
//     written only if they leave the reserve untouched (they are delivery
//     state: a dead letter retires what it copies), a dead-letter replay only
//     while new data is taken.
//   - Open checks before badger.Open that free space covers what opening
//     needs (openNeed: replayed memtable logs flushed to tables, a
//     compaction of the tree, the new memtable log, the DISCARD file) and
//     what freeing the first value-log file needs (one GC rewrite and the
//     GC loop's nudge). Below it Open fails with ErrDiskFull naming the
//     directory and both figures; above it the store opens, refusing new
//     data if it is below MinFree, and delivers what it holds.
//
// The reserve only holds if the store is what fills the filesystem: another
// process that takes the reserve away can still make a Badger write fault.
// Keep the data directory on a filesystem of its own, or set MinFree with
// room for the others. Stopping early costs the reserve's worth of disk,
// which on any real data disk is little next to what the journal holds.

// FreeSpace is an amount of free space on the data directory's filesystem:
// Percent of the filesystem's size when Percent > 0, else Bytes.
type FreeSpace struct {
	Bytes   int64
	Percent float64
}

// of is f in bytes on a filesystem of total bytes.
func (f FreeSpace) of(total int64) int64 {
	if f.Percent > 0 {
		return int64(float64(total) * f.Percent / 100)
	}
	return f.Bytes
}

// Space is the store's view of its filesystem's free space as of the last
// check (at most diskInterval old).
type Space struct {
	Dir   string // the data directory
	Free  int64  // bytes available on its filesystem
	Total int64  // the filesystem's size
	// MinFree is where new data is refused: Options.MinFree, raised to the
	// floor (Reserve and the most written between two checks).
	MinFree int64
	// Resume is where refused new data is taken again (MinFree and a
	// hysteresis).
	Resume int64
	// Reserve is what Badger may still write once new data is refused (see
	// disk.go); it grows with the LSM tree.
	Reserve int64
	// Refused is whether new data is refused for lack of space.
	Refused bool
	// RefusedFrames counts the frames refused for lack of space since Open.
	RefusedFrames uint64
	// Checked is when free space was last read.
	Checked time.Time
}

const (
	// diskCheckBytes and diskCheckAge: the committer reads free space before
	// a commit once this much was written, or this long has passed, since the
	// last read.
	diskCheckBytes = 1 << 20
	diskCheckAge   = 100 * time.Millisecond
	// diskInterval is the period of the disk-watch loop.
	diskInterval = 500 * time.Millisecond
	// diskSlack is the most the store writes past MinFree: diskCheckBytes of
	// frames, and Badger's per-entry overhead on them.
	diskSlack = 2 << 20
	// badgerMisc covers Badger's small files: DISCARD (1 MiB, doubled when
	// full), MANIFEST and KEYREGISTRY rewrites, LOCK.
	badgerMisc = 1 << 20
)

// statfsFunc reports the bytes available to unprivileged users on the
// filesystem holding dir, and its size.
type statfsFunc func(dir string) (free, total int64, err error)

func statfs(dir string) (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := st.Frsize
	if bs <= 0 {
		bs = st.Bsize
	}
	return int64(st.Bavail) * bs, int64(st.Blocks) * bs, nil
}

// badgerSizes are the Badger settings the reserve depends on.
type badgerSizes struct {
	vlogFile, memTable int64
	memTables          int64 // NumMemtables
}

func sizesOf(bo badger.Options) badgerSizes {
	return badgerSizes{vlogFile: bo.ValueLogFileSize, memTable: bo.MemTableSize, memTables: int64(bo.NumMemtables)}
}

// reserve is what Badger can still write once new data is refused, with an
// LSM tree of lsm bytes (see the top of this file).
func (b badgerSizes) reserve(lsm int64) int64 {
	vlog := 2 * b.vlogFile
	memtables := (b.memTables + 1) * (2*b.memTable + b.memTable) // logs mapped at 2×, and their flushed tables
	return vlog + memtables + lsm + badgerMisc
}

// openNeed is the free space Open requires in a directory holding memtable
// logs of mem bytes and tables of lsm bytes: the logs are flushed into
// level-0 tables and a compaction may rewrite the tree; a new memtable log
// and the DISCARD file are created; then, to free the first value-log file
// once delivery resumes, one GC rewrite (half a file) and the GC loop's
// nudge (two memtables, their logs and their tables).
func (b badgerSizes) openNeed(lsm, mem int64) int64 {
	open := mem + lsm + 2*b.memTable + badgerMisc
	firstGC := b.vlogFile/2 + 2*(2*b.memTable+b.memTable)
	return open + firstGC
}

// diskGuard watches free space; see the top of this file. Safe for
// concurrent use.
type diskGuard struct {
	dir     string
	stat    statfsFunc
	minFree FreeSpace
	sizes   badgerSizes
	log     *slog.Logger
	onSpace func(refused bool) // Hooks.OnSpace, set by Start; guarded by notifyMu
	lsm     func() int64       // the LSM tree's size now; set once Badger is open

	mu      sync.Mutex
	space   Space     // the last reading
	written int64     // bytes accounted since the last reading
	last    time.Time // the last reading
	statErr bool      // the last statfs failed (logged once)

	refused       atomic.Bool
	refusedFrames atomic.Uint64
	notifyMu      sync.Mutex // orders onSpace calls
	done          chan struct{}
}

// newDiskGuard checks that dir's filesystem has the free space opening the
// store needs, and returns the guard that watches it once the store is open.
func newDiskGuard(opts Options, bo badger.Options, log *slog.Logger) (*diskGuard, error) {
	g := &diskGuard{
		dir:     opts.Dir,
		stat:    opts.statfs,
		minFree: opts.MinFree,
		sizes:   sizesOf(bo),
		log:     log,
		done:    make(chan struct{}),
	}
	if g.stat == nil {
		g.stat = statfs
	}
	lsm, mem, err := badgerFiles(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("size the store in %q: %w", opts.Dir, err)
	}
	statDir := existingDir(opts.Dir)
	free, total, err := g.stat(statDir)
	if err != nil {
		return nil, fmt.Errorf("read free space of %q: %w", statDir, err)
	}
	if need := g.sizes.openNeed(lsm, mem); free < need {
		return nil, fmt.Errorf("free space in %q: %w: %s free, opening the store needs %s; free space on its filesystem "+
			"or move the data directory to a larger one", opts.Dir, ErrDiskFull, bytesText(free), bytesText(need))
	}
	if floor := g.sizes.reserve(lsm) + diskSlack; g.minFree.of(total) < floor && (g.minFree.Bytes > 0 || g.minFree.Percent > 0) {
		log.Warn("store.min_free is below what the store needs once it refuses new data; using that instead",
			"dir", opts.Dir, "min_free", bytesText(g.minFree.of(total)), "floor", bytesText(floor))
	}
	return g, nil
}

// existingDir is dir or its nearest existing parent (Badger creates dir).
func existingDir(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
		if d == filepath.Dir(d) {
			return d
		}
	}
}

// badgerFiles sums the sizes of Badger's tables (*.sst) and memtable logs
// (*.mem) in dir; a missing dir holds none.
func badgerFiles(dir string) (lsm, mem int64, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		name := e.Name()
		sst, log := strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".mem")
		if !e.Type().IsRegular() || (!sst && !log) {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		if sst {
			lsm += info.Size()
		} else {
			mem += info.Size()
		}
	}
	return lsm, mem, nil
}

// readDisk sets the guard up over the open database and takes the first
// reading, so a store opened on a full disk refuses new data from the start.
// Called by Open with the store built.
func (s *Store) readDisk() {
	g := s.disk
	g.lsm = func() int64 {
		var n int64
		for _, l := range s.db.Levels() {
			n += l.Size
		}
		return n
	}
	g.checkNow()
}

// startDisk installs onSpace, tells it if new data is refused already, and
// starts the disk-watch loop. Called by Start.
func (s *Store) startDisk(onSpace func(refused bool)) {
	g := s.disk
	g.notifyMu.Lock()
	g.onSpace = onSpace
	g.notifyMu.Unlock()
	if g.refused.Load() {
		g.notify()
	}
	go s.runDisk()
}

// runDisk reads free space every diskInterval until gcStop closes.
func (s *Store) runDisk() {
	defer close(s.disk.done)
	t := time.NewTicker(diskInterval)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		s.disk.checkNow()
	}
}

func (g *diskGuard) checkNow() {
	g.mu.Lock()
	changed := g.checkLocked()
	g.mu.Unlock()
	if changed {
		g.notify()
	}
}

// checkLocked reads free space and updates the refusal, logging
// transitions; it reports whether the refusal changed. g.mu is held.
func (g *diskGuard) checkLocked() (changed bool) {
	now := time.Now()
	free, total, err := g.stat(g.dir)
	g.last, g.written = now, 0
	if err != nil {
		if !g.statErr {
			g.statErr = true
			g.log.Warn("read free space; keeping the last reading", "dir", g.dir, "err", err)
		}
		return false
	}
	g.statErr = false
	reserve := g.sizes.reserve(g.lsm())
	minFree := max(g.minFree.of(total), reserve+diskSlack)
	resume := minFree + max(g.sizes.vlogFile, minFree/10)
	g.space = Space{Dir: g.dir, Free: free, Total: total, MinFree: minFree, Resume: resume, Reserve: reserve, Checked: now}
	switch refused := g.refused.Load(); {
	case !refused && free < minFree:
		g.refused.Store(true)
		g.log.Warn("free space below store.min_free: refusing new data; delivery goes on and frees space",
			"dir", g.dir, "free", bytesText(free), "min_free", bytesText(minFree), "resume_at", bytesText(resume))
		changed = true
	case refused && free >= resume:
		g.refused.Store(false)
		g.log.Info("free space is back: taking new data again", "dir", g.dir, "free", bytesText(free),
			"min_free", bytesText(minFree))
		changed = true
	}
	return changed
}

// notify tells OnSpace the current refusal. Calls are serialised and each
// passes the state at its time, so the last call always carries the latest.
func (g *diskGuard) notify() {
	g.notifyMu.Lock()
	defer g.notifyMu.Unlock()
	if g.onSpace != nil {
		g.onSpace(g.refused.Load())
	}
}

// diskGate runs on the committer before each commit: it reads free space
// when due, and refuses every frame of the batch while new data is refused
// (delivery state is still committed). Otherwise it accounts the batch's
// bytes towards the next reading. Refusing here rather than in Append keeps
// done callbacks in the order of the appends, which the device actors'
// refusal handling relies on (a refusal resets a device to what is stored).
func (s *Store) diskGate() {
	g, c := s.disk, &s.c
	var n int64
	for _, r := range c.batch {
		n += int64(r.size)
	}
	g.mu.Lock()
	changed := false
	if g.written+n >= diskCheckBytes || time.Since(g.last) >= diskCheckAge {
		changed = g.checkLocked()
	}
	refused := g.refused.Load()
	if !refused {
		g.written += n
	}
	g.mu.Unlock()
	if changed {
		g.notify()
	}
	if !refused || len(c.batch) == 0 {
		return
	}
	g.refusedFrames.Add(uint64(len(c.batch)))
	for _, r := range c.batch {
		if r.done != nil {
			r.done(ErrDiskFull)
		}
	}
	clear(c.batch)
	c.batch = c.batch[:0]
}

// diskRoom accounts n bytes about to be written outside the committer's
// batches: delivery state (data false: a dead letter, a checkpoint
// snapshot) may use free space down to the reserve, data (a dead-letter
// replay) only while new data is taken and down to MinFree. It returns
// ErrDiskFull, wrapped with the figures, if the write does not fit.
func (s *Store) diskRoom(n int64, data bool) error {
	g := s.disk
	g.mu.Lock()
	changed := false
	if g.written+n >= diskCheckBytes || time.Since(g.last) >= diskCheckAge {
		changed = g.checkLocked()
	}
	sp := g.space
	floor, what := sp.Reserve, "the store's reserve"
	if data {
		floor, what = sp.MinFree, "store.min_free"
	}
	left := sp.Free - g.written - n
	ok := left >= floor && !(data && g.refused.Load())
	if ok {
		g.written += n
	}
	g.mu.Unlock()
	if changed {
		g.notify()
	}
	if !ok {
		return fmt.Errorf("%w: writing %s would leave %s free in %s, below %s (%s)", ErrDiskFull,
			bytesText(n), bytesText(max(left, 0)), g.dir, what, bytesText(floor))
	}
	return nil
}

// Space returns the store's view of free space as of the last check.
func (s *Store) Space() Space {
	g := s.disk
	g.mu.Lock()
	sp := g.space
	g.mu.Unlock()
	sp.Refused = g.refused.Load()
	sp.RefusedFrames = g.refusedFrames.Load()
	return sp
}

// bytesText formats n bytes for people: "48.0 MiB (50331648 B)".
func bytesText(n int64) string {
	const unit = 1 << 10
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s (%d B)", v, suffix, n)
}
