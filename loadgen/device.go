// Package loadgen simulates device fleets against a relay over plain sockets, the way device
// firmware behaves: it keeps every unacknowledged frame, resends from WELCOME's lastSeq after a
// reconnect, and never reuses a seq; its Teltonika trackers (teltonika*.go) hold each AVL packet
// until its answer counts every record, as FMB firmware does. It is an independent client of the relay: it shares only the
// codec leaves (the wire codec, and the JSON scanning its sink uses), never the relay's own code
// paths. It also serves the floors bench reads the relay against (floor.go): the least a server
// can do for the same fleet, acknowledging on receipt and, for the pipeline floor, forwarding
// every record to the sink as the relay's default route would.
package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// DeviceConfig describes one simulated TCP device.
type DeviceConfig struct {
	Addr   string       // relay TCP address
	Hello  native.Hello // identity sent in HELLO
	Window int          // unacknowledged frames in flight (default 64)
	Local  net.Addr     // optional source address (spread over 127.0.0.0/8 for large fleets)
	// OnAck, if set, is called (with the device's lock held: keep it short) for every frame an
	// ACK covers, with the time the frame was due, first written, and acknowledged.
	OnAck func(seq uint64, due, sent, acked time.Time)
	// Commands is how the device answers COMMANDs (see commands.go).
	Commands CommandConfig
	// TLS, if set, connects to the relay's TLS listener with it (the native protocol inside).
	// Its ServerName defaults to Addr's host.
	TLS *tls.Config
}

// ErrRelay is an ERROR frame sent by the relay.
type ErrRelay struct {
	Code uint16
	Msg  string
}

func (e *ErrRelay) Error() string { return fmt.Sprintf("relay error %d: %s", e.Code, e.Msg) }

type pending struct {
	seq       uint64
	frame     []byte
	due, sent time.Time
}

// Device is one simulated device speaking the native protocol over TCP. It is safe for
// concurrent use; Send blocks while the window is full.
type Device struct {
	cfg   DeviceConfig
	first uint64 // the first seq this device used

	mu        sync.Mutex
	cond      *sync.Cond
	conn      net.Conn
	gen       int // connection generation; readers of old connections stop touching state
	nextSeq   uint64
	unacked   []pending // ascending seq
	frameHint int       // largest frame sent so far: sizes the next burst's buffer
	acked     uint64
	welcome   native.Welcome
	relayErr  *ErrRelay
	connErr   error
	wg        sync.WaitGroup
	cmds      commandState
}

