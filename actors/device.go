package actors

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Device actor messages.
type (
	helloMsg struct {
		conn  netio.Conn
		hello native.Hello
	}
	dataMsg struct {
		conn        netio.Conn
		seq         uint64
		records     [][]byte
		udpIdentity string    // set for UDATA: the device said who it is in the datagram
		at          time.Time // when the frame arrived
	}
	// resultMsg carries a RESULT frame: a command result, stored and routed like DATA but
	// outside the seq space, and never acknowledged (the protocol has no ACK for it).
	resultMsg struct {
		task uint64
		code uint8
		data []byte    // the result data: one JSON object
		at   time.Time // when the frame arrived
	}
	// linesMsg carries the NDJSON lines of one identity from one read: the actor numbers them as
	// one frame. There is no connection to answer.
	linesMsg struct {
		identity string
		imei     bool // identity is an IMEI, not a serial
		records  [][]byte
		done     func() // netio's in-flight budget: called once the lines are stored or refused (may be nil)
	}
	closedMsg struct{ conn netio.Conn }
	// commandsMsg: the device has new commands (System.CommandsReady).
	commandsMsg struct{}
	ackMsg      struct{} // the store committed frames: ack up to entry.stored
	failedMsg   struct {
		seq   uint64
		gen   uint64 // the actor's gen when the frame was appended
		lines int    // records of an NDJSON frame (lost: nobody will resend them); 0 for native
		err   error
	} // the store refused a frame
	deliveredMsg struct{ seq uint64 } // ack mode delivery: all routes done up to seq
	// windowDoneMsg is the store's answer for the frame of a datagram (a windowed frame).
	windowDoneMsg struct {
		seq uint64
		err error
	}
	// frameDeliveredMsg: ack mode delivery, the datagram's frame seq is done on every route.
	frameDeliveredMsg struct{ seq uint64 }
	// idleMsg is the idle timer of actor d; a late one, for an actor that has stopped, is ignored.
	idleMsg struct{ d *deviceActor }
	// loadedMsg is the answer of SeqLoader.LoadLastSeq (see deviceActor.wait).
	loadedMsg struct {
		seq uint64
		err error
	}
)

// loadTimeout bounds the load of an identity's lastSeq (SeqLoader): a device waits that long
// for its WELCOME at most, then gets ERROR 503.
const loadTimeout = 5 * time.Second

// deviceActor is the single writer for one device identity while its entry is awake: it dedupes
// by seq, appends new frames to the journal in order and acknowledges what is safe. It owns the
// entry's connection state. An entry goes dormant, and a new actor starts from it, only with
// nothing in flight: then appended is stored, linesSeq is at most stored, gen is moot and no
// WELCOME is due, so the fields below need not outlive the actor.
type deviceActor struct {
	sys *System
	e   *deviceEntry

	appended uint64 // highest seq handed to the journal
	// gen counts store refusals that reset appended; a refusal of a frame appended before the
	// last reset is the tail of the same failure (ErrGap) and must not reset again.
	gen    uint64
	ndjson bool // NDJSON lines arrived since the last idle tick: stay until idle
	// linesSeq is the highest seq given to NDJSON lines. A HELLO while such a frame is in flight
	// is answered once it is committed (welcomeDue), so WELCOME's lastSeq covers it and the
	// device does not reuse its seq.
	linesSeq   uint64
	welcomeDue bool
	// window holds the seqs of datagrams appended and not yet answered by the store: a resend
	// of one is not appended again, and is acknowledged by the commit. Nil until the first.
	window map[uint64]struct{}

	// The idle timer ticks every DeviceIdle; a tick with nothing heard since the one before
	// finds the device idle. (protoactor's ReceiveTimeout fires once, and its timer goroutine
	// writes the actor context unsynchronised.)
	idle  *time.Timer
	tick  idleMsg
	heard bool

	// loading: the identity's lastSeq is being loaded (SeqLoader, wait); held are the messages
	// that came meanwhile, in order, handled once it is loaded.
	loading bool
	held    []any
}

func (d *deviceActor) Receive(ctx actor.Context) {
	msg := ctx.Message()
	if _, ok := msg.(*idleMsg); !ok {
		d.heard = true
	}
	if d.loading && heldWhileLoading(msg) {
		d.e.pending.Add(-1)
		d.held = append(d.held, msg)
		return
	}
	d.receive(ctx, msg)
}

