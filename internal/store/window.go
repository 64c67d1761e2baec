package store

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Windowed frames: the UDP dedupe of protocol v1.1 (selective acknowledgement).
//
// Over TCP a device's frames arrive in order, and "seq <= last stored seq" is a resend. Over UDP
// datagrams are lost and reordered while several are in flight, so a frame may be stored after a
// higher one of the same device. Such frames are appended with Frame.Window set, and the store
// keeps, for every device that ever stored one, a window: which of the WindowSize seqs below its
// highest stored seq were stored (the anti-replay window of IPsec ESP, RFC 4303 §3.4.3, and DTLS,
// RFC 6347 §4.1.2.6). Store.WindowSeq answers from it.
//
// The window is durable. A stored seq is either in a live segment (Open reads every live segment
// and registers its frames, which rebuilds the window: Frame.Window is kept in the segment
// encoding) or it left the journal: its segment retired, or it had no routes and was never put
// into one. For those the committer writes device checkpoint entries, and an entry of a device
// with a window carries the window (checkpoint value version 2). Windows merge as sets of seqs
// aligned to the highest one, so entries can be replayed in any order, like the plain ones.
//
// Frames that are not windowed (TCP, NDJSON) keep the cumulative meaning: once one with seq S is
// stored, every seq <= S counts as stored (the window's floor). A device without a window has no
// window state at all (deviceState.win is nil); the first windowed frame starts it from the
// device's last stored seq, as a floor.
//
// Hooks: the rest of the store calls into this file at these points, and nowhere else.
//   - Frame.Window, frameMeta.window, deviceState.win, committer.win: the state.
//   - registerLocked (state.go), before lastSeq moves: windowRegisterLocked. A cold segment
//     counted at Open (loadColdLocked, resident.go): windowColdLocked.
//   - setLocked (state.go), when a frame's last (record, route) pair is done: windowDoneLocked,
//     told whether the mark is new (not a bitmap read back when a cold segment warms).
//   - applyCommit (commit.go), for every committed frame, before lastSeq moves: windowCommitLocked.
//   - commit (commit.go): ckWindowsReset with clear(c.ck), ckWindowFrame for each frame without
//     routes, ckWindowBytes in the checkpoint budget; refuseGaps skips windowed frames; collect:
//     retireWindowCostLocked and ckWindowRetireLocked for each retiring segment; fill: ckVersion
//     and appendCkEntry write the checkpoint value.
//   - snapshot (snapshot.go): snapshotVersion and appendSnapshotEntry.
//   - load (recover.go): decodeCheckpointWindows and windowLoadLocked.
//   - AppendSegment/DecodeSegment (segment.go): flagWindow.
//   - Start (store.go) and notify.go: Hooks.OnWindowDelivered through the notifier.
// A rewrite of those files must keep these calls, with the same ordering (a window is fed every
// stored seq of its device before lastSeq moves, resident or cold; frames are registered before
// the delivery marks of their segment replay). A segment going cold leaves the window alone: its
// windowed frames stay pending there until their marks arrive, after it warms.

// WindowSize is how many seqs below a device's highest stored seq the store remembers
// individually for windowed frames (W in codec/native/PROTOCOL.md). A seq further below counts as stored: a
// device must keep fewer datagrams than this in flight.
const WindowSize = 1024

const windowWords = WindowSize / 64

// window is the windowed-seq state of one device. Its bitmaps are rings indexed by seq modulo
// WindowSize, covering the seqs in (top-WindowSize, top]. Guarded by Store.state.
type window struct {
	top   uint64 // highest stored seq
	floor uint64 // every seq <= floor counts as stored; floor >= top-WindowSize, floor >= cum
	// cum is the highest cumulative seq (a frame that is not windowed, or the device's last seq
	// when its window started): below it, delivery is the delivered watermark's to tell.
	cum  uint64
	seen [windowWords]uint64
	// pend marks windowed frames stored with records not yet done on every route: what ack
	// mode delivery needs to answer a resent datagram. Not persisted: Open rebuilds it from the
	// live segments.
	pend [windowWords]uint64
}

