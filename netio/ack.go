package netio

import (
	"context"
	"sync"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// Acker is implemented by the Conns that coalesce cumulative ACKs themselves (native TCP).
type Acker interface {
	// Ack acknowledges every frame up to seq. It never blocks and may be called from any
	// goroutine. The ACK is written from the connection's event loop together with the other
	// ACKs due on that loop (one wake-up of the loop, one write per connection), carrying the
	// highest seq asked for so far: a connection never sees an ACK lower than one it got
	// before, and two Acks that meet in the same pass give one ACK. With again, an ACK is written
	// even if it repeats the last one (the device resent a frame that is already stored).
	// Frames written with Write before Ack was called go out before its ACK.
	Ack(seq uint64, again bool)
}

// WriteAck acknowledges seq on c: through Acker when c implements it, else as a frame of its own.
func WriteAck(c Conn, seq uint64, again bool) {
	if a, ok := c.(Acker); ok {
		a.Ack(seq, again)
		return
	}
	c.Write(native.AppendAck(make([]byte, 0, native.AckLen), seq))
}

var _ Acker = (*tcpConn)(nil)

// ackQueue holds the connections of one event loop with an ACK due. One task on the loop
// writes them all; it is scheduled when the first connection joins an empty queue.
type ackQueue struct {
	loop gnet.EventLoop

	mu        sync.Mutex
	conns     []*tcpConn
	spare     []*tcpConn // the slice the last pass used, reused (loop-owned between passes)
	scheduled bool
	buf       []byte // loop-owned ACK frame scratch
}

// Ack implements Acker.
func (tc *tcpConn) Ack(seq uint64, again bool) {
	for {
		old := tc.ackSeq.Load()
		if seq <= old {
			if !again {
				return // said already, or about to be
			}
			break // again: the highest ACK once more
		}
		if tc.ackSeq.CompareAndSwap(old, seq) {
			break
		}
	}
	if again {
		tc.ackAgain.Store(true)
	}
	if tc.ackQueued.Swap(true) {
		return // the pass that writes it has not read ackSeq yet
	}
	q := tc.acks
	q.mu.Lock()
	q.conns = append(q.conns, tc)
	schedule := !q.scheduled
	q.scheduled = true
	q.mu.Unlock()
	if schedule {
		if err := q.loop.Execute(context.Background(), q); err != nil {
			// The engine is stopping: its connections are closing and nothing can be written.
			q.mu.Lock()
			q.scheduled = false
			q.mu.Unlock()
		}
	}
}

// Run writes the due ACKs; it runs on the event loop (gnet.Runnable).
func (q *ackQueue) Run(context.Context) error {
	q.mu.Lock()
	conns := q.conns
	q.conns = q.spare[:0]
	q.scheduled = false
	q.mu.Unlock()
	for _, tc := range conns {
		tc.ackQueued.Store(false)
		seq := tc.ackSeq.Load()
		again := tc.ackAgain.Swap(false)
		// A connection that failed or closed is skipped: OnClose sets failed on this loop
		// before gnet may reuse the descriptor.
		if tc.failed.Load() || (seq <= tc.ackSent && !again) {
			continue
		}
		tc.ackSent = seq
		q.buf = native.AppendAck(q.buf[:0], seq)
		_, _ = tc.c.Write(q.buf) // in the loop: written now, or copied into gnet's outbound buffer
	}
	clear(conns)
	q.spare = conns[:0]
	return nil
}