// heldWhileLoading tells the messages that wait, in their order, while the identity's lastSeq
// is being loaded: what comes from the device's connections and from the relay's commands, not
// the answers of the journal and of the load, nor the idle timer or protoactor's own.
func heldWhileLoading(msg any) bool {
	switch msg.(type) {
	case *helloMsg, *dataMsg, *linesMsg, *resultMsg, *closedMsg, *commandsMsg, *telOpenMsg, *telPacketMsg,
		*telResponseMsg:
		return true
	}
	return false
}

func (d *deviceActor) receive(ctx actor.Context, msg any) {
	e := d.e
	switch m := msg.(type) {
	case *actor.Started:
		d.appended = e.stored.Load()
		d.tick.d = d
		d.idle = time.AfterFunc(firstIdle(d.sys.opts.DeviceIdle), func() { d.sys.deliver(e, &d.tick) })
	case *actor.Stopping:
		d.idle.Stop()
	case *helloMsg:
		e.pending.Add(-1)
		if d.wait(m) {
			return
		}
		e.hello(m)
		if d.linesSeq > e.stored.Load() {
			d.welcomeDue = true // NDJSON lines in flight took seqs: WELCOME once they are stored
			return
		}
		d.welcomeDue = false
		d.sys.welcome(e)
	case *dataMsg:
		e.pending.Add(-1)
		if d.wait(m) {
			return
		}
		d.data(m)
	case *linesMsg:
		e.pending.Add(-1)
		if d.wait(m) {
			return
		}
		d.lines(m)
	case *resultMsg:
		e.pending.Add(-1)
		d.result(m)
	case *commandsMsg:
		e.pending.Add(-1)
		d.sys.commands(e, false)
	case *telOpenMsg:
		e.pending.Add(-1)
		d.telOpen(m)
	case *telPacketMsg:
		e.pending.Add(-1)
		if d.wait(m) {
			return
		}
		d.telPacket(m)
	case *telResponseMsg:
		e.pending.Add(-1)
		d.telResponse(m)
	case *ackMsg:
		e.pending.Add(-1)
		e.ackDue.Store(false)
		if d.welcomeDue && e.stored.Load() >= d.linesSeq {
			d.welcomeDue = false
			d.sys.welcome(e)
		}
		if d.sys.opts.AckMode == AckPersist {
			d.sys.ack(e, e.stored.Load())
		}
		d.maybeRetire(ctx)
	case *failedMsg:
		e.pending.Add(-1)
		if m.lines > 0 {
			d.sys.linesLost.Add(int64(m.lines))
			if held, ok := d.sys.lostLog.Allow(); ok {
				d.sys.log.Warn("store refused ndjson lines; they are lost", "device", e.id, "lines", m.lines,
					"err", m.err, "refusals_since_last_log", held)
			}
		} else if errors.Is(m.err, store.ErrDiskFull) || errors.Is(m.err, store.ErrUnavailable) {
			// the journal warns once when it starts refusing
			d.sys.log.Debug("store refused frame", "device", e.id, "seq", m.seq, "err", m.err)
		} else {
			d.sys.log.Warn("store refused frame", "device", e.id, "seq", m.seq, "err", m.err)
		}
		if m.gen == d.gen {
			// Nothing after the last committed seq may be acknowledged; the device resends it.
			// Frames appended since were chained to the refused one and are refused too.
			d.gen++
			d.appended = e.stored.Load()
			d.linesSeq = min(d.linesSeq, d.appended)
			d.welcomeDue = false
			d.telRefused()
			if e.conn != nil {
				e.conn.Fail(native.CodeUnavailable, "relay cannot store data")
				e.setConn(nil)
			}
		}
		d.maybeRetire(ctx)
	case *deliveredMsg:
		e.pending.Add(-1)
		d.sys.ack(e, m.seq)
	case *windowDoneMsg:
		e.pending.Add(-1)
		d.windowDone(m)
		d.maybeRetire(ctx)
	case *frameDeliveredMsg:
		e.pending.Add(-1)
		d.sys.ackDatagram(e, m.seq)
	case *loadedMsg:
		e.pending.Add(-1)
		e.inflight.Add(-1)
		d.loaded(ctx, m)
	case *closedMsg:
		e.pending.Add(-1)
		if e.conn == m.conn {
			e.setConn(nil)
			d.welcomeDue = false
			e.tel = nil
		}
		d.maybeRetire(ctx)
	case *idleMsg:
		e.pending.Add(-1)
		if m.d != d {
			return
		}
		if d.heard {
			d.heard = false
			d.idle.Reset(d.sys.opts.DeviceIdle)
			return
		}
		if e.conn != nil && e.conn.Datagram() {
			e.setConn(nil) // a UDP device that went quiet
		}
		d.ndjson = false // an NDJSON device that went quiet
		if d.maybeRetire(ctx) {
			return
		}
		if e.conn != nil && d.sys.sleep(e) {
			ctx.Stop(ctx.Self()) // a TCP device that went quiet: its entry keeps the connection
			return
		}
		d.idle.Reset(d.sys.opts.DeviceIdle)
	}
}

