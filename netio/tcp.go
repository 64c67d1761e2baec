package netio

import (
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

// tcpConn is one plain device connection: the protocol core (session.go) over gnet. Fields
// without atomics are owned by the connection's event loop; the Conn methods are safe from any
// goroutine.
type tcpConn struct {
	streamConn
	gnetWire

	// Cumulative ACKs (ack.go): the highest seq asked for, whether the connection is in its
	// loop's queue, whether a repeat was asked for, and (loop-owned) the highest written.
	acks      *ackQueue
	ackSeq    atomic.Uint64
	ackQueued atomic.Bool
	ackAgain  atomic.Bool
	ackSent   uint64
}

var _ wire = (*tcpConn)(nil)

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
	tc := &tcpConn{gnetWire: gnetWire{c}}
	tc.init(tc, tc, s.srv, remote, time.Now().UnixNano())
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
	tc.ended()
	s.mu.Lock()
	delete(s.conns, tc)
	s.mu.Unlock()
	s.srv.release(tc.remote)
	return gnet.None
}

func (s *tcpServer) OnTraffic(c gnet.Conn) gnet.Action {
	return feedGnet(c, c.Context().(*tcpConn))
}

// feedGnet hands what gnet holds for c to its protocol core, on c's event loop.
func feedGnet(c gnet.Conn, core streamCore) gnet.Action {
	buf, _ := c.Peek(-1)
	done, closeNow := core.feed(buf)
	if done > 0 {
		_, _ = c.Discard(done)
	}
	if closeNow {
		return gnet.Close // gnet flushes what was put (an ERROR, a refusal) before closing
	}
	return gnet.None
}

func (s *tcpServer) OnTick() (time.Duration, gnet.Action) {
	now := time.Now().UnixNano()
	d := s.srv.opts.deadlines()
	s.mu.Lock()
	for tc := range s.conns {
		tc.check(now, d)
	}
	s.mu.Unlock()
	return tickEvery(s.srv.opts), gnet.None
}

// gnetWire is the wire of a stream connection on gnet (native or Teltonika).
type gnetWire struct{ c gnet.Conn }

// put implements wire: on the event loop, written now or copied into gnet's outbound buffer.
func (g gnetWire) put(frame []byte) { _, _ = g.c.Write(frame) }

// send implements wire.
func (g gnetWire) send(frame []byte) { _ = g.c.AsyncWrite(frame, nil) }

// sendAndClose implements wire.
func (g gnetWire) sendAndClose(frame []byte) {
	err := g.c.AsyncWrite(frame, func(c gnet.Conn, _ error) error {
		return c.Close()
	})
	if err != nil {
		_ = g.c.Close()
	}
}

// shut implements wire.
func (g gnetWire) shut() { _ = g.c.Close() }
