package netio

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

var _ gnet.EventHandler = (*tcpServer)(nil)

// tcpServer is the gnet handler of the native protocol over TCP.
type tcpServer struct {
	gnet.BuiltinEventEngine
	engineHolder
	srv *Server

	mu    sync.Mutex // guards conns and acks; taken on open/close and once per tick, never on the data path
	conns map[*tcpConn]struct{}
	acks  map[gnet.EventLoop]*ackQueue // one per event loop (ack.go)
}

// tcpConn is one device connection. Fields without atomics are owned by the connection's event
// loop; the Conn methods are safe from any goroutine.
type tcpConn struct {
	c      gnet.Conn
	srv    *Server
	remote netip.AddrPort
	opened int64 // unix nanos

	session Session      // loop-owned
	last    atomic.Int64 // unix nanos of the last frame
	helloed atomic.Bool
	failed  atomic.Bool
	// proven: the connection sent DATA, or its session is authenticated; until then
	// FirstDataTimeout applies.
	proven atomic.Bool

	// Cumulative ACKs (ack.go): the highest seq asked for, whether the connection is in its
	// loop's queue, whether a repeat was asked for, and (loop-owned) the highest written.
	acks      *ackQueue
	ackSeq    atomic.Uint64
	ackQueued atomic.Bool
	ackAgain  atomic.Bool
	ackSent   uint64
}

func (s *tcpServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.boot(eng, "tcp")
	return gnet.None
}

func (s *tcpServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	remote := addrPort(c.RemoteAddr())
	switch s.srv.admit(remote) {
	case atCapacity:
		return native.AppendError(nil, native.CodeUnavailable, "relay at capacity"), gnet.Close
	case sourceFull:
		return native.AppendError(nil, native.CodeUnavailable, "too many connections from this address"), gnet.Close
	}
	now := time.Now().UnixNano()
	tc := &tcpConn{c: c, srv: s.srv, remote: remote, opened: now}
	tc.last.Store(now)
	c.SetContext(tc)
	s.mu.Lock()
	s.conns[tc] = struct{}{}
	loop := c.EventLoop()
	if tc.acks = s.acks[loop]; tc.acks == nil {
		tc.acks = &ackQueue{loop: loop}
		s.acks[loop] = tc.acks
	}
	s.mu.Unlock()
	return nil, gnet.None
}

func (s *tcpServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	tc, ok := c.Context().(*tcpConn)
	if !ok {
		return gnet.None
	}
	tc.failed.Store(true)
	if tc.session != nil { // before the count drops: whoever sees 0 connections sees them closed
		tc.session.Closed()
		tc.session = nil
	}
	s.mu.Lock()
	delete(s.conns, tc)
	s.mu.Unlock()
	s.srv.release(tc.remote)
	return gnet.None
}

func (s *tcpServer) OnTraffic(c gnet.Conn) gnet.Action {
	tc := c.Context().(*tcpConn)
	buf, _ := c.Peek(-1)
	done := 0
	action := gnet.None
	for action == gnet.None {
		typ, body, n, err := native.Next(buf[done:], s.srv.opts.MaxFrame)
		if errors.Is(err, native.ErrShort) {
			break
		}
		if err != nil {
			code := native.CodeMalformed
			if errors.Is(err, native.ErrTooLarge) {
				code = native.CodeTooLarge
			}
			action = tc.failInLoop(code, err.Error())
			break
		}
		done += n
		s.srv.st.frames.Add(1)
		s.srv.st.bytes.Add(int64(n))
		action = tc.frame(typ, body)
	}
	if done > 0 {
		_, _ = c.Discard(done)
		tc.last.Store(time.Now().UnixNano())
	}
	return action
}