// windowEntryMax bounds the encoded size of a checkpoint entry's window part.
const windowEntryMax = 1 + 2*binary.MaxVarintLen64 + WindowSize/8

func windowBit(seq uint64) (int, uint64) {
	p := seq % WindowSize
	return int(p / 64), 1 << (p % 64)
}

// newWindow starts a window with every seq up to last counting as stored.
func newWindow(last uint64) *window {
	w := &window{}
	w.fill(last)
	return w
}

// slide moves top up to seq, forgetting the seqs that leave the window.
func (w *window) slide(seq uint64) {
	if seq <= w.top {
		return
	}
	if seq-w.top >= WindowSize {
		clear(w.seen[:])
		clear(w.pend[:])
	} else {
		for s := w.top + 1; s <= seq; s++ {
			i, m := windowBit(s)
			w.seen[i] &^= m
			w.pend[i] &^= m
		}
	}
	w.top = seq
	if seq > WindowSize {
		w.floor = max(w.floor, seq-WindowSize)
	}
}

// add records a stored windowed seq.
func (w *window) add(seq uint64) {
	w.slide(seq)
	if seq > w.floor {
		i, m := windowBit(seq)
		w.seen[i] |= m
	}
}

// fill records a stored cumulative seq: it and everything below count as stored.
func (w *window) fill(seq uint64) {
	w.slide(seq)
	w.floor = max(w.floor, seq)
	w.cum = max(w.cum, seq)
}

// has reports whether seq counts as stored.
func (w *window) has(seq uint64) bool {
	switch {
	case seq > w.top:
		return false
	case seq <= w.floor:
		return true
	}
	i, m := windowBit(seq)
	return w.seen[i]&m != 0
}

// inRange reports whether seq is in (top-WindowSize, top], where the rings describe it.
func (w *window) inRange(seq uint64) bool { return seq <= w.top && seq+WindowSize > w.top }

func (w *window) setPending(seq uint64, on bool) {
	if !w.inRange(seq) {
		return
	}
	i, m := windowBit(seq)
	if on {
		w.pend[i] |= m
	} else {
		w.pend[i] &^= m
	}
}

func (w *window) pending(seq uint64) bool {
	if !w.inRange(seq) {
		return false
	}
	i, m := windowBit(seq)
	return w.pend[i]&m != 0
}

// packedFloor is the floor a checkpoint entry states: the window's floor raised over the stored
// seqs that follow it without a hole, so a window without holes is written without a bitmap.
func (w *window) packedFloor() uint64 {
	f := w.floor
	for f < w.top {
		i, m := windowBit(f + 1)
		if w.seen[i]&m == 0 {
			break
		}
		f++
	}
	return f
}

// appendEntry appends the window part of a version-2 checkpoint entry whose seq is w.top:
//
//	kind byte 1, top-floor (uvarint), floor-cum (uvarint), bitmap length (uvarint), bitmap
//
// where bit i of the bitmap (byte i/8, LSB first) stands for seq top-i, above the floor; the
// bitmap ends at its last non-zero byte.
func (w *window) appendEntry(dst []byte) []byte {
	floor := w.packedFloor()
	n := w.top - floor // seqs described by the bitmap
	var b [WindowSize / 8]byte
	last := -1
	for i := uint64(0); i < n; i++ {
		if w.has(w.top - i) {
			b[i/8] |= 1 << (i % 8)
			last = int(i / 8)
		}
	}
	dst = append(dst, entryWindow)
	dst = binary.AppendUvarint(dst, n)
	dst = binary.AppendUvarint(dst, floor-min(w.cum, floor))
	dst = binary.AppendUvarint(dst, uint64(last+1))
	return append(dst, b[:last+1]...)
}

