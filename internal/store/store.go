package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/google/btree"
)

// Store is the relay's durable journal and delivery-state tracker. All
// methods are safe for concurrent use. Callbacks (done and the Hooks) are
// called without any store lock held.
//
// A store has two phases. Open recovers it: it opens Badger and rebuilds the
// in-memory state from disk, and runs nothing in the background; the
// recovered store answers reads (LastSeq, DeliveredSeq, WindowSeq, Pending,
// Routes, DeadLetters, Stats...) and the administrative writes that do not go
// through the journal (RouteID, Replay, Purge, DeadLetter, ReplayDone), which
// is all the offline tools need. Start then installs the Hooks and starts the
// goroutines: only a started store takes new data (Append before Start
// answers ErrNotStarted), and delivery marks made before Start (MarkDelivered)
// are persisted by its first commit. The owner builds whatever the hooks call
// into between the two, over the recovered state.
//
// Goroutines, from Start: the committer (group commits), the value-log GC
// loop, the writeback loop, the OnDelivered notifier and the disk-watch loop
// (disk.go); Close stops and waits for all of them.
type Store struct {
	opts    Options
	log     *slog.Logger
	db      *badger.DB
	hooks   Hooks // set by Start, before the goroutines that call them start
	metrics *metrics

	maxQueueFrames int
	maxQueueBytes  int
	maxTxnBytes    int64 // our budget per Badger transaction
	maxTxnCount    int64

	// Append queue. Lock order: mu and state are never held together.
	mu         sync.Mutex
	notFull    sync.Cond
	queue      []request
	queueBytes int
	closed     bool
	started    bool          // Start ran: the goroutines run and Append takes frames
	wake       chan struct{} // committer wake-up, capacity 1

	// Delivery state, guarded by state.
	state       sync.RWMutex
	segs        map[uint64]*segState  // resident segments (see resident.go)
	order       *btree.BTreeG[uint64] // IDs of resident segments
	res         residency
	devices     map[string]*deviceState
	deviceBytes int64                 // checkpoint size of all devices, to decide on snapshots
	liveBytes   int64                 // encoded bytes of live segments
	dirty       []*segState           // segments with changed bitmaps
	retire      []*segState           // segments to delete
	stopped     bool                  // the committer has exited: MarkDelivered is a no-op
	loading     bool                  // Open is rebuilding state: no notifications
	notify      *notifier             // OnDelivered and OnWindowDelivered; holds events until Start
	flows       map[uint16]*routeFlow // per route: ingest admission (admit.go)
	discard     discardState          // discarded routes (discard.go)

	// Route names, guarded by routesMu.
	routesMu  sync.Mutex
	routes    map[string]uint16
	nextRoute uint32

	// dbMu keeps readers (Pending, RouteID) off a closing database.
	dbMu     sync.RWMutex
	dbClosed bool

	// Committer-owned.
	c committer

	maxSeg atomic.Uint64
	stats  counters
	dead   deadIDs

	closeOnce     sync.Once
	committerDone chan struct{}
	gcStop        chan struct{}
	gcDone        chan struct{}
	gcWake        chan struct{} // wakes the GC loop early, capacity 1
	writebackDone chan struct{} // the writeback loop (writeback.go)

	opened         time.Time // monotonic base of request.at
	valueThreshold int64     // Badger moves values at least this long to the value log
	memTableSize   int64     // Badger's memtable size
	vlogFileSize   int64     // Badger's value-log file size

	// retiredSinceNudge counts the stored bytes of segments retired since the
	// GC loop last made Badger flush its memtable (see gc.go).
	retiredSinceNudge atomic.Int64

	disk *diskGuard // free space (disk.go)

	raceMu sync.RWMutex // value-log GC against writes, under the race detector only (badgerrace.go)
}

type request struct {
	f    *Frame
	done func(error)
	size int
	at   int64 // when it was appended (monotonic ns since the store opened)
}

type counters struct {
	commits, commitErrors, frames, records, bytes atomic.Uint64
	segmentsWritten, segmentsRetired, snapshots   atomic.Uint64
	vlogGC, ingestHolds                           atomic.Uint64
	lastFrames                                    atomic.Int64
	lastLatency                                   atomic.Int64
	ckKeys                                        atomic.Int64
}

