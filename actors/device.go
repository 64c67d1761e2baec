package actors

import (
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
		udpIdentity string // set for UDATA: the device said who it is in the datagram
	}
	// linesMsg carries the NDJSON lines of one identity from one read: the actor numbers them as
	// one frame. There is no connection to answer.
	linesMsg struct {
		identity string
		imei     bool // identity is an IMEI, not a serial
		records  [][]byte
	}
	closedMsg struct{ conn netio.Conn }
	ackMsg    struct{} // the store committed frames: ack up to entry.stored
	failedMsg struct {
		seq   uint64
		gen   uint64 // the actor's gen when the frame was appended
		lines int    // records of an NDJSON frame (lost: nobody will resend them); 0 for native
		err   error
	} // the store refused a frame
	deliveredMsg struct{ seq uint64 } // ack mode delivery: all routes done up to seq
)

// deviceActor is the single writer for one device identity: it dedupes by seq, appends new
// frames to the journal in order and acknowledges what is safe.
type deviceActor struct {
	sys *System
	e   *deviceEntry

	serial, imei, iccid string
	conn                netio.Conn
	appended            uint64 // highest seq handed to the journal
	acked               uint64 // highest seq acknowledged on the current connection
	// gen counts store refusals that reset appended; a refusal of a frame appended before the
	// last reset is the tail of the same failure (ErrGap) and must not reset again.
	gen    uint64
	ndjson bool // NDJSON lines arrived since the last ReceiveTimeout: stay until idle
	// linesSeq is the highest seq given to NDJSON lines. A HELLO while such a frame is in flight
	// is answered once it is committed (welcomeDue), so WELCOME's lastSeq covers it and the
	// device does not reuse its seq.
	linesSeq   uint64
	welcomeDue bool
}

func (d *deviceActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.appended = d.e.stored.Load()
		ctx.SetReceiveTimeout(d.sys.opts.DeviceIdle)
	case *helloMsg:
		d.e.pending.Add(-1)
		d.hello(m)
	case *dataMsg:
		d.e.pending.Add(-1)
		d.data(m)
	case *linesMsg:
		d.e.pending.Add(-1)
		d.lines(m)
	case *ackMsg:
		d.e.pending.Add(-1)
		d.e.ackDue.Store(false)
		if d.welcomeDue && d.e.stored.Load() >= d.linesSeq {
			d.welcome()
		}
		if d.sys.opts.AckMode == AckPersist {
			d.ack(d.e.stored.Load())
		}
		d.maybeRetire(ctx)
	case *failedMsg:
		d.e.pending.Add(-1)
		if m.lines > 0 {
			d.sys.linesLost.Add(int64(m.lines))
			if held, ok := d.sys.lostLog.Allow(); ok {
				d.sys.log.Warn("store refused ndjson lines; they are lost", "device", d.e.id, "lines", m.lines,
					"err", m.err, "refusals_since_last_log", held)
			}
		} else {
			d.sys.log.Warn("store refused frame", "device", d.e.id, "seq", m.seq, "err", m.err)
		}
		if m.gen == d.gen {
			// Nothing after the last committed seq may be acknowledged; the device resends it.
			// Frames appended since were chained to the refused one and are refused too.
			d.gen++
			d.appended = d.e.stored.Load()
			d.linesSeq = min(d.linesSeq, d.appended)
			d.welcomeDue = false
			if d.conn != nil {
				d.conn.Fail(native.CodeUnavailable, "relay cannot store data")
				d.conn = nil
			}
		}
		d.maybeRetire(ctx)
	case *deliveredMsg:
		d.e.pending.Add(-1)
		d.ack(m.seq)
	case *closedMsg:
		d.e.pending.Add(-1)
		if d.conn == m.conn {
			d.conn = nil
			d.welcomeDue = false
		}
		d.maybeRetire(ctx)
	case *actor.ReceiveTimeout:
		if d.conn != nil && d.conn.Datagram() {
			d.conn = nil // a UDP device that went quiet
		}
		d.ndjson = false // an NDJSON device that went quiet
		d.maybeRetire(ctx)
	}
}

func (d *deviceActor) hello(m *helloMsg) {
	if d.conn != nil && d.conn != m.conn {
		d.conn.Close() // the new connection replaces the old one
	}
	d.conn = m.conn
	d.serial, d.imei, d.iccid = m.hello.Serial, m.hello.IMEI, m.hello.ICCID
	d.acked = 0
	if d.linesSeq > d.e.stored.Load() {
		d.welcomeDue = true // NDJSON lines in flight took seqs: WELCOME once they are stored
		return
	}
	d.welcome()
}