// merge adds the seqs of a decoded checkpoint entry: every seq <= floor (cumulatively up to cum),
// and top-i for every set bit i of bits.
func (w *window) merge(top, floor, cum uint64, bm []byte) {
	w.slide(top)
	w.fill(cum)
	w.floor = max(w.floor, floor)
	for i, c := range bm {
		for c != 0 {
			j := uint64(bits.TrailingZeros8(c))
			c &= c - 1
			if off := uint64(i)*8 + j; off < top {
				w.add(top - off)
			}
		}
	}
}

// Checkpoint value, version 2: version byte, then until the end of the value entries of
// (device: uvarint length + bytes, seq: uvarint, kind byte): kind 0 is a plain entry (what a
// version 1 entry says: the device's last seq, everything up to it stored), kind 1 is followed by
// the device's window (see window.appendEntry), whose top is the entry's seq. A value holds
// version 1 when none of its entries carries a window, so a store that never saw a windowed
// frame writes what earlier versions of the store read.
const (
	checkpointVersionWindow = 2
	entryPlain              = 0
	entryWindow             = 1
)

// ckWindow is the window part of a decoded checkpoint entry; bits is only valid during the
// callback.
type ckWindow struct {
	floor, cum uint64
	bits       []byte
}

// decodeCheckpointWindows calls fn for every entry of a checkpoint value of either version;
// win is nil for a plain entry. The name and win passed to fn are only valid during the call.
func decodeCheckpointWindows(data []byte, fn func(device []byte, seq uint64, win *ckWindow)) error {
	if len(data) == 0 {
		return fmt.Errorf("checkpoint: empty: %w", ErrCorrupt)
	}
	v := data[0]
	if v != checkpointVersion && v != checkpointVersionWindow {
		return fmt.Errorf("checkpoint: version %d: %w", v, ErrVersion)
	}
	d := decoder{b: data, p: 1}
	var cw ckWindow
	for d.left() > 0 {
		name := d.bytes(d.uvarint())
		seq := d.uvarint()
		var win *ckWindow
		if v == checkpointVersionWindow {
			switch d.byte() {
			case entryPlain:
			case entryWindow:
				n := d.uvarint()
				c := d.uvarint()
				cw.bits = d.bytes(d.uvarint())
				if n > seq || c > seq-n || uint64(len(cw.bits)) > (n+7)/8 {
					d.fail()
				}
				cw.floor = seq - n
				cw.cum = cw.floor - c
				win = &cw
			default:
				d.fail()
			}
		}
		if d.err != nil {
			return fmt.Errorf("checkpoint: %w", ErrCorrupt)
		}
		fn(name, seq, win)
	}
	return nil
}

// appendCheckpointEntryV appends one entry of a checkpoint value of version ver; w, if not nil,
// is the device's window (only in version 2) and seq must then be its top.
func appendCheckpointEntryV(dst []byte, ver byte, device string, seq uint64, w *window) []byte {
	dst = appendCheckpointEntry(dst, device, seq)
	if ver != checkpointVersionWindow {
		return dst
	}
	if w == nil {
		return append(dst, entryPlain)
	}
	return w.appendEntry(dst)
}

// ckWindows is the committer's window state: the windows the checkpoint entries of the current
// transaction carry, and how many devices have a window. Committer-owned (Open's load runs
// before the committer starts).
type ckWindows struct {
	m       map[string]*window
	free    []*window
	devices int // devices with a window (deviceState.win != nil)
}

// ckWindowsReset forgets the windows of the previous transaction; commit calls it with
// clear(c.ck).
func (c *committer) ckWindowsReset() {
	for _, w := range c.win.m {
		c.win.free = append(c.win.free, w)
	}
	clear(c.win.m)
}

