package link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// ConnectorConfig configures one raw TCP connector: devices connect to Listen, and each of their
// connections is paired with a new connection to Upstream; bytes flow both ways unchanged.
type ConnectorConfig struct {
	Name     string // names the connector in logs
	Listen   string // host:port where devices connect
	Upstream string // host:port of the end server
	// ConnectTimeout bounds dialing the upstream for one device connection (default 5s); a
	// device whose upstream does not connect in time is closed.
	ConnectTimeout time.Duration
	// IdleTimeout closes both connections of a pair after this long without a byte either way
	// (0: never).
	IdleTimeout time.Duration
	// ProxyProtocol sends a PROXY protocol v2 header first on each upstream connection, so the
	// end server sees the device's address.
	ProxyProtocol bool
	// Buffer bounds the bytes the relay holds per direction per connection (default 256 KiB):
	// when the receiving side holds this much unsent, the sending side is not read until it
	// drains (TCP flow control then holds the sender back). One read (64 KiB) may come on top.
	Buffer     int
	EventLoops int // 0: one per CPU
	Logger     *slog.Logger
}

// ConnectorStats are the counters of a connector.
type ConnectorStats struct {
	Open            int64 // device connections open now
	Accepted        int64 // device connections accepted in total
	UpstreamOpen    int64 // upstream connections open now
	UpstreamRefused int64 // upstream dials refused (nothing listening there)
	UpstreamTimeout int64 // upstream dials that did not connect within ConnectTimeout
	UpstreamOther   int64 // upstream dials that failed otherwise (name, route, resources)
	IdleClosed      int64 // pairs closed by IdleTimeout
	ToUpstream      int64 // bytes devices sent that went to the upstream
	ToDevice        int64 // bytes the upstream sent that went to devices
	// Paused counts the times a connection stopped being read because its peer held Buffer
	// bytes not yet sent.
	Paused int64
	// Buffered is the bytes the relay holds in its socket buffers for all pairs, both
	// directions, as of each pair's last event; PeakBuffered the most one pair held at once.
	Buffered     int64
	PeakBuffered int64
}

// Defaults of ConnectorConfig.
const (
	DefaultConnectTimeout  = 5 * time.Second
	DefaultConnectorBuffer = 256 << 10
)

const (
	// connReadChunk is gnet's read size per event (its ReadBufferCap): what a paused
	// connection may still have read on top of Buffer.
	connReadChunk = 64 << 10
	// connLinger is how long the relay keeps the survivor of a pair after the other side
	// closed: its buffered bytes are written, a FIN follows, and the relay waits this long for
	// the remote to close before closing it.
	connLinger = 10 * time.Second
	// connWakeEvery is how soon a paused or closing connection is looked at again to see
	// whether its peer drained (gnet tells nobody when an outbound buffer empties); the wait
	// doubles each time, up to connWakeMax, until it resumes.
	connWakeEvery = time.Millisecond
	connWakeMax   = 64 * time.Millisecond
	// connLogEvery rate-limits the log of upstream failures.
	connLogEvery = 10 * time.Second
)

