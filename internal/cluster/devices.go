package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Device state. A node keeps, in memory, what it knows of each device it appended frames for or
// loaded: its lastSeq (the highest DATA seq stored, as store.Store.LastSeq), its UDP window
// (which recent seqs are stored, as store.Store.WindowSeq), and the frames on their way. Reads
// never leave memory: they are called under the actors' locks and from gnet callbacks.
//
// Across nodes a device's lastSeq is what the last message on its journal subject says (asked
// of the stream's leader), or, once that was purged after delivery, the devices bucket's value,
// which each node writes lazily: at most once a second per device
// (coalesced, after the publish acknowledgement, never on the ACK path), and when it forgets a
// device or closes. LoadLastSeq reads both, for a device this node does not know (Known).
//
// The subject's last message. A node also keeps, per device, the stream sequence of the last
// message on the device's subject (the expected last sequence of its next publish, journal.go)
// once it knows it: from its last publish's acknowledgement, from LoadLastSeq, or from the
// stream's leader (lastOnSubject). A result published on the subject carries the device's
// lastSeq in the header LastSeqHeader, so the lastSeq read from a subject whose last message is
// a result is still the device's.

// knownFor is how long after its last frame or load a node's lastSeq of a device counts as
// authoritative: a device away for longer may have sent through another node meanwhile.
const knownFor = 10 * time.Second

// flushEvery is how often the devices bucket is written (each device at most once a pass).
const flushEvery = time.Second

// loadTimeout bounds LoadLastSeq.
const loadTimeout = 5 * time.Second

// flushWorkers bounds the devices bucket writes in flight at once, and flushBudget those of one
// pass: beyond, devices wait for the next pass. The bucket only answers for a device once the
// journal's age limit removed its frames, so it may lag by many passes.
const (
	flushWorkers = 8
	flushBudget  = 4096
)

// warnEvery spaces the warnings of failed bucket writes (one pass a second fails while NATS is
// away).
const warnEvery = 10 * time.Second

type devices struct {
	mu    sync.Mutex
	m     map[string]*devState
	dirty map[string]struct{}   // devices whose lastSeq is not in the bucket yet
	gone  map[string]goneDevice // forgotten devices whose lastSeq is not in the bucket yet
	wake  chan struct{}         // the flusher: forgotten devices are waiting
	// warned is when a failed bucket write was last logged (Unix ns; one warning a warnEvery),
	// suppressed how many passes with failures were not logged since. The flusher's own.
	warned     int64
	suppressed int
}

type goneDevice struct{ seq, rev uint64 }

func (dv *devices) init() {
	dv.m = make(map[string]*devState)
	dv.dirty = make(map[string]struct{})
	dv.gone = make(map[string]goneDevice)
	dv.wake = make(chan struct{}, 1)
}

// devState is what a node knows of one device, under devices.mu.
type devState struct {
	last uint64  // highest DATA seq stored
	win  *window // the UDP window; nil: none yet
	// uncertain: last was loaded from the cluster, so which seqs below it another node stored
	// is not known here: the window, when one is made, counts only last and what follows.
	uncertain bool
	inflight  int   // frames appended and not yet answered
	touched   int64 // Unix ns of the last append or load (Known)
	flushed   uint64
	rev       uint64 // the bucket entry's revision as last written or read (0: unknown)

	// The device's frames on their way (journal.go): the first is being published (or its
	// subject learned) while busy; exp is the stream sequence of the subject's last message
	// when expKnown (0: no message).
	queue    []*entry
	busy     bool
	exp      uint64
	expKnown bool
}

// pop drops the first frame of d's queue.
func (d *devState) pop() {
	d.queue[0] = nil
	d.queue = d.queue[1:]
	if len(d.queue) == 0 {
		d.queue = nil
	}
}

// storedLocked notes DATA frame f of d stored.
func (dv *devices) storedLocked(f *store.Frame, d *devState) {
	if f.Window {
		d.windowLocked().add(f.Seq)
	} else if d.win != nil {
		d.win.fill(f.Seq)
	}
	if f.Seq > d.last {
		d.last = f.Seq
		if d.last > d.flushed {
			dv.dirty[f.Device] = struct{}{}
		}
	}
}

// raiseLocked takes last, read from the cluster, as d's lastSeq if it is higher: another node
// stored seqs up to it, which seqs below it is not known here.
func (dv *devices) raiseLocked(d *devState, last uint64) {
	if last > d.last {
		d.last = last
		d.win, d.uncertain = nil, true
	}
}

