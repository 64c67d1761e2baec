package loadgen

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// UDPConfig describes one simulated UDP device.
type UDPConfig struct {
	Addr     string // relay native UDP address
	Identity string // serial or IMEI (15 digits)
	Token    string
	First    uint64 // first seq (default 1)
	// Drop is the share of datagram sends (0..1) the device skips as if the network lost them,
	// resends included: a lossy link, to show that nothing acknowledged is lost. Seed seeds the
	// choice (0: a random seed).
	Drop float64
	Seed uint64
	// OnAck, if set, is called (with the device's lock held: keep it short) once for every
	// datagram sent with Post when its own ACK arrives, with the time it was due, first written
	// (or skipped, with Drop), and acknowledged.
	OnAck func(seq uint64, due, sent, acked time.Time)
}

// udpPending is a datagram sent with Post and not yet acknowledged.
type udpPending struct {
	dgram     []byte
	due, sent time.Time
	next      time.Time // next resend
	tries     int       // sends so far
}

// maxBackoff caps the resend interval of a datagram at this many times the retry interval.
const maxBackoff = 8

// UDPDevice is one simulated device sending UDATA datagrams. The relay acknowledges each
// datagram selectively (protocol v1.1): an ACK names exactly its seq, so the device may keep
// several datagrams in flight (Post's window) and resends each until its own ACK arrives. It is
// safe for concurrent use.
type UDPDevice struct {
	cfg             UDPConfig
	identity, token string
	conn            *net.UDPConn

	mu       sync.Mutex
	cond     *sync.Cond
	rnd      *rand.Rand
	nextSeq  uint64
	acked    uint64          // every seq from First to acked is acknowledged
	above    map[uint64]bool // acknowledged seqs above acked+1
	inflight map[uint64]*udpPending
	acks     int // ACK datagrams received
	// srtt and rttvar estimate the ACK round trip from datagrams acknowledged without a resend
	// (RFC 6298, Karn's rule); 0 until the first sample.
	srtt, rttvar time.Duration
	sends        int // UDATA sends, dropped ones included
	dropped      int // sends skipped (Drop)
	closed       bool
	wg           sync.WaitGroup
}

// DialUDP creates a UDP device talking to the relay at addr, with first as its first seq.
func DialUDP(addr, identity, token string, first uint64) (*UDPDevice, error) {
	return NewUDPDevice(UDPConfig{Addr: addr, Identity: identity, Token: token, First: first})
}

// NewUDPDevice creates a UDP device as cfg says.
func NewUDPDevice(cfg UDPConfig) (*UDPDevice, error) {
	if cfg.First == 0 {
		cfg.First = 1
	}
	ra, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	u := &UDPDevice{
		cfg: cfg, identity: cfg.Identity, token: cfg.Token, conn: c,
		rnd:     rand.New(rand.NewPCG(seed, 0x5eed)),
		nextSeq: cfg.First, acked: cfg.First - 1,
		above: make(map[uint64]bool), inflight: make(map[uint64]*udpPending),
	}
	u.cond = sync.NewCond(&u.mu)
	u.wg.Add(1)
	go u.read()
	return u, nil
}

func (u *UDPDevice) read() {
	defer u.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := u.conn.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// ICMP port unreachable (ECONNREFUSED) while the relay is down: keep listening.
			time.Sleep(time.Millisecond)
			continue
		}
		typ, body, _, err := native.Next(buf[:n], native.MaxFrameLimit)
		if err != nil || typ != native.TypeAck {
			continue
		}
		seq, err := native.ParseAck(body)
		if err != nil {
			continue
		}
		now := time.Now()
		u.mu.Lock()
		u.acks++
		if p := u.inflight[seq]; p != nil {
			delete(u.inflight, seq)
			if p.tries == 1 {
				u.sampleLocked(now.Sub(p.sent))
			}
			if u.cfg.OnAck != nil {
				u.cfg.OnAck(seq, p.due, p.sent, now)
			}
		}
		u.ackLocked(seq)
		u.cond.Broadcast()
		u.mu.Unlock()
	}
}