// Connector forwards devices' raw TCP connections to an upstream server (the vendor's "TCP
// connector"), copying bytes between the two sockets of each pair on gnet's event loops, with no
// goroutine per pair once it is connected.
//
// Each accepted device connection gets a new upstream connection, dialled within
// ConnectTimeout and placed on the device's event loop; a refused or timed-out dial closes the
// device (counted, logged at most every 10 s). What the device sends meanwhile waits, up to
// Buffer. Each direction holds at most Buffer unsent bytes (and one read): beyond that the
// sending side is not read, so TCP flow control slows it down.
//
// Closing: when one side closes, the bytes it sent go on to the other, which then gets a FIN
// (unix.Shutdown SHUT_WR: gnet has no half-close) and is closed when its remote closes too, or
// 10 s later. gnet closes a connection as soon as it reads EOF, and the connector writes
// through gnet, so a device (or upstream) that half-closes receives nothing after its FIN: the
// half-close is passed on, not held open. (The device links' pairs hold it open by keeping a
// duplicate of the descriptor and writing outside gnet; see pair.go.)
//
// Start, Stop, Addr and Stats are safe for concurrent use; Start must return before the others
// are called.
type Connector struct {
	cfg ConnectorConfig
	log *slog.Logger
	st  connCounters

	eng  gnet.Engine
	addr net.Addr
	// running is closed once the event loops run (gnet calls OnBoot before it starts them;
	// its ticker, whose first tick closes running, starts after them).
	running chan struct{}
	runErr  chan error // gnet.Run's result

	// ctx is the Connector's lifetime, from Start to Stop: the dials the event loops start
	// (which have no caller's context) and the waker run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // dials and the waker

	now  atomic.Int64  // unix nanoseconds, refreshed by the waker (a coarse clock for the loops)
	kick chan struct{} // wakes the waker when a connection pauses

	mu       sync.Mutex // guards the sets below; taken on open, close, pause and resume, not per byte
	stopping bool
	pairs    map[*connPair]struct{}
	// wake holds the paused sides and the survivors waiting for their buffer to drain, each
	// with when the waker looks at it next and how long it waits after that (doubling while
	// nothing changes, so a peer that stopped reading costs little).
	wake   map[*connSide]*connWake
	linger map[*connSide]time.Time // survivors that sent their FIN: closed at the deadline

	failLog struct {
		sync.Mutex
		last       time.Time
		suppressed int
	}
}

type connCounters struct {
	open, upOpen, accepted, refused, timeout, other, idle atomic.Int64
	toUp, toDev, paused, buffered, peak                   atomic.Int64
}

// NewConnector checks cfg and applies its defaults; nothing listens until Start.
func NewConnector(cfg ConnectorConfig) (*Connector, error) {
	if cfg.Listen == "" {
		return nil, errors.New("connector: listen address missing")
	}
	if _, _, err := net.SplitHostPort(cfg.Upstream); err != nil {
		return nil, fmt.Errorf("connector upstream %q: %w", cfg.Upstream, err)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultConnectorBuffer
	}
	if cfg.EventLoops <= 0 {
		cfg.EventLoops = runtime.NumCPU()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Connector{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "connector", "connector", cfg.Name),
		running: make(chan struct{}),
		runErr:  make(chan error, 1),
		kick:    make(chan struct{}, 1),
		pairs:   make(map[*connPair]struct{}),
		wake:    make(map[*connSide]*connWake),
		linger:  make(map[*connSide]time.Time),
	}
	c.now.Store(time.Now().UnixNano())
	return c, nil
}

// Start binds the listener and runs the event loops and the waker in goroutines the Connector
// owns. It returns once the event loops run, or with the error that prevented it.
func (c *Connector) Start(ctx context.Context) error {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	h := &connHandler{c: c}
	go func() {
		c.runErr <- gnet.Run(h, "tcp://"+c.cfg.Listen,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(c.cfg.EventLoops),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithReadBufferCap(connReadChunk),
			gnet.WithTicker(true),
			gnet.WithLogger(gnetLogger{c.log}),
		)
	}()
	select {
	case <-c.running:
	case err := <-c.runErr:
		c.runErr <- err // Stop reads it again
		c.cancel()
		if err == nil {
			err = errors.New("engine stopped before it started")
		}
		return fmt.Errorf("connector %s listen %s: %w", c.cfg.Name, c.cfg.Listen, err)
	case <-ctx.Done():
		select { // binding does not block: let it end, then undo it
		case <-c.running:
			_ = c.Stop(context.Background())
		case err := <-c.runErr:
			c.runErr <- err
			c.cancel()
		}
		return ctx.Err()
	}
	c.wg.Add(1)
	go c.waker(c.ctx)
	return nil
}