// sequenced tells a DATA frame of the device's seq space (not a result or notification).
func sequenced(f *store.Frame) bool { return !f.Result && !f.Notice }

// chained tells a frame whose PrevSeq must be the device's lastSeq (store.Frame.PrevSeq).
func chained(f *store.Frame) bool { return sequenced(f) && !f.Window && f.PrevSeq != 0 }

// stateLocked returns device's state, made if it has none.
func (dv *devices) stateLocked(device string) (*devState, bool) {
	d := dv.m[device]
	if d != nil {
		return d, false
	}
	d = &devState{}
	if g, ok := dv.gone[device]; ok {
		d.last, d.flushed, d.rev = g.seq, 0, g.rev
	}
	dv.m[device] = d
	return d, true
}

// LastSeq returns the highest DATA seq this node knows stored for device (see Known), 0 if none.
func (j *Journal) LastSeq(device string) uint64 {
	j.devs.mu.Lock()
	defer j.devs.mu.Unlock()
	if d := j.devs.m[device]; d != nil {
		return d.last
	}
	return j.devs.gone[device].seq
}

// DeliveredSeq is 0: what was delivered is the partitions' to know, not the ingest side's, so in
// ack mode delivery nothing is acknowledged from here.
func (j *Journal) DeliveredSeq(string) uint64 { return 0 }

// WindowSeq reports whether seq of device counts as stored, for the dedupe of datagrams (see
// store.Store.WindowSeq); delivered is always false (see DeliveredSeq). For a device whose
// lastSeq was loaded, the seqs of the window below it count as not stored: their resend is
// published again and JetStream's duplicate window answers it.
func (j *Journal) WindowSeq(device string, seq uint64) (stored, delivered bool) {
	j.devs.mu.Lock()
	defer j.devs.mu.Unlock()
	d := j.devs.m[device]
	switch {
	case d == nil:
		return false, false
	case d.win == nil && !d.uncertain:
		return seq <= d.last, false
	}
	return d.windowLocked().has(seq), false
}

// Known reports whether this node's LastSeq of device is authoritative: it appended for it or
// loaded it lately (knownFor), or frames of it are on their way. Otherwise call LoadLastSeq
// before deciding anything from LastSeq.
func (j *Journal) Known(device string) bool {
	j.devs.mu.Lock()
	defer j.devs.mu.Unlock()
	d := j.devs.m[device]
	return d != nil && (d.inflight > 0 || time.Now().UnixNano()-d.touched < int64(knownFor))
}