// NewDevice creates a disconnected device whose next seq is first (use 1 for a fresh device).
func NewDevice(cfg DeviceConfig, first uint64) *Device {
	if cfg.Window <= 0 {
		cfg.Window = 64
	}
	d := &Device{cfg: cfg, nextSeq: first, first: first}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// SetAddr makes the device's next Connect dial addr (another relay of a cluster). It must not be
// called while Connect runs.
func (d *Device) SetAddr(addr string) {
	d.mu.Lock()
	d.cfg.Addr = addr
	d.mu.Unlock()
}

// Connect dials the relay, says HELLO, waits for WELCOME and resends every unacknowledged frame
// with seq > lastSeq. In ack mode persist, frames ≤ lastSeq are stored and count as acknowledged.
func (d *Device) Connect(ctx context.Context) error {
	dialer := net.Dialer{LocalAddr: d.cfg.Local}
	conn, err := dialer.DialContext(ctx, "tcp", d.cfg.Addr)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if d.cfg.TLS != nil {
		tc := tls.Client(conn, d.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	if _, err := conn.Write(native.AppendHello(nil, &d.cfg.Hello)); err != nil {
		conn.Close()
		return err
	}
	r := bufio.NewReaderSize(conn, 4096)
	typ, body, err := readFrame(r)
	if err != nil {
		conn.Close()
		return fmt.Errorf("wait for WELCOME: %w", err)
	}
	if typ == native.TypeError {
		code, msg, _ := native.ParseError(body)
		conn.Close()
		return &ErrRelay{Code: code, Msg: msg}
	}
	if typ != native.TypeWelcome {
		conn.Close()
		return fmt.Errorf("first frame is type %#x, want WELCOME", typ)
	}
	w, err := native.ParseWelcome(body)
	if err != nil {
		conn.Close()
		return err
	}
	_ = conn.SetDeadline(time.Time{})

	d.mu.Lock()
	if d.conn != nil {
		d.conn.Close()
	}
	d.gen++
	d.conn, d.welcome, d.relayErr, d.connErr = conn, w, nil, nil
	if w.Ack == "persist" {
		d.ackLocked(w.LastSeq)
	}
	var resend []byte
	for _, p := range d.unacked {
		if p.seq > w.LastSeq {
			resend = append(resend, p.frame...)
		}
	}
	gen := d.gen
	d.mu.Unlock()

	d.wg.Add(1)
	go d.read(conn, r, gen)
	if len(resend) > 0 {
		if _, err := conn.Write(resend); err != nil {
			return err
		}
	}
	return nil
}

// tlsConfig is DeviceConfig.TLS with its ServerName set.
func (d *Device) tlsConfig() *tls.Config {
	cfg := d.cfg.TLS
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(d.cfg.Addr)
	}
	return cfg
}

// Welcome is the last WELCOME received.
func (d *Device) Welcome() native.Welcome {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.welcome
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var hdr [native.HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	if n == 0 || n > native.MaxFrameLimit {
		return 0, nil, fmt.Errorf("bad frame length %d", n)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[4], body, nil
}

func (d *Device) read(conn net.Conn, r *bufio.Reader, gen int) {
	defer d.wg.Done()
	for {
		typ, body, err := readFrame(r)
		d.mu.Lock()
		if gen != d.gen {
			d.mu.Unlock()
			return
		}
		if err != nil {
			d.connErr = err
			d.cond.Broadcast()
			d.mu.Unlock()
			return
		}
		switch typ {
		case native.TypeAck:
			if seq, err := native.ParseAck(body); err == nil {
				d.ackLocked(seq)
			}
		case native.TypeError:
			code, msg, _ := native.ParseError(body)
			d.relayErr = &ErrRelay{Code: code, Msg: msg}
			d.cond.Broadcast()
		case native.TypePing:
			_, _ = conn.Write(native.AppendFrame(nil, native.TypePong, body))
		case native.TypeCommand:
			d.commandLocked(conn, body)
		}
		d.mu.Unlock()
	}
}

func (d *Device) ackLocked(seq uint64) {
	if seq <= d.acked {
		return
	}
	d.acked = seq
	i := 0
	var now time.Time
	for i < len(d.unacked) && d.unacked[i].seq <= seq {
		if d.cfg.OnAck != nil {
			if now.IsZero() {
				now = time.Now()
			}
			p := &d.unacked[i]
			d.cfg.OnAck(p.seq, p.due, p.sent, now)
		}
		i++
	}
	d.unacked = append(d.unacked[:0], d.unacked[i:]...)
	d.cond.Broadcast()
}

// Send sends one DATA frame holding records and returns its seq. It blocks while the window is
// full; the frame is kept until acknowledged, even if the write fails (Connect resends it).
func (d *Device) Send(records ...[]byte) (uint64, error) {
	return d.SendDue(time.Time{}, records...)
}

// SendDue is Send for a frame that was due at due (an open-loop schedule): latency measured from
// due includes the time the frame waited for the window (no coordinated omission).
func (d *Device) SendDue(due time.Time, records ...[]byte) (uint64, error) {
	d.mu.Lock()
	for len(d.unacked) >= d.cfg.Window && d.connErr == nil && d.relayErr == nil {
		d.cond.Wait()
	}
	if err := d.errLocked(); err != nil {
		d.mu.Unlock()
		return 0, err
	}
	seq := d.nextSeq
	d.nextSeq++
	frame := native.AppendData(nil, seq, records...)
	now := time.Now()
	if due.IsZero() {
		due = now
	}
	d.unacked = append(d.unacked, pending{seq: seq, frame: frame, due: due, sent: now})
	conn := d.conn
	d.mu.Unlock()
	if conn == nil {
		return seq, ErrClosed
	}
	if _, err := conn.Write(frame); err != nil {
		return seq, err
	}
	return seq, nil
}

// SendBurst waits until the window has room, then sends up to max frames in one write (as a
// device flushing its backlog would) and returns how many. fill appends the records of frame seq
// to recs and returns them; the slices must stay valid until fill is called again. due, if not
// nil, gives the time the i-th frame of the burst was due (default: now).
func (d *Device) SendBurst(max int, due func(i int) time.Time, fill func(seq uint64, recs [][]byte) [][]byte) (int, error) {
	return d.SendBurstContext(context.Background(), max, due, fill)
}

// SendBurstContext is SendBurst that stops waiting for the window, and sends nothing, when ctx
// ends (then it returns ctx's error).
func (d *Device) SendBurstContext(ctx context.Context, max int, due func(i int) time.Time, fill func(seq uint64, recs [][]byte) [][]byte) (int, error) {
	d.mu.Lock()
	if len(d.unacked) >= d.cfg.Window && ctx.Done() != nil { // about to wait: wake up when ctx ends
		d.mu.Unlock()
		stop := context.AfterFunc(ctx, func() {
			d.mu.Lock()
			d.cond.Broadcast()
			d.mu.Unlock()
		})
		defer stop()
		d.mu.Lock()
	}
	for len(d.unacked) >= d.cfg.Window && d.connErr == nil && d.relayErr == nil && ctx.Err() == nil {
		d.cond.Wait()
	}
	if err := d.errLocked(); err != nil {
		d.mu.Unlock()
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		d.mu.Unlock()
		return 0, err
	}
	n := min(max, d.cfg.Window-len(d.unacked))
	now := time.Now()
	out := make([]byte, 0, n*d.frameHint) // one allocation: the frames stay referenced until acked
	var recs [][]byte
	for i := 0; i < n; i++ {
		seq := d.nextSeq
		d.nextSeq++
		recs = fill(seq, recs[:0])
		start := len(out)
		out = native.AppendData(out, seq, recs...)
		at := now
		if due != nil {
			at = due(i)
		}
		d.unacked = append(d.unacked, pending{seq: seq, frame: out[start:len(out):len(out)], due: at, sent: now})
		if fl := len(out) - start; fl > d.frameHint {
			d.frameHint = fl
		}
	}
	conn := d.conn
	d.mu.Unlock()
	if conn == nil {
		return n, ErrClosed
	}
	_, err := conn.Write(out)
	return n, err
}

// SendRaw writes bytes as they are (for protocol tests); nothing is tracked.
func (d *Device) SendRaw(b []byte) error {
	d.mu.Lock()
	conn := d.conn
	d.mu.Unlock()
	if conn == nil {
		return ErrClosed
	}
	_, err := conn.Write(b)
	return err
}

func (d *Device) errLocked() error {
	if d.relayErr != nil {
		return d.relayErr
	}
	if d.connErr != nil {
		return d.connErr
	}
	return nil
}

// Err is the ERROR the relay sent or the connection's read error, if any.
func (d *Device) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errLocked()
}

// Acked is the highest seq the relay acknowledged.
func (d *Device) Acked() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked
}

// Unacked is how many frames wait for an ACK.
func (d *Device) Unacked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.unacked)
}

// NextSeq is the seq the next Send will use.
func (d *Device) NextSeq() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nextSeq
}

// WaitAcked waits until seq is acknowledged, the connection fails, or ctx ends.
func (d *Device) WaitAcked(ctx context.Context, seq uint64) error {
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.acked < seq {
		if err := d.errLocked(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.cond.Wait()
	}
	return nil
}

// Close closes the connection and waits for its reader. Unacknowledged frames are kept, so a
// later Connect resends them.
func (d *Device) Close() {
	d.mu.Lock()
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	d.gen++
	d.connErr = ErrClosed
	d.cond.Broadcast()
	d.mu.Unlock()
	d.wg.Wait()
}

// ErrClosed is returned by Send on a device that has no connection.
var ErrClosed = errors.New("device not connected")
