package store

import (
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options configures a Store. The zero value of each field selects its default.
type Options struct {
	// Dir is the Badger directory. Required.
	Dir string
	// Sync fsyncs every group commit, so acknowledged frames survive power
	// loss. Without it they survive a crash of the process (kill -9), not of
	// the machine.
	Sync bool
	// Logger receives the store's and Badger's logs. Nil discards them.
	Logger *slog.Logger
	// MaxCommitFrames caps the frames of one group commit. Default 4096.
	MaxCommitFrames int
	// MaxCommitBytes caps the bytes of one group commit (a single larger
	// frame is committed alone). Default 4 MiB; the store never puts more
	// than 960 KiB in one commit, whatever the setting, which bounds the
	// latency of a commit and the memory of reading a segment back.
	MaxCommitBytes int
	// CommitLinger paces group commits: a small batch waits for more frames
	// until CommitLinger after the start of the previous commit, or after its
	// oldest frame's Append if that was earlier (default 0.5 ms; negative:
	// commit at once). A frame that finds the committer idle for longer is
	// committed at once, so light traffic waits for nothing; a batch of
	// lingerFrames frames or lingerBytes bytes does not wait either. A group
	// commit costs about the same for 2 frames as for 20 (a Badger
	// transaction, a segment, its delivery state, a route message, its
	// retirement): 1,000 devices sending a frame every 100 ms made commits of
	// ≈2 frames when each was committed at once, and those commits cost more
	// CPU per frame than the rest of the relay. Measured there (3 alternating
	// runs, medians): 49.7 µs of relay CPU per frame committed at once, 39.3
	// paced; the ACK's median latency rises from 0.65 to 1.5 ms (Go's timers
	// wake an idle thread with millisecond granularity), its p99 is the same.
	CommitLinger time.Duration
	// MaxResident caps the records of the segments whose delivery state is
	// held in memory (resident); beyond it, segments that no route holds in
	// memory are made cold: their state stays on disk until a route reads
	// them back (see resident.go). Default 262144. Routes' in-memory queues
	// are not counted in it; what they hold stays resident.
	MaxResident int
	// IngestHold: while a route that delivers (it marked records done within
	// the last second) has a backlog that grew by more than this many records
	// above the lowest it was since it last delivered, the committer holds new
	// frames (at most 100 ms at a time) until the growth is down to half:
	// ingest yields to delivery instead of acknowledging faster than the
	// routes deliver (see admit.go). Default MaxResident/4; negative: never.
	IngestHold int
	// GCInterval is the period of Badger value-log garbage collection,
	// which also runs soon after segments are retired (see gc.go). Default
	// 1 minute; negative: only the runs after retirements.
	GCInterval time.Duration
	// MinFree is the free space on Dir's filesystem below which new data is
	// refused (Append answers ErrDiskFull) while delivery goes on; it is
	// taken again once delivery has freed space (see disk.go). It is never
	// below what Badger can still write after ingest stops (Space.Reserve,
	// ≈53 MiB plus the LSM tree), which is also the default.
	MinFree FreeSpace

	statfs statfsFunc // tests: free space of a directory; nil uses statfs(2)
}

// Hooks are how the store tells its owner what happened: they are given to Start, after Open
// has recovered the state on disk, so that whatever they call into (the relay's actor system)
// can be built over the recovered store first. Every hook may be nil. None is called for what
// Open found on disk (read LastSeq, DeliveredSeq, WindowSeq and Pending instead); events that
// happen between Open and Start (MarkDelivered by a route that delivered early) are held and
// passed on when Start installs the hooks.
type Hooks struct {
	// OnCommit is called from the committer goroutine after each durable commit that wrote a
	// segment, after the done callbacks of the commit. Commits whose frames all lack routes or
	// records write no segment and do not call OnCommit. It must not block and must not call
	// Append (which can wait for the committer) or Close.
	OnCommit func(seg *Segment)
	// OnDelivered is called when a device's delivered watermark (see DeliveredSeq) advances,
	// including for frames without routes, which are delivered when committed. It is called
	// from one notifier goroutine owned by the store, never with a store lock held, with
	// increasing values per device; advances that happen while an earlier one waits are
	// coalesced into the latest. It may call any Store method except Close.
	OnDelivered func(device string, seq uint64)
	// OnWindowDelivered is called once for each windowed frame (Frame.Window) when every
	// record of it is done on every route (delivered or dead-lettered), or when it is committed
	// if it has no routes: ack mode delivery over UDP acknowledges exactly that seq. It is
	// called like OnDelivered (same goroutine, no store lock held), but never coalesced. It may
	// call any Store method except Close.
	OnWindowDelivered func(device string, seq uint64)
	// OnSpace is called when the store starts refusing new data for lack of disk space (true),
	// by Start too if Open found the disk that full, and when it takes new data again (false).
	// Calls are serialised, from Start, the committer or the disk-watch goroutine; it must not
	// block and must not call Append or Close. It may call Space.
	OnSpace func(refused bool)
}

const (
	defaultMaxCommitFrames = 4096
	defaultMaxCommitBytes  = 4 << 20
	defaultGCInterval      = time.Minute
	defaultCommitLinger    = 500 * time.Microsecond
	// lingerFrames and lingerBytes end CommitLinger early: a batch this
	// large spreads a commit's cost thinly enough.
	lingerFrames = 256
	lingerBytes  = 128 << 10
	// maxSegmentBytes caps MaxCommitBytes. It dates from when segments were
	// kept under Badger's 1 MiB value threshold, in the LSM tree.
	maxSegmentBytes = 1<<20 - 64<<10
	// queueDepth is how many commits' worth of frames Append queues before
	// it makes callers wait (backpressure).
	queueDepth = 4
	// gcDiscardRatio is the share of garbage a value-log file needs before GC
	// rewrites it.
	gcDiscardRatio = 0.5
)

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxCommitFrames <= 0 {
		o.MaxCommitFrames = defaultMaxCommitFrames
	}
	if o.MaxCommitBytes <= 0 {
		o.MaxCommitBytes = defaultMaxCommitBytes
	}
	o.MaxCommitBytes = min(o.MaxCommitBytes, maxSegmentBytes)
	if o.MaxResident <= 0 {
		o.MaxResident = defaultMaxResident
	}
	if o.IngestHold == 0 {
		o.IngestHold = max(1, o.MaxResident/4)
	}
	if o.CommitLinger == 0 {
		o.CommitLinger = defaultCommitLinger
	}
	if o.GCInterval == 0 {
		o.GCInterval = defaultGCInterval
	}
	return o
}