// Open opens (creating if needed) the store in opts.Dir and recovers it: it
// rebuilds the in-memory state from disk and takes a first reading of free
// space, and starts nothing (see Start). A directory whose files are missing
// or damaged is refused with a *DamageError (ErrDamaged, see integrity.go),
// never opened empty. ctx bounds the recovery: it is checked between its
// steps. A store that is never started is closed with Close like any other.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, ErrNoDir
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open store in %q: %w", opts.Dir, err)
	}
	opts = opts.withDefaults()
	log := opts.Logger.With("component", "store")
	// Corruption checks (integrity.go): refuse a damaged directory before
	// Badger "repairs" it by deleting data; on a failure below, name the file.
	pre, err := checkBeforeOpen(opts.Dir)
	if err != nil {
		return nil, err
	}
	bopts := badgerOptions(opts, log)
	disk, err := newDiskGuard(opts, bopts, log) // disk.go: refuses to open without the space opening needs
	if err != nil {
		return nil, err
	}
	db, err := openBadger(bopts)
	if err != nil {
		return nil, explainOpen(opts.Dir, fmt.Errorf("open badger in %q: %w", opts.Dir, err))
	}
	s := &Store{
		opts:           opts,
		log:            log,
		db:             db,
		metrics:        newMetrics(),
		maxQueueFrames: queueDepth * opts.MaxCommitFrames,
		maxQueueBytes:  queueDepth * opts.MaxCommitBytes,
		// Leave a fifth of Badger's limits for our estimation error.
		maxTxnBytes:    db.MaxBatchSize() * 4 / 5,
		maxTxnCount:    db.MaxBatchCount() * 4 / 5,
		wake:           make(chan struct{}, 1),
		segs:           make(map[uint64]*segState),
		order:          btree.NewOrderedG[uint64](32),
		res:            newResidency(opts.MaxResident),
		devices:        make(map[string]*deviceState),
		notify:         newNotifier(),
		flows:          make(map[uint16]*routeFlow),
		routes:         make(map[string]uint16),
		nextRoute:      1,
		committerDone:  make(chan struct{}),
		gcStop:         make(chan struct{}),
		gcDone:         make(chan struct{}),
		gcWake:         make(chan struct{}, 1),
		writebackDone:  make(chan struct{}),
		opened:         time.Now(),
		valueThreshold: bopts.ValueThreshold,
		memTableSize:   bopts.MemTableSize,
		vlogFileSize:   bopts.ValueLogFileSize,
		disk:           disk,
	}
	s.notFull.L = &s.mu
	s.c.init()
	fail := func(what string, err error) (*Store, error) {
		_ = db.Close()
		return nil, explainOpen(opts.Dir, fmt.Errorf("%s in %q: %w", what, opts.Dir, err))
	}
	if err := ctx.Err(); err != nil {
		return fail("open store", err)
	}
	deadMarks, err := s.loadDead()
	if err != nil {
		return fail("read dead letters", err)
	}
	if err := ctx.Err(); err != nil {
		return fail("open store", err)
	}
	if err := s.load(deadMarks); err != nil {
		return fail("recover store", err)
	}
	if err := pre.mark(s.routes); err != nil { // the store held data from now on (marker.go)
		log.Warn("store marker not written (the next start tries again)", "err", err) // e.g. a full disk
	}
	s.readDisk() // disk.go: the first free-space reading, so a full disk refuses from the start
	return s, nil
}

// Start installs h and starts the store's goroutines: from now on Append
// takes frames, commits persist them and the delivery marks made since Open,
// and the hooks are called (see Hooks: the events held since Open first; OnSpace
// at once if Open found the disk too full for new data). It returns
// ErrStarted if the store was started already, ErrClosed after Close.
func (s *Store) Start(h Hooks) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.started:
		s.mu.Unlock()
		return ErrStarted
	}
	s.started = true
	s.hooks = h // read by the goroutines started below
	s.mu.Unlock()

	s.notify.start(h.OnDelivered, h.OnWindowDelivered) // window.go: OnWindowDelivered
	s.startDisk(h.OnSpace)                             // disk.go: OnSpace and the disk-watch loop
	s.state.RLock()
	retire := len(s.retire) > 0 // read before the committer runs: it owns s.retire with the state lock
	s.state.RUnlock()
	go s.runCommitter()
	go s.runGC()
	go s.runWriteback()
	if retire {
		s.signal()
	}
	return nil
}

// oldMemTableSize is the memtable size of stores written before badgerOptions
// set one: Badger's default.
const oldMemTableSize = 64 << 20

