package actors

import (
	"encoding/json"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Teltonika trackers. A tracker's identity is its IMEI: the fleet's or the registry's device
// whose identity is that IMEI gives its metadata. Teltonika packets carry no sequence number, so
// the device actor numbers each packet's new records as the identity's next frame (as it does
// NDJSON lines) and answers the packet once that frame is stored (ack mode persist) or delivered
// by every route (ack mode delivery). Answers go out in the order the packets came (a queue of
// replies per identity, each waiting for the seq that covers its records).
//
// Dedupe: a tracker resends a packet whose answer it did not get, after a reconnect too. Each
// record is keyed by a 64-bit hash of its JSON (which holds the IMEI's record timestamp and
// every field), kept per IMEI for the records of its last telWindowPackets packets, with the
// seq of the frame that stored them. A record found there is not stored again; the packet is
// answered with its full count once the frames holding its records are stored (or delivered).
// The windows live in memory, outside the device actors (they outlast a reconnect and an idle
// actor), for at most telMaxWindows IMEIs (beyond, an arbitrary one is dropped). They do not
// survive a restart of the relay: a packet whose answer a crash lost is stored again when the
// device resends it (at least once). A window's keys of a frame the store refused are dropped
// with it.

// telWindowPackets is how many of an IMEI's latest packets its dedupe window covers.
const telWindowPackets = 4

// telMaxWindows bounds the IMEIs with a dedupe window (each ≈16 bytes a record of its last
// telWindowPackets packets: ≈3 KiB for packets of 50 records).
const telMaxWindows = 1 << 16

// Teltonika actor messages.
type (
	telOpenMsg struct {
		conn netio.Conn
		imei string
	}
	// telPacketMsg is one AVL packet (TCP or UDP) or, with bad, a TCP packet that did not check.
	telPacketMsg struct {
		conn    netio.Conn
		records [][]byte // one JSON object each
		keys    []uint64 // their dedupe keys
		bad     bool
		udp     *teltonika.UDPHeader // set for a datagram
		imei    string               // of a datagram
		at      time.Time
	}
	telResponseMsg struct {
		conn netio.Conn
		text string
	}
)

// telState is the Teltonika state of an identity's entry, owned like its connection (by the
// actor while awake, under System.mu while dormant).
type telState struct {
	replies  []telReply   // answers waiting for their records, in order
	cmds     []telCommand // commands to write, oldest first
	awaiting uint64       // the task whose Codec 12 response is awaited (0: none)
}

type telReply struct {
	seq   uint64 // written once this seq is stored (or delivered)
	conn  netio.Conn
	frame []byte
}

type telCommand struct {
	task uint64
	text string
}

type telKey struct{ hash, seq uint64 }

// telWindow holds the dedupe keys of an identity's latest packets. Only the identity's actor
// uses it.
type telWindow struct {
	packets [telWindowPackets][]telKey
	next    int
}

func (w *telWindow) find(h uint64) (uint64, bool) {
	for _, p := range w.packets {
		for _, k := range p {
			if k.hash == h {
				return k.seq, true
			}
		}
	}
	return 0, false
}

func (w *telWindow) add(keys []telKey) {
	w.packets[w.next] = keys
	w.next = (w.next + 1) % telWindowPackets
}

// drop forgets the keys of frames above seq (the store refused them).
func (w *telWindow) drop(above uint64) {
	for i, p := range w.packets {
		kept := p[:0]
		for _, k := range p {
			if k.seq <= above {
				kept = append(kept, k)
			}
		}
		w.packets[i] = kept
	}
}

// telShared is the System's Teltonika state: the dedupe windows and the counters.
type telShared struct {
	seed    maphash.Seed
	mu      sync.Mutex // guards windows; held for a map access only
	windows map[string]*telWindow

	records, duplicates, acks, strayResponses atomic.Int64
}

func (s *System) telWindow(id string) *telWindow {
	t := &s.tel
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.windows == nil {
		t.windows = make(map[string]*telWindow)
	}
	w := t.windows[id]
	if w == nil {
		if len(t.windows) >= telMaxWindows {
			for k := range t.windows {
				delete(t.windows, k)
				break
			}
		}
		w = &telWindow{}
		t.windows[id] = w
	}
	return w
}

// TeltonikaStats are the actors' Teltonika counters.
type TeltonikaStats struct {
	Records    int64 // AVL records stored
	Duplicates int64 // AVL records not stored again: a resent packet's
	Acks       int64 // answers written (TCP counts and UDP acks)
	Stray      int64 // Codec 12 responses with no command awaiting one
}

// TeltonikaStats returns the counters. Safe for concurrent use.
func (s *System) TeltonikaStats() TeltonikaStats {
	return TeltonikaStats{Records: s.tel.records.Load(), Duplicates: s.tel.duplicates.Load(),
		Acks: s.tel.acks.Load(), Stray: s.tel.strayResponses.Load()}
}

// teltonikaCollectors are the collectors of TeltonikaStats, read when scraped.
func (s *System) teltonikaCollectors() []prometheus.Collector {
	f := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		f("fleetrelay_teltonika_records_total", "Teltonika AVL records stored.", func() int64 { return s.TeltonikaStats().Records }),
		f("fleetrelay_teltonika_duplicates_total", "Teltonika AVL records of resent packets, answered but not stored again.", func() int64 { return s.TeltonikaStats().Duplicates }),
		f("fleetrelay_teltonika_acks_total", "Teltonika packets answered (TCP record counts, UDP acknowledgements), after their records were stored.", func() int64 { return s.TeltonikaStats().Acks }),
		f("fleetrelay_teltonika_stray_responses_total", "Codec 12 responses that answered no command the relay awaited.", func() int64 { return s.TeltonikaStats().Stray }),
	}
}

