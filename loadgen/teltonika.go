package loadgen

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// ErrIMEIRefused is the relay's 00 answer to a Teltonika device's IMEI handshake.
var ErrIMEIRefused = errors.New("IMEI refused")

// TeltonikaConfig describes one simulated Teltonika tracker.
type TeltonikaConfig struct {
	Addr  string   // the relay's Teltonika TCP (or UDP) address
	IMEI  string   // 15 digits
	Local net.Addr // optional source address (TCP)
	// Codec is the codec of its AVL packets: teltonika.Codec8 (the default, as FMB devices
	// ship), Codec8E or Codec16.
	Codec byte
	// AckTimeout is how long the device waits for a packet's answer (TCP) before it drops the
	// connection, reconnects and sends the packet again (default 5s), or for a datagram's answer
	// before it sends the datagram again (UDP; default 1s).
	AckTimeout time.Duration
	// First is the counter of its first record (default 1): see TeltonikaCounterIO.
	First uint64
	// Seed seeds its route and IO values (0: from the IMEI).
	Seed uint64
	// Answer is what the device answers a Codec 12 command with (default TeltonikaAnswer).
	Answer func(imei, command string) string
}

func (c *TeltonikaConfig) defaults(ackTimeout time.Duration) {
	if c.Codec == 0 {
		c.Codec = teltonika.Codec8
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = ackTimeout
	}
	if c.First == 0 {
		c.First = 1
	}
	if c.Seed == 0 {
		for _, b := range []byte(c.IMEI) {
			c.Seed = c.Seed*31 + uint64(b)
		}
	}
	if c.Answer == nil {
		c.Answer = TeltonikaAnswer
	}
}

// TeltonikaAnswer answers Codec 12 commands as an FMB920 does, in its formats: getinfo (the
// device's state and counters), getver (firmware, hardware, IMEI), getstatus; anything else
// "Unknown command".
func TeltonikaAnswer(imei, command string) string {
	now := time.Now().UTC()
	switch strings.TrimSpace(command) {
	case "getinfo":
		return fmt.Sprintf("INI:%s RTC:%s RST:1 ERR:0 SR:0 BR:0 CF:0 FG:0 FL:0 TU:0/0 UT:0 SMS:0 NOGPS:0:0 GPS:1 SAT:11 RS:3 RF:65 SF:1 MD:0",
			now.Add(-time.Hour).Format("2006/1/2 15:04"), now.Format("2006/1/2 15:04"))
	case "getver":
		return "Ver:03.28.07_REV:00 GPS:AXN_5.10_3333 Hw:FMB920 Mod:13 IMEI:" + imei + " Init:2026-12-1 0:0 Uptime:3600 BT:"
	case "getstatus":
		return "Data Link: 1 GPRS: 1 Phone: 0 SIM: 0 OP: 24602 Signal: 4 NewSMS: 0 Roaming: 0 SMSFull: 0 LAC: 1 Cell ID: 1 NetType: 1 FwUpd:-1"
	}
	return "Unknown command"
}

// TeltonikaStats counts what Teltonika devices did. Safe for concurrent use.
type TeltonikaStats struct {
	Packets      atomic.Int64 // AVL packets (TCP) or datagrams (UDP) acknowledged
	Records      atomic.Int64 // records those packets held
	Sends        atomic.Int64 // packet writes, resends included
	Resends      atomic.Int64 // writes of a packet already written
	ShortAcks    atomic.Int64 // answers counting fewer records than the packet held
	AckTimeouts  atomic.Int64 // packets (or datagrams) whose answer did not come in time
	Reconnects   atomic.Int64 // connections opened again after a failure (TCP)
	Commands     atomic.Int64 // Codec 12 commands answered
	StrayAnswers atomic.Int64 // UDP answers for another packet id, or malformed
}

