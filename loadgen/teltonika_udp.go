package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// TeltonikaUDPDevice is one simulated Teltonika tracker on UDP: each AVL packet is one datagram
// with its own packet id (and AVL packet id), sent again after AckTimeout (doubling up to 8×,
// with jitter) until the answer echoing that packet id counts all its records; answers for other
// packet ids (late ones) are ignored. One packet at a time, as the firmware does. It must be
// used from one goroutine; Acked and the stats may be read from any.
type TeltonikaUDPDevice struct {
	cfg   TeltonikaConfig
	stats *TeltonikaStats
	gen   *avlGen
	conn  *net.UDPConn

	packetID uint16
	avlID    uint8
	recs     []teltonika.Record
	dgram    []byte
	buf      []byte
	unsent   int // records of dgram while it is not acknowledged
	last     uint64

	acked atomic.Uint64
}

// NewTeltonikaUDPDevice opens the device's socket to the relay's Teltonika UDP address; stats
// may be shared by a fleet (nil: its own). Close it.
func NewTeltonikaUDPDevice(cfg TeltonikaConfig, stats *TeltonikaStats) (*TeltonikaUDPDevice, error) {
	cfg.defaults(time.Second)
	if stats == nil {
		stats = new(TeltonikaStats)
	}
	ra, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("teltonika %s: %w", cfg.IMEI, err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		return nil, fmt.Errorf("teltonika %s: %w", cfg.IMEI, err)
	}
	d := &TeltonikaUDPDevice{cfg: cfg, stats: stats, gen: newAVLGen(cfg.Seed, cfg.First), conn: c,
		packetID: uint16(cfg.Seed), buf: make([]byte, 64)}
	d.acked.Store(cfg.First - 1)
	return d, nil
}

// IMEI is the device's IMEI.
func (d *TeltonikaUDPDevice) IMEI() string { return d.cfg.IMEI }

// Acked is the counter of the last record acknowledged (First-1 before any).
func (d *TeltonikaUDPDevice) Acked() uint64 { return d.acked.Load() }

// Unacked is the number of records of a datagram Send could not get acknowledged (0 if none).
func (d *TeltonikaUDPDevice) Unacked() int { return d.unsent }

// Close closes the socket.
func (d *TeltonikaUDPDevice) Close() { d.conn.Close() }

// Send makes a datagram of n records (1..255) with the next packet id and sends it until its
// answer counts them all, or ctx ends; a datagram ctx ended is sent again by the next Send. It
// returns when the datagram was first written.
func (d *TeltonikaUDPDevice) Send(ctx context.Context, n int) (sent time.Time, err error) {
	if d.unsent == 0 {
		if n < 1 || n > 255 {
			return time.Time{}, fmt.Errorf("teltonika packet of %d records: want 1..255", n)
		}
		d.packetID++
		d.avlID++
		d.recs = d.gen.records(d.recs[:0], n, time.Now())
		h := teltonika.UDPHeader{PacketID: d.packetID, AVLPacketID: d.avlID, IMEI: d.cfg.IMEI}
		d.dgram = teltonika.AppendUDP(d.dgram[:0], h, d.cfg.Codec, d.recs)
		d.unsent, d.last = n, d.gen.next-1
	}
	stop := context.AfterFunc(ctx, func() { _ = d.conn.SetReadDeadline(time.Now()) })
	defer stop()
	wait := d.cfg.AckTimeout
	for try := 0; ; try++ {
		if try > 0 {
			d.stats.Resends.Add(1)
		}
		d.stats.Sends.Add(1)
		if sent.IsZero() {
			sent = time.Now()
		}
		// A write error (ICMP port unreachable while the relay is down) is a loss like any other.
		_, _ = d.conn.Write(d.dgram)
		jitter := time.Duration(float64(wait) * (0.75 + 0.5*d.gen.rnd.Float64()))
		_ = d.conn.SetReadDeadline(time.Now().Add(jitter))
		got, err := d.answer()
		switch {
		case err == nil && got == d.unsent:
			d.acked.Store(d.last)
			d.stats.Packets.Add(1)
			d.stats.Records.Add(int64(d.unsent))
			d.unsent = 0
			return sent, nil
		case ctx.Err() != nil:
			return sent, ctx.Err()
		case err == nil:
			d.stats.ShortAcks.Add(1)
		case errors.Is(err, os.ErrDeadlineExceeded):
			d.stats.AckTimeouts.Add(1)
			wait = min(2*wait, 8*d.cfg.AckTimeout)
		case errors.Is(err, net.ErrClosed):
			return sent, err
		}
	}
}

// answer reads answers until the one echoing the current packet id, or the read deadline.
func (d *TeltonikaUDPDevice) answer() (accepted int, err error) {
	for {
		n, err := d.conn.Read(d.buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && !ne.Timeout() && !errors.Is(err, net.ErrClosed) {
				continue // ECONNREFUSED from an ICMP error: keep waiting
			}
			return 0, err
		}
		pid, avl, acc, err := teltonika.ParseUDPAck(d.buf[:n])
		if err != nil || pid != d.packetID || avl != d.avlID {
			d.stats.StrayAnswers.Add(1)
			continue
		}
		return int(acc), nil
	}
}