// Badger settings; badgerOptions says why each has its value.
const (
	valueThreshold = 1 << 10
	memTableSize   = 1 << 20
	numCompactors  = 2
)

// valueLogFileSize is a variable for tests.
var valueLogFileSize int64 = 16 << 20

// badgerOptions tunes Badger for a write-mostly journal with one writer whose
// large values (segments, 100–960 KiB under load) are usually deleted within
// seconds, but may stay for days while an endpoint is down.
//
// Measured on the 2-core development machine, relay as its own process,
// 1,000 devices sending ≈200-byte records as fast as acknowledged, 15 s,
// medians of 5 runs interleaved with the previous settings (Badger's
// defaults but 256 MiB value-log files, segments inline in the LSM tree):
// peak RSS 4.5 GB → 1.3 GB, relay CPU 6.9 → 4.2 µs per message delivered,
// 239k → 333k messages acknowledged per second, data directory 45 s after
// the run 234 MB → 31 MB.
//
//   - Conflict detection off: only the committer writes, so there is nothing
//     to detect, and it saves per-key tracking on every commit.
//   - Value threshold 1 KiB (Badger's default is its maximum, 1 MiB):
//     segments go to the value log, written once, and the LSM tree holds
//     pointers. Inline, every memtable flush and compaction rewrote and
//     Snappy-compressed them: table builders (64–256 MiB buffers) and 64 MiB
//     memtable arenas took ≈1.4 GB of the heap, zeroing them ≈7% of the CPU
//     and Snappy ≈20%. Bitmaps (≤512 bytes up to 4,096 records) and small
//     checkpoints stay inline. The store compresses segments itself, once
//     (see segmentS2).
//   - Memtables of 1 MiB instead of 64 MiB, and L0 compacted as soon as it
//     holds one table (NumLevelZeroTables 1, default 5): Badger counts a
//     retired segment as value-log garbage only when a compaction drops its
//     key, so the LSM tree must turn over for GC to reclaim anything. A
//     1 MiB memtable held the keys of ≈150 MB of (uncompressed) segments
//     under this load; L0 waiting for five tables would hold back five times
//     that. What is left in the memtable when the load stops is flushed by
//     the GC loop (see gc.go). 256 KiB
//     memtables reclaimed no better and flushed 8 times a second at 20k
//     messages/s. A memtable bounds a transaction to 15% of it (157 KiB);
//     the store's budget counts values bound for the value log as pointers,
//     so segments fit.
//   - Value-log files of 16 MiB instead of 256 MiB: GC reclaims space a file
//     at a time and never the file being written, so smaller files leave
//     less behind (11–76 MB left after the runs above, 22–216 MB with 64 MiB
//     files); Badger syncs a full file before writing the next, holding up
//     commits meanwhile (≈20 ms for 16 MiB here, ≈80 ms for 64 MiB); and
//     written files stay mapped, counting in RSS, until collected.
//   - No block compression and no block cache (defaults Snappy and 256 MiB):
//     the LSM tree holds keys, pointers and small values, and is read rarely
//     (recovery, paging); uncompressed blocks are read from the mapped tables
//     directly, while compressed ones need the cache.
//   - Two compactors instead of four (two is Badger's minimum): the tree is
//     small and each flush is followed by one small L0 compaction.
//
// Memtable size (256 KiB–4 MiB), NumLevelZeroTables (1 or 5), compactors
// (2 or 4) and LSM compression made no difference beyond noise (±15%) to
// BenchmarkAppend; they were chosen for the reasons above.
func badgerOptions(o Options, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(o.Dir).
		WithLogger(badgerLogger{l: log.With("lib", "badger")}).
		WithSyncWrites(o.Sync).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithValueThreshold(valueThreshold).
		WithMemTableSize(memTableSize).
		WithNumLevelZeroTables(1).
		WithValueLogFileSize(valueLogFileSize).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithNumCompactors(numCompactors).
		// Damaged data is an error, never garbage or a panic (integrity.go):
		// every block read and every value read checks its checksum. Badger's
		// OnTableRead would skip a damaged table at Open, and panics in its own
		// goroutines on some damage; Open reads every table itself before.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true)
}