// openBadger opens Badger with bo. Badger replays the memtable logs left by a
// crash into memtables of bo.MemTableSize and exits the process if one does
// not fit, which a log written with larger memtables (by an earlier version
// of the store) may not: such a directory is first opened with memtables as
// large as those and closed again, which flushes the logs into tables.
func openBadger(bo badger.Options) (*badger.DB, error) {
	// A memtable log is created at twice the memtable size and cut to its
	// contents when replayed.
	if size, err := largestMemtableLog(bo.Dir); err != nil {
		return nil, err
	} else if size > 2*bo.MemTableSize {
		db, err := openBadgerGuarded(bo.WithMemTableSize(max(oldMemTableSize, size/2)))
		if err != nil {
			return nil, err
		}
		if err := db.Close(); err != nil {
			return nil, err
		}
	}
	return openBadgerGuarded(bo) // a panic in Badger becomes an error (integrity.go)
}

// largestMemtableLog returns the size of the largest Badger memtable log
// (*.mem) in dir, 0 if there is none or dir does not exist.
func largestMemtableLog(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var largest int64
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		largest = max(largest, info.Size())
	}
	return largest, nil
}

// Close commits everything queued before it (their done callbacks and
// OnCommit fire), stops the store's goroutines and closes Badger. Appends
// after Close get ErrClosed. Delivery marks that arrive after the final
// commit are dropped (their records are delivered again after restart), and
// so are those of a store that was never started. Calls after the first
// return ErrClosed.
func (s *Store) Close() error {
	err := ErrClosed
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		started := s.started
		s.notFull.Broadcast()
		s.mu.Unlock()
		if started {
			s.signal()
			<-s.committerDone
			close(s.gcStop)
			<-s.gcDone
			<-s.disk.done
			<-s.writebackDone
			s.notify.close()
		}
		s.dbMu.Lock()
		s.dbClosed = true
		err = s.db.Close()
		s.dbMu.Unlock()
		if err != nil {
			err = fmt.Errorf("close badger in %q: %w", s.opts.Dir, err)
		}
	})
	return err
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Append queues f for the next group commit and returns at once, unless the
// queue is full, in which case it waits until the committer takes a batch.
// done is called exactly once: from the committer goroutine after the commit
// holding f is durable (nil) or failed (the error; ErrDiskFull while new
// data is refused for lack of disk space, see Space), or synchronously from
// Append with ErrNotStarted before Start and ErrClosed after Close. The store owns f from now on. done may
// be nil; it must not block and must not call Append or Close (Append can
// wait for the committer, which is running done).
func (s *Store) Append(f *Frame, done func(err error)) {
	size := frameSize(f)
	s.mu.Lock()
	for !s.closed && len(s.queue) > 0 &&
		(len(s.queue) >= s.maxQueueFrames || s.queueBytes+size > s.maxQueueBytes) {
		s.notFull.Wait()
	}
	if s.closed || !s.started {
		err := ErrClosed
		if !s.closed {
			err = ErrNotStarted
		}
		s.mu.Unlock()
		if done != nil {
			done(err)
		}
		return
	}
	s.queue = append(s.queue, request{f: f, done: done, size: size, at: int64(time.Since(s.opened))})
	s.queueBytes += size
	// The first frame wakes the committer; a batch that just grew large
	// ends its linger.
	first := len(s.queue) == 1 || len(s.queue) == lingerFrames ||
		(s.queueBytes >= lingerBytes && s.queueBytes-size < lingerBytes)
	s.mu.Unlock()
	if first {
		s.signal()
	}
}

// frameSize is what a frame counts against the commit and queue byte caps.
func frameSize(f *Frame) int {
	n := 32 + len(f.Device) + len(f.Serial) + len(f.IMEI) + len(f.ICCID) + 2*len(f.Routes)
	for _, r := range f.Records {
		n += len(r) + 2
	}
	return n
}

// LastSeq returns the highest seq durably stored for device, 0 if none.
func (s *Store) LastSeq(device string) uint64 {
	s.state.RLock()
	defer s.state.RUnlock()
	if d := s.devices[device]; d != nil {
		return d.lastSeq
	}
	return 0
}