// Stop closes every connection and stops the event loops, waiting for them and for the dials
// under way (bounded by ctx).
func (c *Connector) Stop(ctx context.Context) error {
	c.mu.Lock()
	c.stopping = true // no new device from here on: no dial starts after wg.Wait begins
	c.mu.Unlock()
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	// Dials first: each ends by handing its socket to an event loop, which must still run.
	waited := make(chan struct{})
	go func() { c.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		return fmt.Errorf("connector %s stop: %w", c.cfg.Name, ctx.Err())
	}
	select {
	case <-c.running:
	default: // the engine never started: Start already reported why
		return nil
	}
	// gnet's Engine.Stop polls every 500 ms until the engine is down; signal it and wait for
	// gnet.Run to return instead, then let the polling Stop go.
	stopped, cancel := context.WithCancel(ctx)
	defer cancel()
	stopErr := make(chan error, 1)
	go func() { stopErr <- c.eng.Stop(stopped) }()
	var errs []error
	select {
	case err := <-c.runErr:
		c.runErr <- err
		if err != nil {
			errs = append(errs, err)
		}
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	cancel()
	if err := <-stopErr; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("connector %s stop: %w", c.cfg.Name, err)
	}
	return nil
}

// Addr is the bound listen address (nil before Start).
func (c *Connector) Addr() net.Addr { return c.addr }

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (c *Connector) Stats() ConnectorStats {
	return ConnectorStats{
		Open:            c.st.open.Load(),
		Accepted:        c.st.accepted.Load(),
		UpstreamOpen:    c.st.upOpen.Load(),
		UpstreamRefused: c.st.refused.Load(),
		UpstreamTimeout: c.st.timeout.Load(),
		UpstreamOther:   c.st.other.Load(),
		IdleClosed:      c.st.idle.Load(),
		ToUpstream:      c.st.toUp.Load(),
		ToDevice:        c.st.toDev.Load(),
		Paused:          c.st.paused.Load(),
		Buffered:        c.st.buffered.Load(),
		PeakBuffered:    c.st.peak.Load(),
	}
}

// connPair is a device connection and its upstream connection. Its fields are owned by the
// event loop both connections live on, except those said otherwise.
type connPair struct {
	dev, up connSide
	// upDone: the upstream connection closed, or never came (the dial failed).
	upDone bool
	// pending is what a device that closed before its upstream connected had sent (at most
	// Buffer and one read), copied out of gnet's buffer for the upstream.
	pending []byte
	// src and dst are the device's address and the address it connected to (the PROXY header).
	src, dst netip.AddrPort
	last     atomic.Int64 // coarse unix nanoseconds of the last byte either way (read by the waker)
	idle     atomic.Bool  // closed by the waker for IdleTimeout
}

// connSide is one socket of a pair. c is set once: for the device before the pair is shared,
// for the upstream on its event loop under Connector.mu (the waker reads it there).
type connSide struct {
	c       gnet.Conn
	pair    *connPair
	peer    *connSide
	toPeer  *atomic.Int64 // the counter of bytes this side sends its peer
	closed  bool          // gnet closed the socket
	paused  bool          // not read: the peer holds Buffer bytes unsent
	closing bool          // the peer closed: flush, then FIN, then wait for the remote to close
	shut    bool          // the FIN was sent (unix.Shutdown SHUT_WR)
	held    int           // bytes in its gnet buffers at the last accounting
	inSeen  int           // bytes in its inbound buffer when pump last left it
	epfd    int           // its event loop's epoll descriptor (0: not looked up yet)
}

func (c *Connector) newPair(dev gnet.Conn) *connPair {
	p := &connPair{}
	p.dev = connSide{c: dev, pair: p, peer: &p.up, toPeer: &c.st.toUp}
	p.up = connSide{pair: p, peer: &p.dev, toPeer: &c.st.toDev}
	p.last.Store(c.now.Load())
	return p
}

var _ gnet.EventHandler = (*connHandler)(nil)

// connHandler is the gnet handler of a connector: both the accepted device connections and the
// upstream connections enrolled into the same loops come through it.
type connHandler struct {
	gnet.BuiltinEventEngine
	c    *Connector
	once sync.Once
}

func (h *connHandler) OnBoot(eng gnet.Engine) gnet.Action {
	c := h.c
	c.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			c.addr = net.TCPAddrFromAddrPort(connSockaddr(sa))
		}
		_ = unix.Close(fd)
	}
	return gnet.None
}

func (h *connHandler) OnTick() (time.Duration, gnet.Action) {
	h.once.Do(func() { close(h.c.running) })
	return time.Hour, gnet.None // the waker does the connector's periodic work
}

