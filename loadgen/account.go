package loadgen

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// MsgKey identifies one record of one device.
type MsgKey struct {
	Device string
	Seq    uint64
	Index  int
}

// maxLatencyUs is the highest end-to-end latency the histogram tells apart (1 h); later
// arrivals are recorded as 1 h.
const maxLatencyUs = int64(time.Hour / time.Microsecond)

// ledger is what a sink knows about the messages it accepted: per device which (seq, index) it
// saw (for a record with a key field, (key, 0): EnvelopeRef.MsgKey), how often, and in which order; an end-to-end latency histogram; arrivals per second.
// It is not safe for concurrent use (the sink holds its lock).
type ledger struct {
	start   time.Time
	devices map[string]*deviceLedger
	last    *deviceLedger // the device of the previous message: batches come in runs

	messages, unique, dups, reordered int64
	latency                           *hdrhistogram.Histogram
	perSecond                         []int64 // messages accepted in each second since start
}

func newLedger(start time.Time) *ledger {
	return &ledger{
		start:   start,
		devices: make(map[string]*deviceLedger),
		latency: hdrhistogram.New(1, maxLatencyUs, 3),
	}
}

// deviceLedger records one device's messages in blocks of 64 seqs: a bit per seq for index 0
// (frames of one record cost 1 bit per message, plus 16 bytes and a map entry per 64 seqs), a
// lazily added word per seq for indices 1..64, a map for indices above. Arrivals beyond the
// first are counted in a map that only duplicates populate.
type deviceLedger struct {
	name   string
	blocks map[uint64]*seqBlock // by seq / 64
	cur    *seqBlock            // the block of the previous message
	curKey uint64
	wide   map[uint64][]uint64 // seq → bitmap of indices 65..
	extra  map[seqIndex]uint32 // arrivals beyond the first

	unique, dups, reordered int64
	maxSeq                  uint64 // the latest (seq, index) seen, for order checks
	maxIndex                int
	any                     bool
}

type seqBlock struct {
	first uint64      // bit s: (base+s, 0) seen
	more  *[64]uint64 // more[s] bit i-1: (base+s, i) seen, 1 ≤ i ≤ 64
}

type seqIndex struct {
	seq   uint64
	index int
}

// device returns the ledger of the device named id, creating it.
func (l *ledger) device(id []byte) *deviceLedger {
	if d := l.last; d != nil && d.name == string(id) {
		return d
	}
	d := l.devices[string(id)]
	if d == nil {
		d = &deviceLedger{name: string(id), blocks: make(map[uint64]*seqBlock)}
		l.devices[d.name] = d
	}
	l.last = d
	return d
}

// add accounts one accepted message that arrived at nowUs (Unix microseconds).
func (l *ledger) add(e *EnvelopeRef, nowUs int64) {
	l.messages++
	d := l.device(e.Device())
	seq, index := e.MsgKey()
	switch {
	case !d.mark(seq, index):
		l.dups++
		d.dups++
		if d.extra == nil {
			d.extra = make(map[seqIndex]uint32)
		}
		d.extra[seqIndex{seq, index}]++
	case !d.any || seq > d.maxSeq || (seq == d.maxSeq && index > d.maxIndex):
		l.unique++
		d.unique++
		d.any, d.maxSeq, d.maxIndex = true, seq, index
	default:
		l.unique++
		d.unique++
		l.reordered++
		d.reordered++
	}
	if e.HasSentAt {
		lat := min(max(nowUs-e.SentAt, 0), maxLatencyUs)
		_ = l.latency.RecordValue(lat) // within the histogram's range by construction
	}
}

// arrived adds n messages to the second of nowUs.
func (l *ledger) arrived(nowUs int64, n int) {
	sec := (nowUs - l.start.UnixMicro()) / 1e6
	if sec < 0 {
		sec = 0
	}
	for int64(len(l.perSecond)) <= sec {
		l.perSecond = append(l.perSecond, 0)
	}
	l.perSecond[sec] += int64(n)
}