// DeliveredSeq returns the delivered watermark of device: the highest seq S
// such that every stored frame of the device with seq <= S has all its
// records done on all its routes (frames without routes are done when
// stored). It is one below the lowest seq still in delivery, or LastSeq when
// nothing is. It never decreases while the store is open; after a restart it
// is recomputed from disk.
func (s *Store) DeliveredSeq(device string) uint64 {
	s.state.RLock()
	defer s.state.RUnlock()
	if d := s.devices[device]; d != nil {
		return d.delivered
	}
	return 0
}

// MaxSegment returns the highest committed segment ID (0 if none).
func (s *Store) MaxSegment() uint64 { return s.maxSeg.Load() }

// MarkDelivered records that route is finished with refs (delivered or
// dead-lettered). It updates the in-memory state at once (DeliveredSeq,
// Pending, OnDelivered) and is persisted by the next group commit, which it
// triggers. Marks for a segment that is not resident (cold, see resident.go)
// are applied by the committer once it has read the segment back. Retired
// segments, positions that do not go to route, and repeated marks are
// ignored. It never waits for disk.
func (s *Store) MarkDelivered(route uint16, refs []Ref) {
	if len(refs) == 0 {
		return
	}
	changed := false
	marked := 0
	s.state.Lock()
	if !s.stopped {
		var seg *segState
		var rt *routeTrack
		for i, r := range refs {
			if i == 0 || refs[i-1].Seg != r.Seg {
				seg, rt = s.segs[r.Seg], nil
				if seg != nil {
					rt = seg.track(route)
				}
			}
			switch {
			case rt != nil:
				if s.markLocked(seg, rt, r.Pos) {
					changed = true
					marked++
				}
			case seg == nil && s.res.coldSegs > 0:
				s.res.marks = append(s.res.marks, coldMark{route: route, ref: r})
				changed = true
				marked++ // counted when asked: a cold mark is rarely a repeat
			}
		}
		if marked > 0 && s.opts.IngestHold > 0 {
			s.countOutLocked(route, marked, time.Now()) // admit.go
		}
	}
	s.state.Unlock()
	if changed {
		s.signal()
	}
}

// Backlog returns how many records stored for route it has not marked done:
// its queue depth, in memory or not. It walks the resident segments.
func (s *Store) Backlog(route uint16) int {
	s.state.RLock()
	defer s.state.RUnlock()
	n := int(s.res.coldUndone[route])
	for _, seg := range s.segs {
		for i := range seg.routes {
			if rt := &seg.routes[i]; rt.route == route {
				n += int(rt.total - rt.done)
			}
		}
	}
	return n
}

// Pending calls fn, in segment-ID order, for every live segment with ID >
// after that has records for route not yet marked delivered, with the
// segment read from disk and the sorted positions of those records. It stops
// early when fn returns false. Segments committed while Pending runs may or
// may not be visited, so a caller that also follows OnCommit should note
// MaxSegment before calling Pending and expect segments above it from both.
// fn is called without store locks held and may call any Store method except
// Close.
//
// Pending is how a route reads its queue back: the store counts every segment
// it hands out as held by the route in memory (see resident.go), and once
// Pending has visited every segment (fn never returned false) the route holds
// whatever is committed from then on, until it calls Spilled.
func (s *Store) Pending(route uint16, after uint64, fn func(seg *Segment, pos []uint32) bool) error {
	cursor := after
	for {
		id, pos, seg, err := s.nextPending(route, cursor)
		if err != nil || id == 0 {
			return err
		}
		cursor = id
		if seg == nil {
			seg, err = s.readSegment(id)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // retired meanwhile
			}
			if err != nil {
				return err
			}
		}
		if !fn(seg, pos) {
			return nil
		}
	}
}

