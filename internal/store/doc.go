// Package store owns fleetrelay's durable state in an embedded Badger
// database: the journal of stored DATA frames and command results (RESULT
// frames, see Frame.Result), per-route delivery progress,
// per-device sequence state (last stored seq and the delivered watermark),
// the route-name table, the control plane's resources (internal/registry's,
// held as values it does not interpret), and value-log garbage collection.
//
// # Journal
//
// Frames are written by a single committer goroutine in group commits. Every
// commit is one Badger transaction holding one segment key with all frames of
// the commit that have something to deliver, so the cost of a Badger write is
// paid once per group rather than once per message. A segment is deleted as a
// whole (retired) once every route of every record in it is done; messages are
// never deleted one by one, which keeps Badger's tombstones in check.
//
// # Key layout
//
//	m/format                          format version of this layout (1 byte)
//	m/seg                             highest segment ID ever committed (u64 BE)
//	n/<route name>                    route ID (u16 BE)
//	j/<segID u64 BE>                  segment: encoded frames (see AppendSegment),
//	                                  usually compressed (see segmentS2)
//	r/<routeID u16 BE>/<segID u64 BE> done bitmap of one route in one segment:
//	                                  bit p (LSB first) set = record position p done
//	s/<checkpointID u64 BE>           device checkpoint: (device, last seq) pairs,
//	                                  with windows (see window.go)
//	p/<n u32 BE>                      padding written and deleted to make Badger
//	                                  flush its memtable (see gc.go)
//	c/<routeID u16 BE>/<segID u64 BE> the segment is cold and the route has undone
//	                                  records in it (empty value; see below)
//	d/<routeID u16 BE>/<id u64 BE>    dead letter: records a route gave up on,
//	                                  with why (see deadletter.go)
//	q/<routeID u16 BE>/<id u64 BE>    dead letter being replayed
//	g/<kind>/<id>                     a control-plane resource (internal/registry): an
//	                                  account, API key, route or device, in the
//	                                  registry's encoding (see registry.go)
//
// Values of 1 KiB and more, which includes all but the smallest segments,
// are kept in Badger's value log, so the LSM tree holds little more than keys
// and pointers; retired segments are reclaimed by value-log GC (see gc.go).
//
// A device's last stored seq is the maximum over the live segments and the
// checkpoint keys. Checkpoint keys are written only for information that would
// otherwise be lost: devices of frames without routes (which are not put into
// a segment) and devices whose highest seq is in a segment retired in the same
// transaction. When the
// checkpoint keys grow past twice the size of the device table, the committer
// rewrites them as a snapshot. This keeps device state at about one small key
// per group commit instead of one key per device per commit, which measured
// 2.5–4x slower in Badger.
//
// The delivered watermark of a device is not stored: it is derived at Open
// from the frames in live segments that still have undone records.
//
// Windowed frames (UDP, selective acknowledgement) may be stored below a
// device's highest seq, so for a device that stores them the store also
// remembers which of the 1,024 seqs below its highest one were stored: a
// window, rebuilt at Open from the live segments and carried by the device's
// checkpoint entries, which a segment holding windowed frames writes when it
// retires (see window.go).
//
// # Memory
//
// The delivery state of a segment (its frames' devices, seqs and routes, and
// the routes' done bitmaps) is held in memory only while the segment is
// resident: up to Options.MaxResident records, plus whatever the routes hold
// in their in-memory queues. Beyond that, segments that no route holds go
// cold: their bitmaps are on disk, a c/ key per route with undone records
// indexes them, and memory keeps counters only (see resident.go). A backlog
// therefore costs disk, not memory, and Open reads each live segment once,
// streaming, keeping the oldest resident and counting the rest cold.
//
// Command results are journaled and delivered like DATA frames (their records
// hold the result data, and the route bitmaps track them), but they are not in
// the device's seq space: they never move its last stored seq or its delivered
// watermark, and never produce a checkpoint entry. Only the segments that hold
// them wait for them, until every route is done.
//
// All keys of one group commit, including retirements and bitmap updates, are
// written in a single Badger transaction, so the layout is consistent after a
// crash at any point.
//
// # Phases
//
// Open recovers a store (Badger opened, state rebuilt, nothing running);
// Start installs its Hooks (commits, delivered watermarks, disk-space
// refusals) and starts its goroutines, and only then does it take new data.
// Its owner builds what the hooks call into in between, over the recovered
// state; the offline tools never start it. The store also owns its
// Prometheus collectors (RegisterMetrics).
package store