// wait holds msg back, and starts loading the identity's lastSeq, if the journal is a SeqLoader
// that did not know the identity when its entry was made; it reports whether it did. The load
// runs on a goroutine of its own (it waits for the network: never on a gnet loop, under
// System.mu or in an actor's turn), which answers with loadedMsg. Meanwhile the entry counts a
// frame in flight, so the actor neither sleeps nor retires.
func (d *deviceActor) wait(msg any) bool {
	e := d.e
	if e.loaded.Load() {
		return false
	}
	d.held = append(d.held, msg)
	if d.loading {
		return true
	}
	d.loading = true
	e.inflight.Add(1)
	sys := d.sys
	sys.wg.Add(1)
	go func() {
		defer sys.wg.Done()
		ctx, cancel := context.WithTimeout(sys.ctx, loadTimeout)
		seq, err := sys.loader.LoadLastSeq(ctx, e.id)
		cancel()
		e.pending.Add(1)
		sys.send(e, &loadedMsg{seq: seq, err: err})
	}()
	return true
}

// loaded takes the identity's lastSeq and handles the messages held meanwhile. If it could not
// be loaded, nothing that depends on it can be decided: a HELLO gets ERROR 503 (the device comes
// back later), a datagram the same, NDJSON lines are lost (nobody can be told) and Teltonika
// packets are dropped unanswered (the tracker resends them); the next such message tries again.
func (d *deviceActor) loaded(ctx actor.Context, m *loadedMsg) {
	e := d.e
	d.loading = false
	held := d.held
	d.held = nil
	if m.err == nil {
		e.noteStored(m.seq)
		d.appended = max(d.appended, e.stored.Load())
		e.loaded.Store(true)
	} else if n, ok := d.sys.refusedLog.Allow(); ok {
		d.sys.log.Warn("device's lastSeq not loaded: the device is refused for now", "device", e.id, "err", m.err,
			"refusals_since_last_log", n)
	}
	for _, msg := range held {
		if m.err != nil {
			switch h := msg.(type) {
			case *helloMsg:
				h.conn.Fail(native.CodeUnavailable, "relay cannot load device state")
				continue
			case *dataMsg:
				if h.udpIdentity != "" {
					h.conn.Fail(native.CodeUnavailable, "relay cannot load device state")
				}
				continue // TCP: its connection had its HELLO refused, or is replaced
			case *linesMsg:
				d.sys.linesLost.Add(int64(len(h.records)))
				if h.done != nil {
					h.done()
				}
				continue
			case *telPacketMsg:
				continue
			}
		}
		e.pending.Add(1) // receive counts it handled
		d.receive(ctx, msg)
	}
	if m.err != nil {
		d.maybeRetire(ctx)
	}
}

// firstIdle is when an actor's idle timer first ticks: DeviceIdle and up to half of it more, at
// random, so that actors woken together (a reconnect storm, a spray of datagrams from made-up
// identities) do not all retire together: a burst of 100,000 timer goroutines and actor stops
// at once took the RSS from 260 to up to 500 MiB.
func firstIdle(idle time.Duration) time.Duration {
	if idle < 2 {
		return idle
	}
	return idle + rand.N(idle/2)
}

// hello takes a new connection: it replaces the old one. The caller sends WELCOME.
func (e *deviceEntry) hello(m *helloMsg) {
	if e.conn != nil && e.conn != m.conn {
		e.conn.Close()
	}
	e.setConn(m.conn) // no ACK before its WELCOME
	e.serial, e.imei, e.iccid = m.hello.Serial, m.hello.IMEI, m.hello.ICCID
	e.acked = 0
	e.tel = nil
}