// mark records (seq, index) and reports whether it is new.
func (d *deviceLedger) mark(seq uint64, index int) bool {
	b := d.cur
	if b == nil || d.curKey != seq>>6 {
		b = d.blocks[seq>>6]
		if b == nil {
			b = new(seqBlock)
			d.blocks[seq>>6] = b
		}
		d.cur, d.curKey = b, seq>>6
	}
	bit := uint64(1) << (seq & 63)
	switch {
	case index == 0:
		if b.first&bit != 0 {
			return false
		}
		b.first |= bit
	case index <= 64:
		if b.more == nil {
			b.more = new([64]uint64)
		}
		w, m := &b.more[seq&63], uint64(1)<<(index-1)
		if *w&m != 0 {
			return false
		}
		*w |= m
	default:
		if d.wide == nil {
			d.wide = make(map[uint64][]uint64)
		}
		ws := d.wide[seq]
		k := index - 65
		for len(ws) <= k/64 {
			ws = append(ws, 0)
		}
		m := uint64(1) << (k % 64)
		if ws[k/64]&m != 0 {
			return false
		}
		ws[k/64] |= m
		d.wide[seq] = ws
	}
	return true
}

// has reports whether (seq, index) was seen.
func (d *deviceLedger) has(seq uint64, index int) bool {
	b := d.blocks[seq>>6]
	switch {
	case index < 0:
		return false
	case index == 0:
		return b != nil && b.first&(1<<(seq&63)) != 0
	case index <= 64:
		return b != nil && b.more != nil && b.more[seq&63]&(1<<(index-1)) != 0
	}
	ws, k := d.wide[seq], index-65
	return k/64 < len(ws) && ws[k/64]&(1<<(k%64)) != 0
}

// count is how many times (seq, index) arrived.
func (d *deviceLedger) count(seq uint64, index int) int {
	if !d.has(seq, index) {
		return 0
	}
	return 1 + int(d.extra[seqIndex{seq, index}])
}

// DeviceStats is what a sink saw of one device.
type DeviceStats struct {
	Unique    int64  `json:"unique"`    // distinct (seq, index)
	MaxSeq    uint64 `json:"maxSeq"`    // highest seq
	Dups      int64  `json:"dups"`      // arrivals beyond the first
	Reordered int64  `json:"reordered"` // messages that arrived after a later one
}

func (d *deviceLedger) stats() DeviceStats {
	return DeviceStats{Unique: d.unique, MaxSeq: d.maxSeq, Dups: d.dups, Reordered: d.reordered}
}

// LatencySummary summarises end-to-end latencies, device send time to sink arrival, in
// microseconds.
type LatencySummary struct {
	Count int64   `json:"count"`
	Min   int64   `json:"min"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P90   int64   `json:"p90"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p999"`
	Max   int64   `json:"max"`
}

func summarize(h *hdrhistogram.Histogram) LatencySummary {
	if h.TotalCount() == 0 {
		return LatencySummary{}
	}
	q := h.ValueAtPercentiles([]float64{50, 90, 99, 99.9})
	return LatencySummary{Count: h.TotalCount(), Min: h.Min(), Mean: h.Mean(), P50: q[50], P90: q[90],
		P99: q[99], P999: q[99.9], Max: h.Max()}
}

// Expect describes what devices were told was stored, the messages a sink must end up with.
type Expect struct {
	// Acked is, per device identity, the highest seq the relay acknowledged: every seq from the
	// device's first to it is expected. Devices that are absent are expected to have sent nothing.
	Acked map[string]uint64
	// First is, per device, the first seq it used; absent: 1.
	First map[string]uint64
	// Records is how many records the device's frame seq held; nil: one per frame.
	Records func(device string, seq uint64) int
	// Sample is how many lost messages AccountReport.LostSample lists (default 10).
	Sample int
	// PerDevice adds a DeviceAccount per expected device to the report.
	PerDevice bool
}

// Total is the number of messages e expects: what Account compares, without touching a sink.
func (e Expect) Total() int64 {
	var n int64
	for dev, last := range e.Acked {
		first, ok := e.First[dev]
		if !ok {
			first = 1
		}
		if last < first {
			continue
		}
		if e.Records == nil {
			n += int64(last - first + 1)
			continue
		}
		for seq := first; seq <= last; seq++ {
			n += int64(e.Records(dev, seq))
			if seq == ^uint64(0) {
				break
			}
		}
	}
	return n
}

// AccountReport compares what devices were told with what a sink received.
type AccountReport struct {
	Expected int64 `json:"expected"` // messages acknowledged to devices
	Received int64 `json:"received"` // of those, the ones that arrived (at least once)
	Lost     int64 `json:"lost"`     // Expected - Received
	Dups     int64 `json:"dups"`     // arrivals beyond the first, of any message
	// DupMessages counts distinct messages, of any device, that arrived more than once.
	DupMessages int64 `json:"dupMessages"`
	Reordered   int64 `json:"reordered"` // messages that arrived after a later one of their device
	// Extra counts distinct messages that arrived but were never acknowledged to their device,
	// which at-least-once delivery allows (the device resends them, or its ACK was lost).
	Extra       int64    `json:"extra"`
	LostDevices int      `json:"lostDevices"` // devices with at least one lost message
	LostSample  []MsgKey `json:"lostSample"`  // the first lost messages, by device then seq
	// Devices is, with Expect.PerDevice, every expected device's part, by name.
	Devices []DeviceAccount `json:"devices,omitempty"`
}