// ckWindowFor returns the window the checkpoint entry of device carries in this transaction,
// starting it from d's window (nil d or no window: d's last seq as a floor) and from the plain
// entry the device already has in c.ck. Called with the state lock held (read or write).
func (c *committer) ckWindowFor(name string, d *deviceState) *window {
	if w := c.win.m[name]; w != nil {
		return w
	}
	if c.win.m == nil {
		c.win.m = make(map[string]*window)
	}
	var w *window
	if n := len(c.win.free); n > 0 {
		w, c.win.free = c.win.free[n-1], c.win.free[:n-1]
	} else {
		w = new(window)
	}
	switch {
	case d == nil:
		*w = window{}
	case d.win != nil:
		*w = *d.win
	default:
		*w = window{}
		w.fill(d.lastSeq)
	}
	if seq, ok := c.ck[name]; ok {
		w.fill(seq) // plain entries of this transaction are cumulative
	}
	c.win.m[name] = w
	return w
}

// ckWindowFrame is commit's hook for a frame without routes (not put into a segment), called
// before the frame's plain checkpoint entry is noted in c.ck: the entry of a device with a
// windowed frame in this transaction carries its window, with this frame in it.
func (s *Store) ckWindowFrame(f *Frame) {
	c := &s.c
	w := c.win.m[f.Device]
	if w == nil {
		if !f.Window {
			return // a plain entry says it all
		}
		s.state.RLock()
		w = c.ckWindowFor(f.Device, s.devices[f.Device])
		s.state.RUnlock()
	}
	if f.Window {
		w.add(f.Seq)
	} else {
		w.fill(f.Seq)
	}
}

// ckWindowBytes bounds what the windows add to this transaction's checkpoint value.
func (c *committer) ckWindowBytes() int64 { return int64(len(c.win.m)) * windowEntryMax }

// retireWindowCostLocked bounds what retiring seg adds to the checkpoint value for windows:
// collect counts it against the transaction budget before it takes seg.
func (s *Store) retireWindowCostLocked(seg *segState) int64 {
	var n int64
	var last *deviceState
	for i := range seg.frames {
		fm := &seg.frames[i]
		if !fm.window || fm.dev == last || s.c.win.m[fm.dev.name] != nil {
			continue
		}
		last = fm.dev
		n += int64(len(fm.dev.name)) + checkpointEntryOverhead + windowEntryMax
	}
	return n
}

// ckWindowRetireLocked is collect's hook for each frame of a segment taken for retirement: a
// windowed frame leaves the journal, so its device's checkpoint entry in this transaction
// carries the device's window, which holds the frame's seq (or has moved past it).
func (s *Store) ckWindowRetireLocked(fm *frameMeta) {
	if !fm.window {
		return
	}
	c := &s.c
	w := c.ckWindowFor(fm.dev.name, fm.dev)
	if cur, ok := c.ck[fm.dev.name]; !ok || w.top > cur {
		c.ck[fm.dev.name] = w.top
	}
}

// ckVersion is the version of this transaction's checkpoint value.
func (c *committer) ckVersion() byte {
	if len(c.win.m) > 0 {
		return checkpointVersionWindow
	}
	return checkpointVersion
}

// appendCkEntry appends the checkpoint entry of device to this transaction's value (of version
// ckVersion), with its window if it has one here.
func (c *committer) appendCkEntry(dst []byte, device string, seq uint64) []byte {
	w := c.win.m[device]
	if w != nil && seq > w.top {
		w.fill(seq) // not through ckWindowFrame: a plain, cumulative seq
	}
	if w != nil {
		seq = w.top
	}
	return appendCheckpointEntryV(dst, c.ckVersion(), device, seq, w)
}

// snapshotVersion is the version of snapshot chunks: 2 once some device has a window.
func (s *Store) snapshotVersion() byte {
	if s.c.win.devices > 0 {
		return checkpointVersionWindow
	}
	return checkpointVersion
}

// appendSnapshotEntry appends d's entry to a snapshot chunk (chunk[0] is its version).
func appendSnapshotEntry(chunk []byte, d *deviceState) []byte {
	if d.win != nil && chunk[0] == checkpointVersionWindow {
		return appendCheckpointEntryV(chunk, chunk[0], d.name, d.win.top, d.win)
	}
	return appendCheckpointEntryV(chunk, chunk[0], d.name, d.lastSeq, nil)
}