// setConn replaces the entry's connection. Commits acknowledge directly (ackTo) only on a
// connection that got its WELCOME; welcome sets it.
func (e *deviceEntry) setConn(c netio.Conn) {
	e.conn = c
	e.ackTo.Store(nil)
	e.connected.Store(c != nil)
	if c != nil {
		t := TransportTCP
		if c.Datagram() {
			t = TransportUDP
		}
		e.setRemote(c.Remote(), t)
	}
}

// welcome answers the connection's HELLO. Called by e's actor, or under s.mu if e is dormant.
func (s *System) welcome(e *deviceEntry) {
	w := native.Welcome{Ack: s.opts.AckMode, MaxFrame: s.opts.MaxFrame, LastSeq: e.stored.Load()}
	e.conn.Write(native.AppendWelcome(nil, &w))
	c := e.conn
	e.ackTo.Store(&c) // written after the WELCOME: netio.Acker keeps that order
	if s.opts.AckMode == AckDelivery {
		s.ack(e, s.opts.Journal.DeliveredSeq(e.id))
	}
	s.commands(e, true) // a new connection: every unfinished command, sent before or not
}

// ack sends a cumulative ACK for seq if it says something new. Called by e's actor, or under
// s.mu if e is dormant. A UDP source gets none: there an ACK names exactly its seq (ackDatagram).
func (s *System) ack(e *deviceEntry, seq uint64) {
	if e.tel != nil { // a Teltonika device: answers per packet (teltonika.go)
		s.telFlush(e, seq)
		return
	}
	if e.conn == nil || seq == 0 || seq <= e.acked || e.conn.Datagram() {
		return
	}
	e.acked = seq
	netio.WriteAck(e.conn, seq, false)
}

func (d *deviceActor) data(m *dataMsg) {
	e := d.e
	if m.udpIdentity == "" && m.conn != e.conn {
		// A frame that was on its way on a connection since replaced, or failed after a store
		// refusal: storing it could skip the refused seq (WELCOME's lastSeq would then cover a
		// frame never stored). The device resends it on its current connection.
		return
	}
	if m.udpIdentity != "" {
		e.setConn(m.conn) // UDP: answer the latest source address
		if e.serial == "" && e.imei == "" {
			e.serial, e.imei = identityFields(m.udpIdentity)
		}
		d.datagram(m)
		return
	}
	if m.seq <= d.appended { // a resend of something already stored or on its way
		done := e.stored.Load()
		if d.sys.opts.AckMode == AckDelivery {
			done = d.sys.opts.Journal.DeliveredSeq(e.id)
		}
		if m.seq <= done && done > 0 {
			// Answer every resend, even if an ACK for it went out before.
			e.acked = max(e.acked, done)
			netio.WriteAck(e.conn, done, true)
		}
		return
	}
	d.append(m.seq, m.records, false, nil, m.at)
}

// ackDatagram acknowledges exactly seq to a UDP source (protocol v1.1: over UDP an ACK covers
// its own seq, never the ones below). Called by e's actor, or under s.mu if e is dormant.
func (s *System) ackDatagram(e *deviceEntry, seq uint64) {
	if e.conn == nil || !e.conn.Datagram() {
		return
	}
	e.conn.Write(native.AppendAck(make([]byte, 0, native.AckLen), seq))
}

// datagram handles a UDATA frame. Datagrams are lost and reordered while a device keeps several
// in flight, so a seq below the highest stored one may be new: the dedupe asks the store's window
// of the identity's recent seqs (Journal.WindowSeq), not "seq <= appended", and the frame is
// appended as a windowed frame, outside the PrevSeq chain. A seq the store holds is acknowledged
// again (in ack mode delivery only once delivered) and not stored or forwarded again; a seq on
// its way to the store is dropped, as its commit acknowledges it.
func (d *deviceActor) datagram(m *dataMsg) {
	e := d.e
	if m.seq == 0 {
		return // seqs start at 1; TCP ignores 0 as well
	}
	if _, ok := d.window[m.seq]; ok {
		d.sys.opts.Metrics.resent()
		return
	}
	// Above the highest seq committed, and not on its way: new, without asking the store (the
	// commit callback moves e.stored, and the seq stays in d.window until the actor hears of it)
	// unless TCP or NDJSON frames, whose commits the window counts too, are on their way.
	if m.seq <= e.stored.Load() || e.inflight.Load() != int64(len(d.window)) {
		if stored, delivered := d.sys.opts.Journal.WindowSeq(e.id, m.seq); stored {
			d.sys.opts.Metrics.resent()
			if d.sys.opts.AckMode == AckPersist || delivered {
				d.sys.ackDatagram(e, m.seq)
			}
			return
		}
	}
	f := d.frame(m.seq, m.records)
	f.Window = true
	// NDJSON lines of the identity, and TCP frames, are numbered and chained above it.
	d.appended = max(d.appended, m.seq)
	if d.window == nil {
		d.window = make(map[uint64]struct{})
	}
	d.window[m.seq] = struct{}{}
	sys, arrived := d.sys, m.at
	e.inflight.Add(1)
	sys.opts.Journal.Append(f, func(err error) {
		if err == nil {
			sys.opts.Metrics.stored(arrived)
			e.noteStored(f.Seq)
		}
		e.pending.Add(1)
		e.inflight.Add(-1)
		sys.send(e, &windowDoneMsg{seq: f.Seq, err: err})
	})
}