// Stats are counters for metrics. Counts are since Open unless noted.
type Stats struct {
	Commits           uint64        // successful group commits
	CommitErrors      uint64        // failed group commits (their frames were not stored)
	Frames            uint64        // frames durably stored
	Records           uint64        // records written into segments
	Bytes             uint64        // segment bytes written, as stored (compressed)
	SegmentsWritten   uint64        // segments written
	SegmentsRetired   uint64        // segments deleted after full delivery
	SegmentsLive      int           // segments not yet retired (current)
	LiveBytes         int64         // stored bytes of live segments (current)
	ResidentSegments  int           // live segments whose delivery state is in memory (current)
	ResidentRecords   int64         // records of resident segments (current)
	ColdSegments      int           // live segments whose delivery state is only on disk (current)
	ColdRecords       int64         // records of cold segments (current)
	Devices           int           // devices with stored state (current)
	Queued            int           // frames waiting for the next commit (current)
	LastCommitFrames  int           // frames in the last commit
	LastCommitLatency time.Duration // duration of the last Badger commit
	CheckpointKeys    int           // device checkpoint keys (current)
	Snapshots         uint64        // checkpoint rewrites
	VlogGCRewrites    uint64        // value-log files rewritten by GC
	IngestHolds       uint64        // times the committer held new data for delivery to catch up (admit.go)
}