// frame handles one decoded frame on the event loop. body aliases gnet's buffer.
func (tc *tcpConn) frame(typ byte, body []byte) gnet.Action {
	if tc.session == nil {
		if typ != native.TypeHello {
			return tc.failInLoop(native.CodeUnauthorized, "HELLO must be the first frame")
		}
		h, err := native.ParseHello(body)
		if err != nil {
			return tc.failInLoop(native.CodeMalformed, err.Error())
		}
		sess, err := tc.srv.d.Open(tc, &h)
		if errors.Is(err, ErrBusy) {
			return tc.failInLoop(native.CodeUnavailable, err.Error())
		}
		if err != nil {
			return tc.failInLoop(native.CodeUnauthorized, err.Error())
		}
		tc.session = sess
		if a, ok := sess.(Authenticated); ok && a.Authenticated() {
			tc.proven.Store(true)
		}
		tc.helloed.Store(true)
		return gnet.None
	}
	switch typ {
	case native.TypeData:
		if tc.srv.draining.Load() {
			return tc.failInLoop(native.CodeUnavailable, "relay shutting down")
		}
		frame := append([]byte(nil), body...)
		seq, recs, err := native.ParseData(frame, make([][]byte, 0, countRecords(frame)))
		if err != nil {
			return tc.failInLoop(native.CodeMalformed, err.Error())
		}
		tc.proven.Store(true)
		tc.session.Data(seq, recs, frame)
	case native.TypePing:
		_, _ = tc.c.Write(native.AppendFrame(nil, native.TypePong, body))
	case native.TypePong:
	case native.TypeResult:
		frame := append([]byte(nil), body...)
		r, err := native.ParseResult(frame)
		if err != nil {
			return tc.failInLoop(native.CodeMalformed, err.Error())
		}
		tc.proven.Store(true) // the answer to a COMMAND the relay sent: a device at work
		tc.session.Result(&r, frame)
	case native.TypeHello:
		return tc.failInLoop(native.CodeMalformed, "second HELLO")
	default:
		return tc.failInLoop(native.CodeMalformed, "unexpected frame type")
	}
	return gnet.None
}

// countRecords counts the length-prefixed records of a DATA body without checking them, so the
// records slice is allocated once at its size (and no scratch is kept per connection).
func countRecords(body []byte) int {
	if len(body) < 8 {
		return 0
	}
	n := 0
	for b := body[8:]; len(b) >= 4; n++ {
		rl := uint64(binary.BigEndian.Uint32(b))
		if rl > uint64(len(b)-4) {
			return n + 1
		}
		b = b[4+rl:]
	}
	return n
}

// failInLoop writes ERROR and asks the loop to close; gnet flushes the frame before closing.
func (tc *tcpConn) failInLoop(code uint16, msg string) gnet.Action {
	if tc.failed.CompareAndSwap(false, true) {
		tc.srv.st.errors.Add(1)
		_, _ = tc.c.Write(native.AppendError(nil, code, msg))
	}
	return gnet.Close
}

func (s *tcpServer) OnTick() (time.Duration, gnet.Action) {
	now := time.Now().UnixNano()
	hello := s.srv.opts.HelloTimeout.Nanoseconds()
	idle := s.srv.opts.IdleTimeout.Nanoseconds()
	first := s.srv.opts.FirstDataTimeout.Nanoseconds()
	s.mu.Lock()
	for tc := range s.conns {
		switch {
		case !tc.helloed.Load() && now-tc.opened > hello:
			tc.Fail(native.CodeHelloTimeout, "no HELLO in time")
		case first > 0 && !tc.proven.Load() && now-tc.opened > first:
			if !tc.failed.Load() {
				s.srv.st.firstDataLate.Add(1)
			}
			tc.Fail(native.CodeHelloTimeout, "no DATA in time")
		case idle > 0 && now-tc.last.Load() > idle:
			tc.Close()
		}
	}
	s.mu.Unlock()
	return tickEvery(s.srv.opts), gnet.None
}

func tickEvery(o Options) time.Duration {
	d := o.HelloTimeout / 4
	if o.IdleTimeout > 0 && o.IdleTimeout/4 < d {
		d = o.IdleTimeout / 4
	}
	if o.FirstDataTimeout > 0 && o.FirstDataTimeout/4 < d {
		d = o.FirstDataTimeout / 4
	}
	return max(min(d, time.Second), 10*time.Millisecond)
}

func (tc *tcpConn) Write(frame []byte) {
	if tc.failed.Load() {
		return
	}
	_ = tc.c.AsyncWrite(frame, nil)
}

func (tc *tcpConn) Fail(code uint16, msg string) {
	if !tc.failed.CompareAndSwap(false, true) {
		return
	}
	tc.srv.st.errors.Add(1)
	err := tc.c.AsyncWrite(native.AppendError(nil, code, msg), func(c gnet.Conn, _ error) error {
		return c.Close()
	})
	if err != nil {
		_ = tc.c.Close()
	}
}

func (tc *tcpConn) Close() {
	tc.failed.Store(true)
	_ = tc.c.Close()
}

func (tc *tcpConn) Remote() netip.AddrPort { return tc.remote }
func (tc *tcpConn) Datagram() bool         { return false }