// TeltonikaDevice is one simulated Teltonika tracker on TCP: the IMEI handshake, then AVL
// packets of Codec 8 (or 8E, 16) records, one at a time, each waiting for its answer (the number
// of records accepted, u32), as FMB firmware does: a short count makes it send the packet again
// at once; no answer within AckTimeout makes it drop the connection, reconnect and send the
// packet again (a fresh connection leaves no late answer to be taken for the next packet's).
// Codec 12 commands that arrive between packets (or while it waits) are answered. It must be
// used from one goroutine; Acked, Next and the stats may be read from any.
type TeltonikaDevice struct {
	cfg   TeltonikaConfig
	stats *TeltonikaStats
	gen   *avlGen

	conn net.Conn
	br   *bufio.Reader
	recs []teltonika.Record
	pkt  []byte // the packet being sent
	wbuf []byte
	// unsent is the record count of pkt while it is not acknowledged (a Send that ctx ended):
	// the next Send sends it again before any new record.
	unsent int
	last   uint64 // the counter of pkt's last record

	acked atomic.Uint64 // every record counter up to this one was acknowledged
}

// NewTeltonikaDevice creates a disconnected tracker; stats may be shared by a fleet (nil: its
// own).
func NewTeltonikaDevice(cfg TeltonikaConfig, stats *TeltonikaStats) *TeltonikaDevice {
	cfg.defaults(5 * time.Second)
	if stats == nil {
		stats = new(TeltonikaStats)
	}
	d := &TeltonikaDevice{cfg: cfg, stats: stats, gen: newAVLGen(cfg.Seed, cfg.First)}
	d.acked.Store(cfg.First - 1)
	return d
}

// IMEI is the device's IMEI.
func (d *TeltonikaDevice) IMEI() string { return d.cfg.IMEI }

// Acked is the counter of the last record acknowledged (First-1 before any).
func (d *TeltonikaDevice) Acked() uint64 { return d.acked.Load() }

// Stats are the device's counters (shared with its fleet's).
func (d *TeltonikaDevice) Stats() *TeltonikaStats { return d.stats }

