package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Frame is one stored frame: a DATA frame (its records) or, with Result set, a
// command result (a RESULT frame). The store takes ownership of a Frame and
// its slices when it is passed to Append: neither the caller nor any reader of
// a Segment may modify it afterwards. Frames handed out in a Segment are
// read-only and safe for concurrent readers.
type Frame struct {
	Device     string // identity (serial or IMEI)
	Serial     string
	IMEI       string
	ICCID      string
	Seq        uint64
	ReceivedAt int64    // Unix milliseconds
	Records    [][]byte // each one JSON object
	Routes     []uint16 // route IDs (from RouteID) this frame's records go to; may be empty
	// PrevSeq, when non-zero, is the seq the writer appended for Device just before this frame.
	// Unless that is the device's highest stored seq (or an earlier frame of the same commit),
	// the frame is refused with ErrGap: after a failed commit nothing later may be stored past
	// the hole, or LastSeq would tell the device to forget the frame that was lost. Not stored.
	// Ignored for a windowed frame.
	PrevSeq uint64
	// Window marks a frame of the selective-acknowledgement seq space (UDP, protocol v1.1): it
	// may be stored below the device's highest seq, into a hole of the device's window, and the
	// store remembers it individually (see window.go and Store.WindowSeq). Without it a stored
	// seq is cumulative: every seq at or below it counts as stored. Stored in the segment.
	Window bool

	// Result marks a command result: Task and Code are the RESULT frame's task ID and result
	// code (0 success, 1 failure), and Records holds the result data (the relay stores it as
	// the one record). A result is not in the device's DATA seq space: its Seq and PrevSeq
	// are ignored (writers leave them 0), and storing or delivering it changes neither
	// LastSeq nor DeliveredSeq nor any checkpoint. Its records are delivered and tracked per
	// route like any other, so its segment retires only once every route is done with them.
	// A result without routes or records is not stored at all.
	Result bool
	Task   uint64
	Code   uint8
	// Notice marks a notification message of the relay's own, not of a device (see notice.go):
	// outside the seq space like a result. Stored in the segment.
	Notice bool
}

// Segment is the unit of a group commit: the frames of one commit that have at
// least one record and one route. Record positions number the records of all
// frames of the segment consecutively: record r of frame i is at Pos(i, r).
// A Segment is immutable and safe for concurrent readers.
type Segment struct {
	ID     uint64
	Frames []*Frame
	base   []uint32 // base[i] = position of the first record of Frames[i]
	n      uint32   // number of records
}

// Ref names one record of one segment.
type Ref struct {
	Seg uint64
	Pos uint32
}

// NewSegment builds a Segment over frames, computing record positions. It is
// used by the store for each commit and is exported for tests and tools.
func NewSegment(id uint64, frames []*Frame) *Segment {
	s := &Segment{ID: id, Frames: frames, base: make([]uint32, len(frames))}
	var n uint32
	for i, f := range frames {
		s.base[i] = n
		n += uint32(len(f.Records))
	}
	s.n = n
	return s
}

// Pos returns the position of record `record` of frame `frame`.
func (s *Segment) Pos(frame, record int) uint32 { return s.base[frame] + uint32(record) }

// Len returns the number of records in the segment.
func (s *Segment) Len() int { return int(s.n) }

// Locate maps a record position back to its frame and record index.
func (s *Segment) Locate(pos uint32) (frame, record int, ok bool) {
	if pos >= s.n {
		return 0, 0, false
	}
	i := sort.Search(len(s.base), func(i int) bool { return s.base[i] > pos }) - 1
	// Frames without records share their base with the next frame; Search
	// lands on the last frame whose base is <= pos, which is the one holding it.
	return i, int(pos - s.base[i]), true
}

// Record returns the record at pos, or nil if pos is out of range.
func (s *Segment) Record(pos uint32) []byte {
	i, r, ok := s.Locate(pos)
	if !ok {
		return nil
	}
	return s.Frames[i].Records[r]
}