var _ netio.TeltonikaDispatcher = (*System)(nil)

// telAdmit decides whether IMEI imei is admitted (Options.Auth): in mode known an IMEI with
// metadata; in mode token one with metadata and no token, since a tracker has no way to present
// one. It returns the metadata it admitted on.
func (s *System) telAdmit(imei string, c netio.Conn) (*DeviceMeta, bool) {
	mode := s.opts.Auth
	if mode == "" || mode == AuthOpen {
		return nil, true
	}
	m := s.meta(imei)
	reason := ""
	switch {
	case m == nil:
		reason = RefusedUnknown
	case mode == AuthToken && m.TokenHash != ([32]byte{}):
		reason = RefusedNoToken
	}
	if reason == "" {
		return m, true
	}
	s.opts.Metrics.refused(reason)
	if held, ok := s.authLog.Allow(); ok {
		s.log.Warn("teltonika device refused", "device", imei, "remote", c.Remote().String(), "reason", reason, "suppressed", held)
	}
	return nil, false
}

// OpenTeltonika implements netio.TeltonikaDispatcher.
func (s *System) OpenTeltonika(c netio.Conn, imei string) (netio.TeltonikaSession, error) {
	m, ok := s.telAdmit(imei, c)
	if !ok {
		return nil, ErrRefused
	}
	e := s.dispatch(imei, &telOpenMsg{conn: c, imei: imei}, true)
	if e == nil {
		return nil, ErrRefused // MaxUnknown: counted there
	}
	e.seen(time.Now())
	return &telSession{session{sys: s, e: e, conn: c, admitted: m}}, nil
}

// TeltonikaUDP implements netio.TeltonikaDispatcher. A datagram that Options.Auth does not admit,
// or of an identity refused at MaxUnknown, is dropped unanswered.
func (s *System) TeltonikaUDP(c netio.Conn, h *teltonika.UDPHeader, p *teltonika.Packet) {
	if _, ok := s.telAdmit(h.IMEI, c); !ok {
		return
	}
	at := time.Now()
	recs, keys := s.telRender(p)
	if e := s.dispatch(h.IMEI, &telPacketMsg{conn: c, records: recs, keys: keys, udp: h, imei: h.IMEI, at: at}, true); e != nil {
		e.seen(at)
	}
}

// telScratch holds the buffers telRender renders into before it copies the packet's JSON out
// at its exact size (*[]byte; any goroutine).
var telScratch sync.Pool