func (h *connHandler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if s, ok := gc.Context().(*connSide); ok { // an upstream connection the dial enrolled
		h.c.openUpstream(s, gc)
		return nil, gnet.None
	}
	c := h.c
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return nil, gnet.Close
	}
	p := c.newPair(gc)
	c.pairs[p] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	c.st.accepted.Add(1)
	c.st.open.Add(1)
	gc.SetContext(&p.dev)
	if c.cfg.ProxyProtocol {
		p.src = connAddrPort(gc.RemoteAddr())
		if sa, err := unix.Getsockname(gc.Fd()); err == nil {
			p.dst = connSockaddr(sa)
		}
	}
	go c.dial(c.ctx, p, gc, gc.EventLoop())
	return nil, gnet.None
}

// dial connects p's upstream within ConnectTimeout and hands the socket to the device's event
// loop (gnet's own EventLoop.Register dials without a timeout). It runs on a goroutine of its
// own, owned by the Connector, only while connecting.
func (c *Connector) dial(ctx context.Context, p *connPair, dev gnet.Conn, loop gnet.EventLoop) {
	defer c.wg.Done()
	d := net.Dialer{Timeout: c.cfg.ConnectTimeout}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Upstream)
	if err == nil {
		err = connEnroll(ctx, loop, &p.up, nc)
		if err == nil {
			return
		}
	}
	if ctx.Err() == nil {
		c.upstreamFailed(err)
	}
	// The pair's state is the loop's: settle it there.
	if loop.Execute(ctx, gnet.RunnableFunc(func(context.Context) error {
		p.upDone = true
		if !p.dev.closed {
			_ = loop.Close(dev)
		}
		c.maybeDone(p)
		return nil
	})) != nil {
		_ = dev.Close()
	}
}

// connEnroll hands the connected socket nc to loop, where s's OnOpen runs before it returns.
// nc is closed either way (gnet works on a duplicate of its descriptor).
func connEnroll(ctx context.Context, loop gnet.EventLoop, s *connSide, nc net.Conn) error {
	ch, err := loop.Enroll(gnet.NewContext(ctx, s), nc)
	if err != nil {
		_ = nc.Close()
		return fmt.Errorf("enroll upstream connection: %w", err)
	}
	if res := <-ch; res.Err != nil {
		return fmt.Errorf("enroll upstream connection: %w", res.Err)
	}
	return nil
}

// upstreamFailed counts a failed dial and logs it, at most once per connLogEvery.
func (c *Connector) upstreamFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		c.st.refused.Add(1)
	case errors.As(err, &ne) && ne.Timeout():
		c.st.timeout.Add(1)
	default:
		c.st.other.Add(1)
	}
	l := &c.failLog
	l.Lock()
	now := time.Now()
	if now.Sub(l.last) < connLogEvery {
		l.suppressed++
		l.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.Unlock()
	c.log.Warn("upstream unreachable, device connection closed", "upstream", c.cfg.Upstream, "err", err, "suppressed", n)
}

// openUpstream pairs the upstream connection gc with its device. On gc's event loop.
func (c *Connector) openUpstream(s *connSide, gc gnet.Conn) {
	p := s.pair
	c.mu.Lock()
	s.c = gc
	c.mu.Unlock()
	c.st.upOpen.Add(1)
	if c.cfg.ProxyProtocol {
		_, _ = gc.Write(appendProxyV2(make([]byte, 0, proxyV2MaxLen), p.src, p.dst))
	}
	if p.dev.closed {
		// The device sent its bytes and left while the upstream was dialled: they go, then a FIN.
		if len(p.pending) > 0 {
			_, _ = gc.Write(p.pending)
			p.dev.toPeer.Add(int64(len(p.pending)))
			p.pending = nil
		}
		c.startClosing(s)
	} else {
		c.pump(&p.dev) // what the device sent meanwhile
	}
	c.account(p)
}

func (h *connHandler) OnTraffic(gc gnet.Conn) gnet.Action {
	s, ok := gc.Context().(*connSide)
	if !ok {
		return gnet.Close
	}
	h.c.pump(s)
	h.c.account(s.pair)
	return gnet.None
}