// windowDone takes the store's answer for a datagram's frame: in ack mode persist the ACK of
// exactly its seq; in ack mode delivery that ACK waits for frameDeliveredMsg. A refusal answers
// ERROR 503 to the identity's source (a UDP source has no connection to close) and nothing else:
// the device resends what is not acknowledged, and no other datagram depends on it.
func (d *deviceActor) windowDone(m *windowDoneMsg) {
	delete(d.window, m.seq)
	if m.err != nil {
		if errors.Is(m.err, store.ErrDiskFull) || errors.Is(m.err, store.ErrUnavailable) {
			// the journal warns once when it starts refusing
			d.sys.log.Debug("store refused datagram", "device", d.e.id, "seq", m.seq, "err", m.err)
		} else if held, ok := d.sys.refusedLog.Allow(); ok {
			d.sys.log.Warn("store refused datagram; the device resends it", "device", d.e.id, "seq", m.seq,
				"err", m.err, "refusals_since_last_log", held)
		}
		if c := d.e.conn; c != nil && c.Datagram() {
			c.Fail(native.CodeUnavailable, "relay cannot store data")
		}
		return
	}
	if d.sys.opts.AckMode == AckPersist {
		d.sys.ackDatagram(d.e, m.seq)
	}
}

// lines stores NDJSON lines as the identity's next frame: the relay numbers them, since the
// gateway sends no seq, and acknowledges nothing, since nobody listens. Seqs continue from
// whatever the identity stored before, natively or not. While the identity has a native
// connection (or a UDP source heard from lately) the lines are refused: that device numbers its
// own frames, and a seq taken from under it would make the relay acknowledge a frame it never
// stored.
func (d *deviceActor) lines(m *linesMsg) {
	e := d.e
	d.ndjson = true
	if e.conn != nil {
		d.sys.linesRefused.Add(int64(len(m.records)))
		if held, ok := d.sys.lostLog.Allow(); ok {
			d.sys.log.Warn("ndjson lines refused: the device is connected natively", "device", d.e.id,
				"lines", len(m.records), "refusals_since_last_log", held)
		}
		if m.done != nil {
			m.done()
		}
		return
	}
	if e.serial == "" && e.imei == "" {
		if m.imei {
			e.imei = m.identity
		} else {
			e.serial = m.identity
		}
	}
	d.linesSeq = d.appended + 1
	d.append(d.linesSeq, m.records, true, m.done, time.Time{})
}