// telRender renders p's records as JSON objects (one buffer of the exact size, so no growth is
// copied and nothing beyond the JSON is held while the frame waits for its routes) and keys
// them for the dedupe.
func (s *System) telRender(p *teltonika.Packet) ([][]byte, []uint64) {
	n := len(p.Records)
	sp, _ := telScratch.Get().(*[]byte)
	if sp == nil {
		sp = new([]byte)
	}
	hint := 0
	for i := range p.Records {
		hint += teltonika.JSONSizeHint(&p.Records[i])
	}
	scratch := slices.Grow((*sp)[:0], hint)
	ends := make([]int, n)
	for i := range p.Records {
		scratch = teltonika.AppendJSON(scratch, &p.Records[i])
		ends[i] = len(scratch)
	}
	buf := append([]byte(nil), scratch...)
	if cap(scratch) <= telScratchMax {
		*sp = scratch[:0]
		telScratch.Put(sp)
	}
	recs := make([][]byte, n)
	keys := make([]uint64, n)
	start := 0
	for i, end := range ends {
		recs[i] = buf[start:end:end]
		keys[i] = maphash.Bytes(s.tel.seed, recs[i])
		start = end
	}
	return recs, keys
}

// telScratchMax is the largest scratch buffer telRender keeps: a full packet of records with
// many IO elements (beyond, rare, it is left to the GC).
const telScratchMax = 256 << 10

// telSession is the netio.TeltonikaSession of one TCP connection.
type telSession struct{ session }

func (ts *telSession) Packet(p *teltonika.Packet) {
	if !ts.stillAdmitted() {
		return
	}
	at := time.Now()
	recs, keys := ts.sys.telRender(p)
	ts.e.seen(at)
	ts.sys.deliver(ts.e, &telPacketMsg{conn: ts.conn, records: recs, keys: keys, at: at})
}

func (ts *telSession) Bad(string) {
	ts.sys.deliver(ts.e, &telPacketMsg{conn: ts.conn, bad: true, at: time.Now()})
}

func (ts *telSession) Response(text string) {
	if !ts.stillAdmitted() {
		return
	}
	ts.sys.deliver(ts.e, &telResponseMsg{conn: ts.conn, text: text})
}

// telOpen takes a new Teltonika connection: it replaces the old one, and every unfinished
// command is due on it.
func (d *deviceActor) telOpen(m *telOpenMsg) {
	e := d.e
	if e.conn != nil && e.conn != m.conn {
		e.conn.Close()
	}
	e.setConn(m.conn)
	e.serial, e.imei, e.iccid = "", m.imei, ""
	e.acked = 0
	e.tel = &telState{}
	d.sys.commands(e, true)
}

// telPacket stores a packet's new records as the identity's next frame and queues its answer.
func (d *deviceActor) telPacket(m *telPacketMsg) {
	e := d.e
	if m.udp != nil {
		e.setConn(m.conn) // answer the latest source address
		if e.tel == nil {
			e.tel = &telState{}
		}
		if e.serial == "" && e.imei == "" {
			e.imei = m.imei
		}
	} else if m.conn != e.conn || e.tel == nil {
		return // a packet of a connection since replaced: the device resends it
	}
	var reply telReply
	reply.conn = m.conn
	switch {
	case m.bad:
		reply.frame = teltonika.AppendAck(nil, 0) // in turn: seq 0 waits for nothing
	default:
		w := d.sys.telWindow(e.id)
		seq := d.appended + 1
		// fresh is m.records itself until a record is left out (the usual packet has none).
		fresh := m.records[:0:0]
		skipped := false
		keys := make([]telKey, 0, len(m.records))
		for i, rec := range m.records {
			dup := false
			if at, ok := w.find(m.keys[i]); ok {
				reply.seq = max(reply.seq, at)
				dup = true
			} else {
				for _, k := range keys { // the same record twice in one packet
					if k.hash == m.keys[i] {
						dup = true
						break
					}
				}
			}
			if dup {
				if !skipped {
					skipped = true
					fresh = append(make([][]byte, 0, len(m.records)), m.records[:i]...)
				}
				continue
			}
			if skipped {
				fresh = append(fresh, rec)
			}
			keys = append(keys, telKey{hash: m.keys[i], seq: seq})
		}
		if !skipped {
			fresh = m.records
		}
		d.sys.tel.duplicates.Add(int64(len(m.records) - len(fresh)))
		if len(fresh) > 0 {
			w.add(keys)
			d.sys.tel.records.Add(int64(len(fresh)))
			d.append(seq, fresh, false, nil, m.at)
			reply.seq = seq
		}
		if m.udp != nil {
			reply.frame = teltonika.AppendUDPAck(nil, *m.udp, uint8(len(m.records)))
		} else {
			reply.frame = teltonika.AppendAck(nil, uint32(len(m.records)))
		}
	}
	e.tel.replies = append(e.tel.replies, reply)
	d.sys.telFlush(e, d.telDone())
}