// Forget drops the state of device if nothing of it is on its way (see store.Store.Forget), and
// reports whether it did. Its lastSeq is written to the devices bucket soon after, if it was not
// already; LoadLastSeq on this node reads it until then.
func (j *Journal) Forget(device string) bool {
	dv := &j.devs
	dv.mu.Lock()
	defer dv.mu.Unlock()
	d := dv.m[device]
	if d == nil {
		return true
	}
	if d.inflight > 0 {
		return false
	}
	delete(dv.m, device)
	delete(dv.dirty, device)
	if d.last > d.flushed {
		dv.gone[device] = goneDevice{seq: d.last, rev: d.rev}
		select {
		case dv.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// LoadLastSeq returns device's lastSeq as the cluster knows it — the larger of the lastSeq the
// last message on its journal subject says (asked of the stream's leader: a replica's direct
// get may be behind, and a lastSeq behind what the device had acknowledged costs it resends)
// and the devices bucket's value (the subject's messages are purged once delivered) — and keeps
// it, so that LastSeq answers it (Known) from now on, with that message's stream sequence for the
// device's next publish unless frames of it are on their way. It fails with
// store.ErrUnavailable when JetStream does not answer within a few seconds.
func (j *Journal) LoadLastSeq(ctx context.Context, device string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	seq, last, err := j.lastOnSubject(ctx, device)
	if err != nil {
		return 0, err
	}
	var bucket, rev uint64
	ent, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		return j.devicesKV.Get(ctx, DeviceKey(device))
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return 0, fmt.Errorf("cluster: devices bucket entry of %q: %w: %w", device, store.ErrUnavailable, err)
	default:
		v, err := decodeDeviceValue(ent.Value())
		if err != nil {
			return 0, fmt.Errorf("cluster: devices bucket entry of %q: %w", device, err)
		}
		bucket, rev = v.LastSeq, ent.Revision()
	}
	last = max(last, bucket)
	dv := &j.devs
	dv.mu.Lock()
	defer dv.mu.Unlock()
	d, made := dv.stateLocked(device)
	if made {
		d.win, d.uncertain = nil, true // another node may have stored seqs below last
	}
	dv.raiseLocked(d, last)
	if !d.busy {
		d.exp, d.expKnown = seq, true
	}
	d.flushed = max(d.flushed, bucket)
	d.rev = max(d.rev, rev)
	d.touched = time.Now().UnixNano()
	return d.last, nil
}

// lastOnSubject asks the stream's leader (not a replica, which may be behind) for the last
// message on device's subject, and returns its stream sequence and the device's lastSeq it
// says; 0, 0 if the subject has none. It fails with store.ErrUnavailable when JetStream does not
// answer before ctx ends.
func (j *Journal) lastOnSubject(ctx context.Context, device string) (seq, last uint64, err error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{DeviceSubject(j.prefix, device, j.parts)})
	if err != nil {
		return 0, 0, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	api := jetstream.DefaultAPIPrefix + "STREAM.MSG.GET." + j.name
	_, err = retry(ctx, func(ctx context.Context) (struct{}, error) {
		m, err := j.c.nc.RequestWithContext(ctx, api, req)
		if err != nil {
			return struct{}{}, err
		}
		resp.Error, resp.Message = nil, nil
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return struct{}{}, fmt.Errorf("decode %s answer: %w", api, err)
		}
		if resp.Error != nil && resp.Error.ErrorCode != jetstream.JSErrCodeMessageNotFound {
			return struct{}{}, resp.Error
		}
		return struct{}{}, nil
	})
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("cluster: last journal message of %q from the leader: %w: %w", device, store.ErrUnavailable, err)
	case resp.Message == nil:
		return 0, 0, nil
	}
	var hdr nats.Header
	if len(resp.Message.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return 0, 0, fmt.Errorf("cluster: journal message %d of %q: headers: %w", resp.Message.Sequence, device, err)
		}
	}
	if last, err = msgLastSeq(hdr, resp.Message.Data); err != nil {
		return 0, 0, fmt.Errorf("cluster: journal message %d of %q: %w", resp.Message.Sequence, device, err)
	}
	return resp.Message.Sequence, last, nil
}

// msgLastSeq returns the device's lastSeq a journal message on its subject says: a DATA frame's
// seq, a result's LastSeqHeader (0 if it has none).
func msgLastSeq(hdr nats.Header, data []byte) (uint64, error) {
	f, err := DecodeFrame(data)
	switch {
	case err != nil:
		return 0, err
	case sequenced(f):
		return f.Seq, nil
	case hdr.Get(LastSeqHeader) == "":
		return 0, nil
	}
	last, err := strconv.ParseUint(hdr.Get(LastSeqHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("header %s: %w", LastSeqHeader, err)
	}
	return last, nil
}

// DeviceKey returns device's key in the devices bucket: its subject token (Token), with the
// "~" of a token that is not the identity itself written "=" ("~" is not allowed in a key;
// "=" is in no token).
func DeviceKey(device string) string {
	t := Token(device)
	if t[0] == '~' {
		return "=" + t[1:]
	}
	return t
}

// deviceValue is a devices bucket entry's value.
type deviceValue struct {
	LastSeq uint64 `json:"last_seq"`
	Node    string `json:"node,omitempty"` // the node that wrote it
}

func decodeDeviceValue(b []byte) (deviceValue, error) {
	var v deviceValue
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decode devices bucket value %q: %w", b, err)
	}
	return v, nil
}

// flushLoop writes the devices bucket every flushEvery, when devices were forgotten, and once
// more at Close.
func (j *Journal) flushLoop() {
	defer j.wg.Done()
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		last := false
		select {
		case <-j.stop:
			last = true
		case <-t.C:
		case <-j.devs.wake:
		}
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		j.flush(ctx)
		cancel()
		if last {
			return
		}
	}
}

// flushItem is one device's bucket write.
type flushItem struct {
	device   string
	seq, rev uint64
	gone     bool
}