// nextPending finds the first live segment after cursor with undone records
// for route, resident or cold (warming it), and counts it as taken by the
// route; id 0 means none, and the route is then counted as holding every
// segment committed from now on. seg is the segment if it was read.
func (s *Store) nextPending(route uint16, cursor uint64) (id uint64, pos []uint32, seg *Segment, err error) {
	for {
		s.state.RLock()
		next := s.nextResidentLocked(route, cursor)
		cold := s.res.coldHas[route] > 0
		coldGen := s.res.coldGen
		s.state.RUnlock()
		var coldID uint64
		if cold {
			if coldID, err = s.nextColdKey(route, cursor, next); err != nil {
				return 0, nil, nil, err
			}
		}
		if coldID != 0 {
			if seg, err = s.warm(coldID, route); err != nil {
				return 0, nil, nil, err
			}
			if seg == nil { // a stale c/ key of a retired segment
				cursor = coldID
				continue
			}
			next = coldID
		}
		s.state.Lock()
		if next == 0 {
			if s.res.coldGen != coldGen {
				// A segment went cold while the keys were read: look again.
				s.state.Unlock()
				continue
			}
			s.res.loaded[route] = allSegments
			s.state.Unlock()
			return 0, nil, nil, nil
		}
		st := s.segs[next]
		var rt *routeTrack
		if st != nil && !st.retiring {
			rt = st.track(route)
		}
		if st == nil {
			// Retired, or cold again (then it has a c/ key for the route):
			// look again from the same cursor.
			s.state.Unlock()
			continue
		}
		if rt == nil || rt.done == rt.total {
			s.state.Unlock()
			cursor = next
			continue
		}
		pos = st.undoneLocked(make([]uint32, 0, rt.total-rt.done), rt)
		s.takeLocked(route, next)
		s.state.Unlock()
		return next, pos, seg, nil
	}
}

// nextResidentLocked returns the first resident segment after cursor with
// undone records for route, 0 if none.
func (s *Store) nextResidentLocked(route uint16, cursor uint64) uint64 {
	var found uint64
	s.order.AscendGreaterOrEqual(cursor+1, func(id uint64) bool {
		seg := s.segs[id]
		if seg == nil || seg.retiring {
			return true
		}
		if rt := seg.track(route); rt != nil && rt.done < rt.total {
			found = id
			return false
		}
		return true
	})
	return found
}

func (s *Store) readSegment(id uint64) (*Segment, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return nil, ErrClosed
	}
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(appendSegKey(nil, id))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			enc, decompressed, err := segmentValue(id, v, nil)
			if err == nil && !decompressed {
				enc = clone(v) // v is only valid during the call
			}
			val = enc
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read segment %d: %w", id, err)
	}
	return DecodeSegment(id, val)
}

// RouteID returns the stable ID of a route name, assigning and persisting a
// new one (1, 2, ...) on first use.
func (s *Store) RouteID(name string) (uint16, error) {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	if id, ok := s.routes[name]; ok {
		return id, nil
	}
	if s.nextRoute > math.MaxUint16 {
		return 0, fmt.Errorf("route %q: %w", name, ErrTooManyRoutes)
	}
	id := uint16(s.nextRoute)
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return 0, ErrClosed
	}
	release := s.badgerWrite() // badgerrace.go
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(routeNameKey(name), binary.BigEndian.AppendUint16(nil, id))
	})
	release()
	if err != nil {
		return 0, fmt.Errorf("persist route %q: %w", name, err)
	}
	s.routes[name] = id
	s.nextRoute++
	if err := s.markRoute(s.routes); err != nil { // the marker keeps a copy (marker.go)
		s.log.Warn("route table copy", "route", name, "err", err)
	}
	return id, nil
}

// Routes returns a copy of the route-name table.
func (s *Store) Routes() map[string]uint16 {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	m := make(map[string]uint16, len(s.routes))
	for k, v := range s.routes {
		m[k] = v
	}
	return m
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Commits:           s.stats.commits.Load(),
		CommitErrors:      s.stats.commitErrors.Load(),
		Frames:            s.stats.frames.Load(),
		Records:           s.stats.records.Load(),
		Bytes:             s.stats.bytes.Load(),
		SegmentsWritten:   s.stats.segmentsWritten.Load(),
		SegmentsRetired:   s.stats.segmentsRetired.Load(),
		Snapshots:         s.stats.snapshots.Load(),
		VlogGCRewrites:    s.stats.vlogGC.Load(),
		IngestHolds:       s.stats.ingestHolds.Load(),
		LastCommitFrames:  int(s.stats.lastFrames.Load()),
		LastCommitLatency: time.Duration(s.stats.lastLatency.Load()),
		CheckpointKeys:    int(s.stats.ckKeys.Load()),
	}
	s.state.RLock()
	st.SegmentsLive = len(s.segs) + int(s.res.coldSegs)
	st.LiveBytes = s.liveBytes + s.res.coldBytes
	st.ResidentSegments = len(s.segs)
	st.ResidentRecords = s.res.records
	st.ColdSegments = int(s.res.coldSegs)
	st.ColdRecords = s.res.coldRecs
	st.Devices = len(s.devices)
	s.state.RUnlock()
	s.mu.Lock()
	st.Queued = len(s.queue)
	s.mu.Unlock()
	return st
}