// Segment encoding, version 1 (all integers are unsigned varints unless noted):
//
//	version byte (1)
//	frame count, record count
//	per frame:
//	  flags byte: bit 0 Serial == Device (Serial omitted), bit 1 IMEI == Device (IMEI omitted),
//	              bit 2 Result (a command result; Task and Code follow ReceivedAt),
//	              bit 3 Window (a windowed frame, see Frame.Window),
//	              bit 4 Notice (a notification message, see notice.go)
//	  Device, [Serial], [IMEI], ICCID   (each length + bytes)
//	  Seq
//	  ReceivedAt (signed varint)
//	  [Task, Code (one byte)]           (only with bit 2, Result)
//	  route count, routes
//	  record count, records (each length + bytes)
//
// Bits 2, 3 and 4 were added without a version change: segments written before them never set
// them and decode unchanged. A store binary that predates one refuses a segment holding a
// result, a windowed frame or a notice (ErrCorrupt), so such a journal cannot be opened by an
// older relay.
const segmentVersion = 1

const (
	flagSerialIsDevice = 1 << 0
	flagIMEIIsDevice   = 1 << 1
	flagResult         = 1 << 2
	flagWindow         = 1 << 3 // window.go
	flagsKnown         = flagSerialIsDevice | flagIMEIIsDevice | flagResult | flagWindow | flagNotice
)

// minFrameBytes is the smallest encoding of a frame: flags, device length,
// ICCID length, seq, received-at, route count, record count.
const minFrameBytes = 7

// AppendSegment appends the encoding of frames to dst and returns the
// extended buffer. It does not allocate beyond growing dst.
func AppendSegment(dst []byte, frames []*Frame) []byte {
	var nrec, size int
	for _, f := range frames {
		nrec += len(f.Records)
		size += encodedFrameSize(f)
	}
	dst = slices.Grow(dst, size+1+2*binary.MaxVarintLen64)
	dst = append(dst, segmentVersion)
	dst = binary.AppendUvarint(dst, uint64(len(frames)))
	dst = binary.AppendUvarint(dst, uint64(nrec))
	for _, f := range frames {
		var flags byte
		if f.Serial == f.Device {
			flags |= flagSerialIsDevice
		}
		if f.IMEI == f.Device {
			flags |= flagIMEIIsDevice
		}
		if f.Result {
			flags |= flagResult
		}
		if f.Window {
			flags |= flagWindow // window.go
		}
		if f.Notice {
			flags |= flagNotice // notice.go
		}
		dst = append(dst, flags)
		dst = appendString(dst, f.Device)
		if flags&flagSerialIsDevice == 0 {
			dst = appendString(dst, f.Serial)
		}
		if flags&flagIMEIIsDevice == 0 {
			dst = appendString(dst, f.IMEI)
		}
		dst = appendString(dst, f.ICCID)
		dst = binary.AppendUvarint(dst, f.Seq)
		dst = binary.AppendVarint(dst, f.ReceivedAt)
		if f.Result {
			dst = binary.AppendUvarint(dst, f.Task)
			dst = append(dst, f.Code)
		}
		dst = binary.AppendUvarint(dst, uint64(len(f.Routes)))
		for _, r := range f.Routes {
			dst = binary.AppendUvarint(dst, uint64(r))
		}
		dst = binary.AppendUvarint(dst, uint64(len(f.Records)))
		for _, r := range f.Records {
			dst = binary.AppendUvarint(dst, uint64(len(r)))
			dst = append(dst, r...)
		}
	}
	return dst
}