// ackLocked records that seq is acknowledged, moving the cumulative mark over it.
func (u *UDPDevice) ackLocked(seq uint64) {
	switch {
	case seq <= u.acked:
	case seq == u.acked+1:
		u.acked++
		for u.above[u.acked+1] {
			delete(u.above, u.acked+1)
			u.acked++
		}
	default:
		u.above[seq] = true
	}
}

func (u *UDPDevice) ackedLocked(seq uint64) bool { return seq <= u.acked || u.above[seq] }

func (u *UDPDevice) broadcast() { u.mu.Lock(); u.cond.Broadcast(); u.mu.Unlock() }

// writeLocked sends one UDATA datagram, unless Drop says the network loses it.
func (u *UDPDevice) writeLocked(dgram []byte) error {
	u.sends++
	if u.cfg.Drop > 0 && u.rnd.Float64() < u.cfg.Drop {
		u.dropped++
		return nil
	}
	_, err := u.conn.Write(dgram)
	return err
}

// Send sends one UDATA datagram with the next seq and returns the seq. It is not resent: see Post.
func (u *UDPDevice) Send(records ...[]byte) (uint64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	seq := u.nextSeq
	u.nextSeq++
	return seq, u.writeLocked(native.AppendUData(nil, u.identity, u.token, seq, records...))
}

// Resend sends a datagram with a given seq (UDP devices resend what was not acknowledged).
func (u *UDPDevice) Resend(seq uint64, records ...[]byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.writeLocked(native.AppendUData(nil, u.identity, u.token, seq, records...))
}

// SendRaw sends arbitrary bytes as one datagram (never dropped).
func (u *UDPDevice) SendRaw(b []byte) error {
	_, err := u.conn.Write(b)
	return err
}

// Acked is the cumulative acknowledgement: every seq from the first to seq was acknowledged
// (each by its own ACK). acks counts ACK datagrams received.
func (u *UDPDevice) Acked() (seq uint64, acks int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.acked, u.acks
}

// IsAcked reports whether seq was acknowledged.
func (u *UDPDevice) IsAcked(seq uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ackedLocked(seq)
}

// NextSeq is the seq the next Send or Post uses.
func (u *UDPDevice) NextSeq() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.nextSeq
}

// Unacked is how many datagrams sent with Post wait for their ACK.
func (u *UDPDevice) Unacked() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.inflight)
}

// Sends is how many UDATA datagrams the device sent or, with Drop, skipped: frames and resends.
// Dropped is how many of them Drop skipped.
func (u *UDPDevice) Sends() (sends, dropped int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sends, u.dropped
}

// pumpLocked resends every datagram of Post whose resend is due, until done() holds,
// until passes (if not zero), ctx ends or the device is closed. It waits on the device's lock,
// which it holds when called and when it returns.
func (u *UDPDevice) pumpLocked(ctx context.Context, retry time.Duration, until time.Time, done func() bool) error {
	stop := context.AfterFunc(ctx, u.broadcast)
	defer stop()
	for {
		switch {
		case done():
			return nil
		case u.closed:
			return net.ErrClosed
		case ctx.Err() != nil:
			return ctx.Err()
		}
		now := time.Now()
		if !until.IsZero() && !now.Before(until) {
			return nil
		}
		wake := until
		for _, p := range u.inflight {
			if !now.Before(p.next) {
				_ = u.writeLocked(p.dgram) // an error is a loss like any other: resent later
				u.scheduleLocked(p, now, retry)
			}
			if wake.IsZero() || p.next.Before(wake) {
				wake = p.next
			}
		}
		if wake.IsZero() {
			u.cond.Wait() // an ACK, Close or ctx
			continue
		}
		t := time.AfterFunc(time.Until(wake), u.broadcast)
		u.cond.Wait()
		t.Stop()
	}
}