func (h *connHandler) OnClose(gc gnet.Conn, _ error) gnet.Action {
	s, ok := gc.Context().(*connSide)
	if !ok {
		return gnet.None
	}
	c, p, peer := h.c, s.pair, s.peer
	s.closed, s.paused = true, false
	if s == &p.dev {
		c.st.open.Add(-1)
	} else {
		c.st.upOpen.Add(-1)
		p.upDone = true
	}
	c.mu.Lock()
	delete(c.wake, s)
	delete(c.linger, s)
	c.mu.Unlock()
	switch {
	case peer.c == nil: // the upstream is being dialled: keep what the device sent for it
		if rest, _ := gc.Peek(-1); len(rest) > 0 {
			p.pending = append([]byte(nil), rest...)
		}
	case peer.closed:
	case p.idle.Load():
		_ = peer.c.Close()
	default:
		// What this side read and its peer could not take yet goes now; then the peer closes.
		if rest, _ := gc.Peek(-1); len(rest) > 0 && !peer.closing {
			_, _ = peer.c.Write(rest)
			s.toPeer.Add(int64(len(rest)))
			_, _ = gc.Discard(-1)
		}
		c.startClosing(peer)
	}
	c.st.buffered.Add(-int64(s.held))
	s.held = 0
	c.account(p)
	c.maybeDone(p)
	return gnet.None
}

// pump moves what s read to its peer, as much as the peer's buffer allows, and stops reading
// s while the rest waits. On s's event loop.
func (c *Connector) pump(s *connSide) {
	peer := s.peer
	if s.closing || peer.closed { // the peer is gone: what s sends has nowhere to go
		_, _ = s.c.Discard(-1)
		c.finish(s)
		return
	}
	n := s.c.InboundBuffered()
	if peer.c == nil { // still dialling: keep up to Buffer
		if n >= c.cfg.Buffer {
			c.setPaused(s, true)
		}
		return
	}
	if s.paused && peer.c.OutboundBuffered() > c.cfg.Buffer/2 {
		if n > s.inSeen { // gnet re-armed reading and read: pause again
			c.setPaused(s, true)
		}
		s.inSeen = n
		return
	}
	if room := c.cfg.Buffer - peer.c.OutboundBuffered(); n > 0 && room > 0 {
		k := min(n, room)
		b, _ := s.c.Peek(k)
		_, _ = peer.c.Write(b) // copies into the socket or gnet's buffer; a failure closes peer
		_, _ = s.c.Discard(k)
		s.toPeer.Add(int64(k))
		s.pair.last.Store(c.now.Load())
		n -= k
		if peer.closed || s.closing { // the write failed and closed peer (OnClose ran)
			return
		}
		if peer.paused {
			c.applyInterest(peer) // gnet re-arms reading when a write leaves bytes behind
		}
	}
	if n > 0 {
		c.setPaused(s, true)
	} else if s.paused {
		c.setPaused(s, false)
	}
	s.inSeen = n
}

// startClosing begins the end of s, whose peer closed: its buffered bytes are written, then a
// FIN goes, then the relay waits up to connLinger for the remote to close. On s's loop.
func (c *Connector) startClosing(s *connSide) {
	if s.closing || s.closed {
		return
	}
	s.closing = true
	if s.paused {
		c.setPaused(s, false) // read again, to see the remote close (what comes is dropped)
	}
	c.finish(s)
}

// finish sends s's FIN once its buffer drained, or waits for the waker to look again.
func (c *Connector) finish(s *connSide) {
	if s.shut || s.closed {
		return
	}
	if s.c.OutboundBuffered() > 0 {
		c.mu.Lock()
		c.addWake(s)
		c.mu.Unlock()
		c.kickWaker()
		return
	}
	// gnet has no half-close of its own: shut the socket's sending side directly.
	_ = unix.Shutdown(s.c.Fd(), unix.SHUT_WR)
	s.shut = true
	c.mu.Lock()
	delete(c.wake, s)
	c.linger[s] = time.Now().Add(connLinger)
	c.mu.Unlock()
}