// encodedFrameSize is an upper bound of the encoded size of f.
func encodedFrameSize(f *Frame) int {
	n := 1 + 4*binary.MaxVarintLen32 + len(f.Device) + len(f.Serial) + len(f.IMEI) + len(f.ICCID) +
		2*binary.MaxVarintLen64 + binary.MaxVarintLen32 + 3*len(f.Routes) + binary.MaxVarintLen32
	if f.Result {
		n += binary.MaxVarintLen64 + 1 // Task, Code
	}
	for _, r := range f.Records {
		n += binary.MaxVarintLen32 + len(r)
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeSegment decodes a segment encoded by AppendSegment. The records of the
// returned segment are sub-slices of data (no copy), so data must not be
// modified while the segment is in use. Strings and routes are copied.
// DecodeSegment never panics; malformed input yields an error wrapping
// ErrCorrupt or ErrVersion.
func DecodeSegment(id uint64, data []byte) (*Segment, error) {
	d := decoder{b: data}
	if len(data) == 0 {
		return nil, fmt.Errorf("segment %d: empty: %w", id, ErrCorrupt)
	}
	if v := data[0]; v != segmentVersion {
		return nil, fmt.Errorf("segment %d: version %d: %w", id, v, ErrVersion)
	}
	d.p = 1
	nf := d.uvarint()
	nr := d.uvarint()
	if d.err != nil || nf > uint64(d.left()/minFrameBytes) || nr > uint64(d.left()) || nr > math.MaxUint32 {
		return nil, fmt.Errorf("segment %d: header: %w", id, ErrCorrupt)
	}
	frames := make([]Frame, nf)
	ptrs := make([]*Frame, nf)
	base := make([]uint32, nf)
	recs := make([][]byte, nr)
	var ri uint64
	var prevRoutes []uint16
	for i := range frames {
		f := &frames[i]
		ptrs[i] = f
		flags := d.byte()
		if flags&^flagsKnown != 0 {
			d.fail()
		}
		f.Device = d.string()
		if flags&flagSerialIsDevice != 0 {
			f.Serial = f.Device
		} else {
			f.Serial = d.string()
		}
		if flags&flagIMEIIsDevice != 0 {
			f.IMEI = f.Device
		} else {
			f.IMEI = d.string()
		}
		f.ICCID = d.string()
		f.Seq = d.uvarint()
		f.Window = flags&flagWindow != 0 // window.go
		f.Notice = flags&flagNotice != 0 // notice.go
		f.ReceivedAt = d.varint()
		if flags&flagResult != 0 {
			f.Result = true
			f.Task = d.uvarint()
			f.Code = d.byte()
		}
		f.Routes, prevRoutes = d.routes(prevRoutes)
		n := d.uvarint()
		if d.err != nil || n > nr-ri {
			return nil, fmt.Errorf("segment %d: frame %d: %w", id, i, ErrCorrupt)
		}
		base[i] = uint32(ri)
		if n > 0 {
			f.Records = recs[ri : ri+n : ri+n]
		}
		for j := range n {
			l := d.uvarint()
			recs[ri+j] = d.bytes(l)
		}
		ri += n
		if d.err != nil {
			return nil, fmt.Errorf("segment %d: frame %d: %w", id, i, ErrCorrupt)
		}
	}
	if ri != nr || d.left() != 0 {
		return nil, fmt.Errorf("segment %d: trailing data or record count mismatch: %w", id, ErrCorrupt)
	}
	return &Segment{ID: id, Frames: ptrs, base: base, n: uint32(nr)}, nil
}

// decoder reads varints and byte strings; after the first error every read
// returns zero values and err stays set.
type decoder struct {
	b   []byte
	p   int
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrCorrupt
	}
	d.p = len(d.b)
}

func (d *decoder) left() int { return len(d.b) - d.p }

func (d *decoder) byte() byte {
	if d.p >= len(d.b) {
		d.fail()
		return 0
	}
	c := d.b[d.p]
	d.p++
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b[d.p:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.p += n
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b[d.p:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.p += n
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if n > uint64(d.left()) {
		d.fail()
		return nil
	}
	b := d.b[d.p : d.p+int(n) : d.p+int(n)]
	d.p += int(n)
	return b
}

func (d *decoder) string() string {
	return string(d.bytes(d.uvarint()))
}

// routes decodes a route list; a list equal to prev reuses prev's backing
// array, so a segment whose frames share routes allocates them once.
func (d *decoder) routes(prev []uint16) (routes, next []uint16) {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil, prev
	}
	if n > uint64(d.left()) {
		d.fail()
		return nil, prev
	}
	same := int(n) == len(prev)
	start := d.p
	for i := range int(n) {
		v := d.uvarint()
		if v > math.MaxUint16 {
			d.fail()
			return nil, prev
		}
		if same && prev[i] != uint16(v) {
			same = false
		}
	}
	if d.err != nil {
		return nil, prev
	}
	if same {
		return prev, prev
	}
	out := make([]uint16, n)
	d.p = start
	for i := range out {
		out[i] = uint16(d.uvarint())
	}
	return out, out
}