// windowOfLocked returns d's window, starting it from d's last seq.
func (s *Store) windowOfLocked(d *deviceState) *window {
	if d.win == nil {
		d.win = newWindow(d.lastSeq)
		s.c.win.devices++
		s.deviceBytes += windowEntryMax
	}
	return d.win
}

// windowRegisterLocked is registerLocked's hook for each DATA frame of a segment, called before
// the device's lastSeq moves (at commit and at Open).
func (s *Store) windowRegisterLocked(d *deviceState, fm *frameMeta, f *Frame) {
	fm.window = f.Window
	switch {
	case f.Window:
		w := s.windowOfLocked(d)
		w.add(f.Seq)
		w.setPending(f.Seq, fm.remaining > 0)
	case d.win != nil:
		d.win.fill(f.Seq)
	}
}

// windowCommitLocked is applyCommit's hook for each committed DATA frame, called before the
// device's lastSeq moves. Segment frames were registered already (adding again changes nothing);
// a windowed frame without routes or records is done now, and says so.
func (s *Store) windowCommitLocked(d *deviceState, f *Frame) {
	switch {
	case f.Window:
		s.windowOfLocked(d).add(f.Seq)
		if len(f.Routes) == 0 || len(f.Records) == 0 {
			s.notify.pushFrame(d.name, f.Seq)
		}
	case d.win != nil:
		d.win.fill(f.Seq)
	}
}

// windowDoneLocked is setLocked's hook for a windowed frame whose records are now done on every
// route: it tells OnWindowDelivered if the last mark is new (not one read back from disk, when
// Open rebuilds the state or a cold segment warms: that frame was done before).
func (s *Store) windowDoneLocked(fm *frameMeta, newMark bool) {
	fm.dev.win.setPending(fm.seq, false)
	if newMark && !s.loading {
		s.notify.pushFrame(fm.dev.name, fm.seq)
	}
}

// windowColdLocked is loadColdLocked's hook for each DATA frame of a segment Open counts as cold
// without registering it, called before the device's lastSeq moves; undone tells whether some
// record of the frame is not done.
func (s *Store) windowColdLocked(d *deviceState, f *Frame, undone bool) {
	switch {
	case f.Window:
		w := s.windowOfLocked(d)
		w.add(f.Seq)
		w.setPending(f.Seq, undone)
	case d.win != nil:
		d.win.fill(f.Seq)
	}
}

// windowLoadLocked is load's hook for each checkpoint entry, called before d's lastSeq moves.
func (s *Store) windowLoadLocked(d *deviceState, seq uint64, cw *ckWindow) {
	switch {
	case cw != nil:
		s.windowOfLocked(d).merge(seq, cw.floor, cw.cum, cw.bits)
	case d.win != nil:
		d.win.fill(seq)
	}
}

// WindowSeq reports what the store holds of seq for device, for the dedupe of windowed frames:
// whether it counts as stored (it was stored, or it is at or below a cumulative seq stored after
// it, or older than the device's window), and, if so, whether it is delivered: every record of
// it done on every route (delivered or dead-lettered; at once for a frame without routes).
// Frames still being committed count as neither. For a seq older than the window, and for seqs
// of a device that never stored a windowed frame, delivered is DeliveredSeq's answer. Safe for
// concurrent use.
func (s *Store) WindowSeq(device string, seq uint64) (stored, delivered bool) {
	s.state.RLock()
	defer s.state.RUnlock()
	d := s.devices[device]
	switch {
	case d == nil:
		return false, false
	case d.win == nil:
		return seq <= d.lastSeq, seq <= d.delivered
	case !d.win.has(seq):
		return false, false
	case seq <= d.win.cum || !d.win.inRange(seq):
		// A frame that is not windowed, or one older than the window: the watermark knows,
		// unless a windowed frame stored below it is still pending.
		return true, seq <= d.delivered && !d.win.pending(seq)
	default:
		return true, !d.win.pending(seq) // a windowed frame
	}
}