// welcome answers the connection's HELLO.
func (d *deviceActor) welcome() {
	d.welcomeDue = false
	stored := d.e.stored.Load()
	w := native.Welcome{Ack: d.sys.opts.AckMode, MaxFrame: d.sys.opts.MaxFrame, LastSeq: stored}
	d.conn.Write(native.AppendWelcome(nil, &w))
	if d.sys.opts.AckMode == AckDelivery {
		d.ack(d.sys.opts.Journal.DeliveredSeq(d.e.id))
	}
}

func (d *deviceActor) data(m *dataMsg) {
	if m.udpIdentity != "" {
		d.conn = m.conn // UDP: answer the latest source address
		if d.serial == "" && d.imei == "" {
			d.serial, d.imei = identityFields(m.udpIdentity)
		}
	}
	if m.seq <= d.appended { // a resend of something already stored or on its way
		done := d.e.stored.Load()
		if d.sys.opts.AckMode == AckDelivery {
			done = d.sys.opts.Journal.DeliveredSeq(d.e.id)
		}
		if m.seq <= done {
			d.acked = 0 // answer every resend, even if an ACK for it went out before
			d.ack(done)
		}
		return
	}
	d.append(m.seq, m.records, false)
}

// lines stores NDJSON lines as the identity's next frame: the relay numbers them, since the
// gateway sends no seq, and acknowledges nothing, since nobody listens. Seqs continue from
// whatever the identity stored before, natively or not. While the identity has a native
// connection (or a UDP source heard from lately) the lines are refused: that device numbers its
// own frames, and a seq taken from under it would make the relay acknowledge a frame it never
// stored.
func (d *deviceActor) lines(m *linesMsg) {
	d.ndjson = true
	if d.conn != nil {
		d.sys.linesRefused.Add(int64(len(m.records)))
		if held, ok := d.sys.lostLog.Allow(); ok {
			d.sys.log.Warn("ndjson lines refused: the device is connected natively", "device", d.e.id,
				"lines", len(m.records), "refusals_since_last_log", held)
		}
		return
	}
	if d.serial == "" && d.imei == "" {
		if m.imei {
			d.imei = m.identity
		} else {
			d.serial = m.identity
		}
	}
	d.linesSeq = d.appended + 1
	d.append(d.linesSeq, m.records, true)
}

// append hands frame seq to the journal; the commit callback advances e.stored and schedules the
// ACK, a refusal comes back as failedMsg.
func (d *deviceActor) append(seq uint64, records [][]byte, lines bool) {
	f := &store.Frame{
		Device:     d.e.id,
		Serial:     d.serial,
		IMEI:       d.imei,
		ICCID:      d.iccid,
		Seq:        seq,
		PrevSeq:    d.appended,
		ReceivedAt: time.Now().UnixMilli(),
		Records:    records,
		Routes:     d.sys.allIDs,
	}
	d.appended = seq
	e, sys, gen := d.e, d.sys, d.gen
	lost := 0
	if lines {
		lost = len(records)
	}
	e.inflight.Add(1)
	sys.opts.Journal.Append(f, func(err error) {
		if err != nil {
			e.pending.Add(1)
			e.inflight.Add(-1)
			sys.send(e, &failedMsg{seq: f.Seq, gen: gen, lines: lost, err: err})
			return
		}
		for {
			old := e.stored.Load()
			if f.Seq <= old || e.stored.CompareAndSwap(old, f.Seq) {
				break
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

// ack sends a cumulative ACK for seq if it says something new.
func (d *deviceActor) ack(seq uint64) {
	if d.conn == nil || seq == 0 || seq <= d.acked {
		return
	}
	d.acked = seq
	d.conn.Write(native.AppendAck(make([]byte, 0, native.AckLen), seq))
}

func (d *deviceActor) maybeRetire(ctx actor.Context) {
	if d.conn == nil && !d.ndjson && d.sys.retire(d.e) {
		ctx.Stop(ctx.Self())
	}
}

// identityFields maps a UDATA identity to serial or IMEI: exactly 15 digits is an IMEI.
func identityFields(id string) (serial, imei string) {
	if len(id) != 15 {
		return id, ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return id, ""
		}
	}
	return "", id
}