// sampleLocked updates the round-trip estimate with one ACK's round trip (RFC 6298 §2).
func (u *UDPDevice) sampleLocked(rtt time.Duration) {
	if u.srtt == 0 {
		u.srtt, u.rttvar = rtt, rtt/2
		return
	}
	u.rttvar = (3*u.rttvar + (u.srtt - rtt).Abs()) / 4
	u.srtt = (7*u.srtt + rtt) / 8
}

// scheduleLocked sets the next resend of p, sent at now: after the retransmission timeout (retry,
// or more while the measured round trip says ACKs take longer: SRTT + 4·RTTVAR, RFC 6298), doubling
// with each resend up to maxBackoff times retry, with ±25 % jitter, so that a fleet whose ACKs are
// late does not resend in lockstep and flood the relay (as CoAP's confirmable messages, RFC 7252
// §4.2).
func (u *UDPDevice) scheduleLocked(p *udpPending, now time.Time, retry time.Duration) {
	p.tries++
	rto := min(max(retry, u.srtt+4*u.rttvar), maxBackoff*retry)
	d := min(rto<<min(p.tries-1, 3), maxBackoff*retry)
	d = time.Duration(float64(d) * (0.75 + 0.5*u.rnd.Float64()))
	p.next = now.Add(d)
}

// Post sends a datagram with the next seq and keeps it until its own ACK arrives, resending it
// after retry, then at growing intervals (see scheduleLocked), from Post, WaitUntil and Flush,
// whichever runs. While window datagrams are
// unacknowledged it first waits, resending those that are due. due is when the frame was due,
// for OnAck. Window 1 is stop-and-wait.
func (u *UDPDevice) Post(ctx context.Context, window int, retry time.Duration, due time.Time, records ...[]byte) (uint64, error) {
	window = max(window, 1)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.pumpLocked(ctx, retry, time.Time{}, func() bool { return len(u.inflight) < window }); err != nil {
		return 0, err
	}
	seq := u.nextSeq
	u.nextSeq++
	now := time.Now()
	p := &udpPending{dgram: native.AppendUData(nil, u.identity, u.token, seq, records...), due: due, sent: now}
	u.inflight[seq] = p
	err := u.writeLocked(p.dgram)
	u.scheduleLocked(p, now, retry)
	if errors.Is(err, net.ErrClosed) {
		return seq, err
	}
	return seq, nil
}

// WaitUntil resends what Post sent and is due until t passes or ctx ends.
func (u *UDPDevice) WaitUntil(ctx context.Context, t time.Time, retry time.Duration) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pumpLocked(ctx, retry, t, func() bool { return false })
}

// Flush resends what Post sent until every datagram is acknowledged or ctx ends.
func (u *UDPDevice) Flush(ctx context.Context, retry time.Duration) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pumpLocked(ctx, retry, time.Time{}, func() bool { return len(u.inflight) == 0 })
}

// SendWait sends one frame and waits for its ACK, resending every retry until acknowledged or
// ctx ends (stop-and-wait). It returns the frame's seq and when it was acknowledged.
func (u *UDPDevice) SendWait(ctx context.Context, retry time.Duration, records ...[]byte) (uint64, time.Time, error) {
	seq, err := u.Post(ctx, 1, retry, time.Now(), records...)
	if err != nil {
		return seq, time.Time{}, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.pumpLocked(ctx, retry, time.Time{}, func() bool { return u.ackedLocked(seq) }); err != nil {
		return seq, time.Time{}, err
	}
	return seq, time.Now(), nil
}

// Close closes the socket and waits for the reader.
func (u *UDPDevice) Close() {
	u.mu.Lock()
	u.closed = true
	u.cond.Broadcast()
	u.mu.Unlock()
	u.conn.Close()
	u.wg.Wait()
}