// maybeDone forgets p once both its sides are done. On p's loop.
func (c *Connector) maybeDone(p *connPair) {
	if !p.dev.closed || !p.upDone {
		return
	}
	c.mu.Lock()
	delete(c.pairs, p)
	c.mu.Unlock()
}

// setPaused stops (true) or resumes (false) reading s.
func (c *Connector) setPaused(s *connSide, paused bool) {
	if s.paused != paused {
		s.paused = paused
		c.mu.Lock()
		if paused {
			c.addWake(s)
		} else if !s.closing {
			delete(c.wake, s)
		}
		c.mu.Unlock()
		if paused {
			c.st.paused.Add(1)
			c.kickWaker()
		}
	}
	c.applyInterest(s)
}

// applyInterest sets the events s's loop polls for: reading unless paused, writing while gnet
// holds bytes for it. If the poller cannot be reached, s is closed rather than read unbounded.
func (c *Connector) applyInterest(s *connSide) {
	if err := connSetReading(s.c, &s.epfd, !s.paused); err != nil {
		c.log.Error("pausing a connection", "err", err)
		_ = s.c.Close()
	}
}

// account updates the counters of bytes p holds.
func (c *Connector) account(p *connPair) {
	total := 0
	for _, s := range [2]*connSide{&p.dev, &p.up} {
		if s.c == nil || s.closed {
			continue
		}
		h := s.c.InboundBuffered() + s.c.OutboundBuffered()
		c.st.buffered.Add(int64(h - s.held))
		s.held = h
		total += h
	}
	for {
		peak := c.st.peak.Load()
		if int64(total) <= peak || c.st.peak.CompareAndSwap(peak, int64(total)) {
			return
		}
	}
}

// connWake is when the waker looks at a waiting side again.
type connWake struct {
	next  time.Time
	every time.Duration
}

// addWake has the waker look at s soon. With c.mu held.
func (c *Connector) addWake(s *connSide) {
	if _, ok := c.wake[s]; !ok {
		c.wake[s] = &connWake{next: time.Now().Add(connWakeEvery), every: connWakeEvery}
	}
}

func (c *Connector) kickWaker() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// waker looks again at paused and closing connections every connWakeEvery while there are
// any (their event loop decides whether the peer drained), closes survivors whose linger ran
// out, and closes idle pairs. It keeps the coarse clock of the loops.
func (c *Connector) waker(ctx context.Context) {
	defer c.wg.Done()
	idleEvery := time.Second
	if t := c.cfg.IdleTimeout; t > 0 && t/4 < idleEvery {
		idleEvery = max(t/4, connWakeEvery)
	}
	t := time.NewTimer(idleEvery)
	defer t.Stop()
	var wake, drop []gnet.Conn
	nextIdle := time.Now().Add(idleEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
		}
		now := time.Now()
		c.now.Store(now.UnixNano())
		wake, drop = wake[:0], drop[:0]
		c.mu.Lock()
		if now.After(nextIdle) {
			nextIdle = now.Add(idleEvery)
			if c.cfg.IdleTimeout > 0 {
				limit := now.Add(-c.cfg.IdleTimeout).UnixNano()
				for p := range c.pairs {
					if p.last.Load() < limit && !p.idle.Load() {
						p.idle.Store(true)
						c.st.idle.Add(1)
						drop = append(drop, p.dev.c)
					}
				}
			}
		}
		soonest := nextIdle
		for s, w := range c.wake {
			if !now.Before(w.next) {
				wake = append(wake, s.c)
				w.next = now.Add(w.every)
				w.every = min(2*w.every, connWakeMax)
			}
			if w.next.Before(soonest) {
				soonest = w.next
			}
		}
		for s, deadline := range c.linger {
			if now.After(deadline) {
				drop = append(drop, s.c)
				delete(c.linger, s)
			}
		}
		c.mu.Unlock()
		for _, gc := range wake {
			_ = gc.Wake(nil)
		}
		for _, gc := range drop {
			_ = gc.Close()
		}
		t.Reset(max(time.Until(soonest), connWakeEvery))
	}
}

func connSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func connAddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}