// Connect dials the relay and makes the IMEI handshake, closing any previous connection. It
// returns ErrIMEIRefused when the relay answers 00.
func (d *TeltonikaDevice) Connect(ctx context.Context) error {
	d.Close()
	dl := net.Dialer{LocalAddr: d.cfg.Local}
	c, err := dl.DialContext(ctx, "tcp", d.cfg.Addr)
	if err != nil {
		return fmt.Errorf("teltonika %s: %w", d.cfg.IMEI, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(d.cfg.AckTimeout))
	var ans [1]byte
	_, err = c.Write(teltonika.AppendIMEI(nil, d.cfg.IMEI))
	if err == nil {
		_, err = io.ReadFull(c, ans[:])
	}
	if err == nil && ans[0] != 1 {
		err = ErrIMEIRefused
	}
	if err != nil {
		c.Close()
		return fmt.Errorf("teltonika %s handshake: %w", d.cfg.IMEI, err)
	}
	_ = c.SetDeadline(time.Time{})
	d.conn, d.br = c, bufio.NewReaderSize(c, 4096)
	return nil
}

// Close closes the connection, if any.
func (d *TeltonikaDevice) Close() {
	if d.conn != nil {
		d.conn.Close()
		d.conn, d.br = nil, nil
	}
}

// Send makes a packet of n records (1..255) and sends it until the relay acknowledges all of
// them, reconnecting as often as it takes, or until ctx ends. A packet ctx ended is sent again
// by the next Send, whatever its n (a tracker never skips a record), and its records do not
// count as acknowledged until then. It returns when the packet was first written, for latency.
func (d *TeltonikaDevice) Send(ctx context.Context, n int) (sent time.Time, err error) {
	if d.unsent == 0 {
		if n < 1 || n > 255 {
			return time.Time{}, fmt.Errorf("teltonika packet of %d records: want 1..255", n)
		}
		d.recs = d.gen.records(d.recs[:0], n, time.Now())
		d.pkt = teltonika.AppendTCP(d.pkt[:0], d.cfg.Codec, d.recs)
		d.unsent, d.last = n, d.gen.next-1
	}
	n = d.unsent
	for try := 0; ; try++ {
		if d.conn == nil {
			if err := d.reconnect(ctx); err != nil {
				return sent, err
			}
		}
		if try > 0 {
			d.stats.Resends.Add(1)
		}
		d.stats.Sends.Add(1)
		if sent.IsZero() {
			sent = time.Now()
		}
		got, err := d.roundTrip(ctx)
		switch {
		case err == nil && got == uint32(n):
			d.acked.Store(d.last)
			d.unsent = 0
			d.stats.Packets.Add(1)
			d.stats.Records.Add(int64(n))
			return sent, nil
		case err == nil:
			d.stats.ShortAcks.Add(1) // the answer came: send again on this connection
		case ctx.Err() != nil:
			return sent, ctx.Err()
		default:
			if errors.Is(err, os.ErrDeadlineExceeded) {
				d.stats.AckTimeouts.Add(1)
			}
			d.Close()
		}
	}
}

// Unacked is the number of records of a packet Send could not get acknowledged (0 if none).
func (d *TeltonikaDevice) Unacked() int { return d.unsent }

// reconnect connects again, retrying every 100ms until ctx ends.
func (d *TeltonikaDevice) reconnect(ctx context.Context) error {
	for {
		err := d.Connect(ctx)
		if err == nil {
			d.stats.Reconnects.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrIMEIRefused) {
			return err
		}
		if !sleepUntil(ctx, time.Now().Add(100*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// roundTrip writes the packet and reads its answer, answering commands that come first.
func (d *TeltonikaDevice) roundTrip(ctx context.Context) (uint32, error) {
	c := d.conn
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	deadline := time.Now().Add(d.cfg.AckTimeout)
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(d.pkt); err != nil {
		return 0, err
	}
	for {
		b, err := d.br.Peek(teltonika.AckLen)
		if err != nil {
			return 0, err
		}
		if v := binary.BigEndian.Uint32(b); v != 0 {
			_, _ = d.br.Discard(teltonika.AckLen)
			return v, nil
		}
		// 00000000 is an answer of 0 or the preamble of a Codec 12 command the relay sent
		// before it read the packet: a command's data length and codec id follow at once.
		if w := time.Now().Add(zeroAnswerWait); w.Before(deadline) {
			_ = c.SetReadDeadline(w)
		}
		h, err := d.br.Peek(teltonika.HeaderLen + 1)
		_ = c.SetReadDeadline(deadline)
		if err == nil && h[teltonika.HeaderLen] == teltonika.Codec12 && binary.BigEndian.Uint32(h[4:]) != 0 {
			if err := d.command(); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, err
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		_, _ = d.br.Discard(teltonika.AckLen)
		return 0, nil
	}
}

// zeroAnswerWait is how long an answer of 0 is watched for the rest of a Codec 12 frame.
const zeroAnswerWait = 200 * time.Millisecond

// Idle answers the relay's Codec 12 commands until t passes or ctx ends, as a tracker does
// between packets. It returns nil at t; an error means the connection failed (the next Send
// reconnects).
func (d *TeltonikaDevice) Idle(ctx context.Context, t time.Time) error {
	if d.conn == nil {
		return d.reconnect(ctx)
	}
	c := d.conn
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_ = c.SetReadDeadline(t)
	for {
		_, err := d.br.Peek(teltonika.HeaderLen + 1)
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil && !time.Now().Before(t) {
			return nil
		}
		if err == nil {
			err = d.command()
		}
		if err != nil {
			d.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// command reads the Codec 12 frame at the reader's head and answers it.
func (d *TeltonikaDevice) command() error {
	h, err := d.br.Peek(teltonika.HeaderLen)
	if err != nil {
		return err
	}
	n, err := teltonika.FrameLen(h)
	if err != nil || n != 0 { // n != 0 cannot be: a whole frame is longer than its header
		return fmt.Errorf("teltonika %s: unexpected bytes from the relay: %x", d.cfg.IMEI, h)
	}
	l := teltonika.HeaderLen + int(binary.BigEndian.Uint32(h[4:])) + teltonika.CRCLen
	frame := make([]byte, l)
	if _, err := io.ReadFull(d.br, frame); err != nil {
		return err
	}
	text, err := teltonika.ParseCommand(frame)
	if err != nil {
		return fmt.Errorf("teltonika %s: command frame: %w", d.cfg.IMEI, err)
	}
	d.wbuf = teltonika.AppendResponse(d.wbuf[:0], d.cfg.Answer(d.cfg.IMEI, string(text)))
	if _, err := d.conn.Write(d.wbuf); err != nil {
		return err
	}
	d.stats.Commands.Add(1)
	return nil
}