// flush writes the lastSeq of the devices that moved since their last write, and of those
// forgotten.
func (j *Journal) flush(ctx context.Context) {
	dv := &j.devs
	dv.mu.Lock()
	items := make([]flushItem, 0, min(flushBudget, len(dv.dirty)+len(dv.gone)))
	for dev, g := range dv.gone {
		if len(items) == flushBudget {
			break
		}
		items = append(items, flushItem{device: dev, seq: g.seq, rev: g.rev, gone: true})
	}
	for dev := range dv.dirty {
		if len(items) == flushBudget {
			break // the others next time
		}
		delete(dv.dirty, dev)
		if d := dv.m[dev]; d != nil && d.last > d.flushed {
			items = append(items, flushItem{device: dev, seq: d.last, rev: d.rev})
		}
	}
	dv.mu.Unlock()
	sem := make(chan struct{}, flushWorkers)
	var wg sync.WaitGroup
	var failed sync.Map
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rev, err := j.writeDevice(ctx, it.device, it.seq, it.rev)
			dv.mu.Lock()
			defer dv.mu.Unlock()
			if err != nil {
				failed.Store(it.device, err)
				if d := dv.m[it.device]; d != nil && !it.gone {
					dv.dirty[it.device] = struct{}{} // the next pass tries again
				}
				return
			}
			if it.gone {
				if g, ok := dv.gone[it.device]; ok && g.seq == it.seq {
					delete(dv.gone, it.device)
				}
			}
			if d := dv.m[it.device]; d != nil {
				d.flushed = max(d.flushed, it.seq)
				d.rev = max(d.rev, rev)
			}
		})
	}
	wg.Wait()
	n := 0
	var last error
	failed.Range(func(_, v any) bool { n++; last = v.(error); return true })
	if n > 0 {
		now := time.Now().UnixNano()
		if now-dv.warned >= int64(warnEvery) {
			j.log.Warn("devices bucket: lastSeq not written; tried again", "devices", n, "err", last,
				"passes_since_last_log", dv.suppressed)
			dv.warned, dv.suppressed = now, 0
		} else {
			dv.suppressed++
		}
	}
}

// writeDevice writes seq as device's bucket value unless the bucket holds as much already, and
// returns the entry's revision. rev is the revision this node last saw (0: none): the write
// expects it, so a lower value never overwrites a higher one another node wrote.
func (j *Journal) writeDevice(ctx context.Context, device string, seq, rev uint64) (uint64, error) {
	key := DeviceKey(device)
	val, err := json.Marshal(deviceValue{LastSeq: seq, Node: j.node})
	if err != nil {
		return 0, err
	}
	for range 4 {
		r, err := retry(ctx, func(ctx context.Context) (uint64, error) {
			if rev == 0 {
				return j.devicesKV.Create(ctx, key, val)
			}
			return j.devicesKV.Update(ctx, key, val, rev)
		})
		if err == nil {
			return r, nil
		}
		if !conflict(err) {
			return 0, fmt.Errorf("write devices bucket entry %s: %w", key, err)
		}
		ent, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
			return j.devicesKV.Get(ctx, key)
		})
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev = 0
			continue
		case err != nil:
			return 0, fmt.Errorf("read devices bucket entry %s: %w", key, err)
		}
		if v, err := decodeDeviceValue(ent.Value()); err == nil && v.LastSeq >= seq {
			return ent.Revision(), nil // another node wrote as much or more
		}
		rev = ent.Revision()
	}
	return 0, fmt.Errorf("write devices bucket entry %s: changed by others 4 times", key)
}

// conflict tells a key-value write refused because the key is not at the revision expected.
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// window is a device's UDP window, as store's (store.WindowSize seqs below the highest stored
// one, remembered individually; every seq at or below floor counts as stored).
type window struct {
	top   uint64
	floor uint64
	seen  [store.WindowSize / 64]uint64
}

// windowLocked returns d's window, made if it has none: from lastSeq as a floor, or, if lastSeq
// was loaded (uncertain), with only lastSeq itself known within the window.
func (d *devState) windowLocked() *window {
	if d.win != nil {
		return d.win
	}
	w := &window{}
	if d.uncertain {
		w.top = d.last
		w.floor = d.last - min(d.last, store.WindowSize)
		if d.last > 0 {
			w.add(d.last)
		}
	} else {
		w.fill(d.last)
	}
	d.win = w
	return w
}

func windowBit(seq uint64) (int, uint64) {
	p := seq % store.WindowSize
	return int(p / 64), 1 << (p % 64)
}

// slide moves top up to seq, forgetting the seqs that leave the window.
func (w *window) slide(seq uint64) {
	if seq <= w.top {
		return
	}
	if seq-w.top >= store.WindowSize {
		clear(w.seen[:])
	} else {
		for s := w.top + 1; s <= seq; s++ {
			i, m := windowBit(s)
			w.seen[i] &^= m
		}
	}
	w.top = seq
	if seq > store.WindowSize {
		w.floor = max(w.floor, seq-store.WindowSize)
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
