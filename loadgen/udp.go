package loadgen

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// UDPDevice is one simulated device sending UDATA datagrams. It is safe for concurrent use.
type UDPDevice struct {
	identity, token string
	conn            *net.UDPConn

	mu      sync.Mutex
	cond    *sync.Cond
	nextSeq uint64
	acked   uint64
	acks    int // ACK datagrams received
	closed  bool
	wg      sync.WaitGroup
}

// DialUDP creates a UDP device talking to the relay at addr.
func DialUDP(addr, identity, token string, first uint64) (*UDPDevice, error) {
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		return nil, err
	}
	u := &UDPDevice{identity: identity, token: token, conn: c, nextSeq: first}
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
		if err != nil {
			return
		}
		typ, body, _, err := native.Next(buf[:n], native.MaxFrameLimit)
		if err != nil || typ != native.TypeAck {
			continue
		}
		if seq, err := native.ParseAck(body); err == nil {
			u.mu.Lock()
			u.acks++
			if seq > u.acked {
				u.acked = seq
				u.cond.Broadcast()
			}
			u.mu.Unlock()
		}
	}
}

// Send sends one UDATA datagram and returns its seq.
func (u *UDPDevice) Send(records ...[]byte) (uint64, error) {
	u.mu.Lock()
	seq := u.nextSeq
	u.nextSeq++
	u.mu.Unlock()
	return seq, u.Resend(seq, records...)
}

// Resend sends a datagram with a given seq (UDP devices resend what was not acknowledged).
func (u *UDPDevice) Resend(seq uint64, records ...[]byte) error {
	_, err := u.conn.Write(native.AppendUData(nil, u.identity, u.token, seq, records...))
	return err
}

// SendRaw sends arbitrary bytes as one datagram.
func (u *UDPDevice) SendRaw(b []byte) error {
	_, err := u.conn.Write(b)
	return err
}

// Acked is the highest seq acknowledged; Acks counts ACK datagrams received.
func (u *UDPDevice) Acked() (seq uint64, acks int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.acked, u.acks
}

// SendWait sends one frame and waits for its ACK, resending every retry until acked or ctx
// ends: stop-and-wait, the only safe way to use UDP with a cumulative ACK (a lost datagram
// followed by a later one would otherwise be acknowledged without being stored). It returns
// the frame's seq and when it was acknowledged.
func (u *UDPDevice) SendWait(ctx context.Context, retry time.Duration, records ...[]byte) (uint64, time.Time, error) {
	u.mu.Lock()
	seq := u.nextSeq
	u.nextSeq++
	u.mu.Unlock()
	dgram := native.AppendUData(nil, u.identity, u.token, seq, records...)
	stop := context.AfterFunc(ctx, func() { u.mu.Lock(); u.cond.Broadcast(); u.mu.Unlock() })
	defer stop()
	for {
		if _, err := u.conn.Write(dgram); err != nil {
			return seq, time.Time{}, err
		}
		deadline := time.Now().Add(retry)
		timer := time.AfterFunc(retry, func() { u.mu.Lock(); u.cond.Broadcast(); u.mu.Unlock() })
		u.mu.Lock()
		for u.acked < seq && !u.closed && ctx.Err() == nil && time.Now().Before(deadline) {
			u.cond.Wait()
		}
		acked, closed := u.acked >= seq, u.closed
		u.mu.Unlock()
		timer.Stop()
		switch {
		case acked:
			return seq, time.Now(), nil
		case closed:
			return seq, time.Time{}, net.ErrClosed
		case ctx.Err() != nil:
			return seq, time.Time{}, ctx.Err()
		}
	}
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