// DeviceAccount is one device's part of an AccountReport. Unlike the report's totals of
// duplicates and extras, which count every device the sink saw, it counts this device alone.
type DeviceAccount struct {
	Device      string `json:"device"`
	First       uint64 `json:"firstSeq"` // the first seq expected
	Acked       uint64 `json:"ackedSeq"` // the highest seq acknowledged
	Expected    int64  `json:"expected"` // messages acknowledged
	Received    int64  `json:"received"` // of those, the ones that arrived
	Lost        int64  `json:"lost"`
	Dups        int64  `json:"dups"`        // arrivals beyond the first
	DupMessages int64  `json:"dupMessages"` // distinct messages that arrived more than once
	Extra       int64  `json:"extra"`       // distinct messages that arrived but were not acknowledged
}

// OK reports whether nothing acknowledged was lost.
func (r AccountReport) OK() bool { return r.Lost == 0 }

func (r AccountReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "expected %d, received %d, lost %d (%d devices), dups %d (of %d messages), reordered %d, extra %d",
		r.Expected, r.Received, r.Lost, r.LostDevices, r.Dups, r.DupMessages, r.Reordered, r.Extra)
	if len(r.LostSample) > 0 {
		b.WriteString("; lost e.g.")
		for _, k := range r.LostSample {
			fmt.Fprintf(&b, " %s-%d-%d", k.Device, k.Seq, k.Index)
		}
	}
	return b.String()
}

// Account compares what devices were acknowledged (acked: per device the highest acknowledged
// seq, every seq from 1 expected; recordsPerFrame: records in each frame, nil for one) with what
// the sink received. See Sink.Account for devices that did not start at seq 1.
func Account(acked map[string]uint64, recordsPerFrame func(device string, seq uint64) int, s *Sink) AccountReport {
	return s.Account(Expect{Acked: acked, Records: recordsPerFrame})
}

// account compares e with the ledger. It walks every expected message: O(expected) time, no
// memory beyond the report.
func (l *ledger) account(e Expect) AccountReport {
	r := AccountReport{Dups: l.dups, Reordered: l.reordered}
	for _, d := range l.devices {
		r.DupMessages += int64(len(d.extra))
	}
	sample := e.Sample
	if sample <= 0 {
		sample = 10
	}
	names := make([]string, 0, len(e.Acked))
	for dev := range e.Acked {
		names = append(names, dev)
	}
	sort.Strings(names) // a stable LostSample
	var none deviceLedger
	for _, dev := range names {
		d := l.devices[dev]
		if d == nil {
			d = &none
		}
		first, ok := e.First[dev]
		if !ok {
			first = 1
		}
		lost, before := int64(0), r.Expected
		for seq := first; seq <= e.Acked[dev]; seq++ {
			n := 1
			if e.Records != nil {
				n = e.Records(dev, seq)
			}
			for idx := range n {
				r.Expected++
				if d.has(seq, idx) {
					r.Received++
					continue
				}
				lost++
				if len(r.LostSample) < sample {
					r.LostSample = append(r.LostSample, MsgKey{Device: dev, Seq: seq, Index: idx})
				}
			}
			if seq == ^uint64(0) {
				break
			}
		}
		if lost > 0 {
			r.Lost += lost
			r.LostDevices++
		}
		if e.PerDevice {
			r.Devices = append(r.Devices, deviceAccount(dev, first, e.Acked[dev], d, r.Expected-before, lost))
		}
	}
	r.Extra = l.unique - r.Received
	return r
}

// deviceAccount is d's part of a report: expected of its messages were acknowledged, lost of
// them never arrived.
func deviceAccount(name string, first, acked uint64, d *deviceLedger, expected, lost int64) DeviceAccount {
	received := expected - lost
	return DeviceAccount{Device: name, First: first, Acked: acked, Expected: expected, Received: received,
		Lost: lost, Dups: d.dups, DupMessages: int64(len(d.extra)), Extra: d.unique - received}
}