// result hands a command result to the journal as a result frame, routed like the device's
// DATA. It takes no part in the seq chain: it leaves appended, gen and PrevSeq alone, and a
// refusal cannot fail the connection's DATA. Nothing waits for the commit (there is no ACK,
// and nothing in flight needs the actor), so it is not counted in e.inflight; a refusal is only
// logged, since the device cannot be told. The frame is stored whichever connection of the
// identity it came on: unlike DATA, no seq can be skipped by it, and no one resends it.
func (d *deviceActor) result(m *resultMsg) {
	e := d.e
	f := &store.Frame{
		Device:     e.id,
		Serial:     e.serial,
		IMEI:       e.imei,
		ICCID:      e.iccid,
		ReceivedAt: m.at.UnixMilli(),
		Records:    [][]byte{m.data},
		Result:     true,
		Task:       m.task,
		Code:       m.code,
	}
	if f.Serial == "" && f.IMEI == "" {
		// The entry has no HELLO: the connection's entry was retired after its connection
		// failed, and the result went to a new one. The identity is a serial or an IMEI.
		f.Serial, f.IMEI = identityFields(e.id)
	}
	meta := d.sys.meta(e.id)
	if meta != nil {
		f.IMEI, f.ICCID = cmp.Or(f.IMEI, meta.IMEI), cmp.Or(f.ICCID, meta.ICCID)
	}
	f.Routes = d.sys.routesFor(f.IMEI, meta)
	log, cmds := d.sys.log, d.sys.opts.Commands
	d.sys.opts.Journal.Append(f, func(err error) {
		if err != nil {
			log.Warn("store refused command result; it is lost", "device", f.Device, "task", f.Task,
				"code", f.Code, "err", err)
			return // the task stays sent: the next connection sends it again
		}
		if cmds != nil { // the task is complete once its task event is stored
			cmds.Result(f.Device, f.Task, f.Code, m.data)
		}
	})
}

// append hands frame seq to the journal; the commit callback advances e.stored and schedules the
// ACK, a refusal comes back as failedMsg. done, if not nil, is called when the store has answered.
func (d *deviceActor) append(seq uint64, records [][]byte, lines bool, done func(), arrived time.Time) {
	f := d.frame(seq, records)
	f.PrevSeq = d.appended
	d.appended = seq
	e, sys, gen := d.e, d.sys, d.gen
	lost := 0
	if lines {
		lost = len(records)
	}
	e.inflight.Add(1)
	sys.opts.Journal.Append(f, func(err error) {
		if done != nil {
			done()
		}
		if err != nil {
			e.pending.Add(1)
			e.inflight.Add(-1)
			sys.send(e, &failedMsg{seq: f.Seq, gen: gen, lines: lost, err: err})
			return
		}
		sys.opts.Metrics.stored(arrived)
		e.noteStored(f.Seq)
		if sys.opts.AckMode == AckPersist {
			if c := e.ackTo.Load(); c != nil {
				// The connection was welcomed: acknowledge from here, without a hop through the
				// actor. netio coalesces the ACKs of a commit per connection and never writes
				// one lower than before. The ACK is handed over before inflight drops, so
				// Quiesce sees it.
				netio.WriteAck(*c, e.stored.Load(), false)
				e.inflight.Add(-1)
				return
			}
		}
		// One ackMsg covers every commit that lands before the actor reads e.stored.
		e.pending.Add(1)
		e.inflight.Add(-1)
		if e.ackDue.CompareAndSwap(false, true) {
			sys.send(e, &ackMsg{})
		} else {
			e.pending.Add(-1)
		}
	})
}

// frame builds the store frame of DATA seq of the identity, with its routes.
func (d *deviceActor) frame(seq uint64, records [][]byte) *store.Frame {
	f := &store.Frame{
		Device:     d.e.id,
		Serial:     d.e.serial,
		IMEI:       d.e.imei,
		ICCID:      d.e.iccid,
		Seq:        seq,
		ReceivedAt: time.Now().UnixMilli(),
		Records:    records,
	}
	meta := d.sys.meta(d.e.id)
	if meta != nil { // what the device did not say itself
		f.IMEI, f.ICCID = cmp.Or(f.IMEI, meta.IMEI), cmp.Or(f.ICCID, meta.ICCID)
	}
	f.Routes = d.sys.routesFor(f.IMEI, meta)
	return f
}

// maybeRetire forgets the identity once it has neither a connection nor NDJSON lines coming
// and nothing is on its way; it reports whether the actor stopped.
func (d *deviceActor) maybeRetire(ctx actor.Context) bool {
	if d.e.conn == nil && !d.ndjson && d.sys.retire(d.e) {
		ctx.Stop(ctx.Self())
		return true
	}
	return false
}

// identityFields maps a UDATA identity to serial or IMEI: exactly 15 digits is an IMEI.
func identityFields(id string) (serial, imei string) {
	if native.ValidIMEI(id) {
		return "", id
	}
	return id, ""
}

// noteStored raises e.stored to seq (commit callbacks run on the store's goroutine, in any
// order across a device's frames).
func (e *deviceEntry) noteStored(seq uint64) {
	for {
		old := e.stored.Load()
		if seq <= old || e.stored.CompareAndSwap(old, seq) {
			return
		}
	}
}