// telDone is the seq up to which the identity's frames may be answered: stored (ack mode
// persist) or delivered by every route (ack mode delivery).
func (d *deviceActor) telDone() uint64 {
	if d.sys.opts.AckMode == AckDelivery {
		return d.sys.opts.Journal.DeliveredSeq(d.e.id)
	}
	return d.e.stored.Load()
}

// telFlush writes, in order, the answers whose records are done up to seq; once none waits, the
// next command may go out. Called by e's actor, or under s.mu if e is dormant.
func (s *System) telFlush(e *deviceEntry, seq uint64) {
	t := e.tel
	i := 0
	for ; i < len(t.replies) && t.replies[i].seq <= seq; i++ {
		t.replies[i].conn.Write(t.replies[i].frame)
		t.replies[i] = telReply{}
	}
	if i > 0 {
		s.tel.acks.Add(int64(i))
		t.replies = append(t.replies[:0], t.replies[i:]...)
	}
	s.telSendCommand(e)
}

// telRefused drops what a store refusal voids: the dedupe keys and the answers of frames above
// the seq the identity's frames restart from.
func (d *deviceActor) telRefused() {
	e := d.e
	d.sys.telWindow(e.id).drop(d.appended)
	if e.tel == nil {
		return
	}
	kept := e.tel.replies[:0]
	for _, r := range e.tel.replies {
		if r.seq <= d.appended {
			kept = append(kept, r)
		}
	}
	e.tel.replies = kept
}

// telResponse completes the awaited command with the device's Codec 12 response: stored and
// routed as a task result ({"text": ...}), as a native RESULT with code 0.
func (d *deviceActor) telResponse(m *telResponseMsg) {
	e := d.e
	if m.conn != e.conn || e.tel == nil || e.tel.awaiting == 0 {
		d.sys.tel.strayResponses.Add(1)
		return
	}
	task := e.tel.awaiting
	e.tel.awaiting = 0
	data, _ := json.Marshal(struct {
		Text string `json:"text"`
	}{m.text})
	d.result(&resultMsg{task: task, code: 0, data: data, at: time.Now()})
	d.sys.telSendCommand(e)
}

// telBadCommand is the result of a task whose payload has no "text" for a Teltonika device.
const telBadCommand = `{"error":"a command to a Teltonika device needs a payload {\"text\": \"<command>\"}"}`

// telCommands queues e's due commands (all unfinished ones with resend, for a new connection)
// and writes the first if the device is idle. A payload without a "text" string fails its task
// at once (code 1, telBadCommand). Called by e's actor, or under s.mu if e is dormant.
func (s *System) telCommands(e *deviceEntry, resend bool) {
	t := e.tel
	if resend {
		t.cmds, t.awaiting = t.cmds[:0], 0
	}
	var bad []uint64
	s.opts.Commands.Due(e.id, resend, func(task uint64, payload []byte) {
		var p struct {
			Text *string `json:"text"`
		}
		if json.Unmarshal(payload, &p) != nil || p.Text == nil || *p.Text == "" {
			bad = append(bad, task)
			return
		}
		t.cmds = append(t.cmds, telCommand{task: task, text: *p.Text})
	})
	for _, task := range bad { // after Due: Result takes the manager's lock
		s.opts.Commands.Result(e.id, task, 1, []byte(telBadCommand))
	}
	s.telSendCommand(e)
}

// telSendCommand writes the next command as a Codec 12 frame if none awaits its response and no
// packet awaits its answer (the device is between packets).
func (s *System) telSendCommand(e *deviceEntry) {
	t := e.tel
	if e.conn == nil || e.conn.Datagram() || t.awaiting != 0 || len(t.replies) > 0 || len(t.cmds) == 0 {
		return
	}
	c := t.cmds[0]
	t.cmds = t.cmds[1:]
	t.awaiting = c.task
	e.conn.Write(teltonika.AppendCommand(nil, c.text))
}
