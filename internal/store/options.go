package store

import (
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
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
	// than 960 KiB in one commit, whatever the setting, so that segments stay
	// below Badger's 1 MiB value threshold (see badgerOptions).
	MaxCommitBytes int
	// GCInterval is the period of Badger value-log garbage collection.
	// Default 1 minute.
	GCInterval time.Duration
	// OnCommit, if set, is called from the committer goroutine after each
	// durable commit that wrote a segment, after the done callbacks of the
	// commit. Commits whose frames all lack routes or records write no segment
	// and do not call OnCommit. It must not block and must not call Append
	// (which can wait for the committer) or Close.
	OnCommit func(seg *Segment)
	// OnDelivered, if set, is called when a device's delivered watermark
	// (see DeliveredSeq) advances, including for frames without routes, which
	// are delivered when committed. It is called from one notifier goroutine
	// owned by the store, never with a store lock held, with increasing
	// values per device; advances that happen while an earlier one waits are
	// coalesced into the latest. It is not called for the watermarks found at
	// Open (read DeliveredSeq). It may call any Store method except Close.
	OnDelivered func(device string, seq uint64)
}

const (
	defaultMaxCommitFrames = 4096
	defaultMaxCommitBytes  = 4 << 20
	defaultGCInterval      = time.Minute
	// maxSegmentBytes keeps segments under Badger's 1 MiB value threshold.
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
	if o.GCInterval <= 0 {
		o.GCInterval = defaultGCInterval
	}
	return o
}

// badgerOptions tunes Badger for a write-mostly journal with one writer:
//
//   - conflict detection off: only the committer writes, so there is nothing
//     to detect, and it saves per-key tracking on every commit;
//   - the default 64 MiB memtable is kept: it bounds one transaction to 15%
//     of it (9.6 MiB), which the commit caps must fit in;
//   - the default (and maximum) 1 MiB value threshold is kept, and commits
//     are capped below it, so segments live in the LSM tree and are reclaimed
//     by compaction when retired. In the value log, a retired segment's space
//     is only counted as garbage once compaction drops its key, and with
//     nothing but small pointers in the LSM tree that takes many memtable
//     flushes: the log would grow by hundreds of GiB under load before GC
//     could reclaim it. Only a single frame above the cap reaches the value
//     log, which GC then handles;
//   - value-log files of 256 MiB instead of 1 GiB, so GC can reclaim space
//     in smaller steps;
//   - Snappy block compression (Badger's default) is kept: without it the
//     journal wrote about 25% fewer messages per second here, being bound by
//     disk bytes rather than CPU;
//   - Badger's logs go through slog.
func badgerOptions(o Options, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(o.Dir).
		WithLogger(badgerLogger{l: log.With("lib", "badger")}).
		WithSyncWrites(o.Sync).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithValueLogFileSize(256 << 20)
}

// Stats are counters for metrics. Counts are since Open unless noted.
type Stats struct {
	Commits           uint64        // successful group commits
	CommitErrors      uint64        // failed group commits (their frames were not stored)
	Frames            uint64        // frames durably stored
	Records           uint64        // records written into segments
	Bytes             uint64        // encoded segment bytes written
	SegmentsWritten   uint64        // segments written
	SegmentsRetired   uint64        // segments deleted after full delivery
	SegmentsLive      int           // segments not yet retired (current)
	LiveBytes         int64         // encoded bytes of live segments (current)
	Devices           int           // devices with stored state (current)
	Queued            int           // frames waiting for the next commit (current)
	LastCommitFrames  int           // frames in the last commit
	LastCommitLatency time.Duration // duration of the last Badger commit
	CheckpointKeys    int           // device checkpoint keys (current)
	Snapshots         uint64        // checkpoint rewrites
	VlogGCRewrites    uint64        // value-log files rewritten by GC
}
