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

	"github.com/fleetrelay/fleetrelay/internal/netutil"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
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
	Buffer int
	// MaxConnections bounds the device connections held at once (default 1000): from accept
	// until the pair's end, each holds two open files (its own and its upstream's). One
	// beyond it is closed at accept, before upstream is dialled, and counted (Refused).
	MaxConnections int
	EventLoops     int // 0: one per CPU
	Logger         *slog.Logger
}

// ConnectorStats are the counters of a connector.
type ConnectorStats struct {
	// Open is the device connections being read now: from accept until the device's FIN (a
	// device that half-closed still gets the upstream's answer, but is no longer counted) or
	// the pair's end. UpstreamOpen likewise for the upstream connections.
	Open     int64
	Accepted int64 // device connections accepted in total
	// Pairs is the device connections held now, from accept until the pair's end (both
	// sides closed): what MaxConnections bounds.
	Pairs int64
	// RefusedMaxConnections counts the device connections closed at accept because
	// MaxConnections were held; they are not in Accepted.
	RefusedMaxConnections int64
	UpstreamOpen          int64
	UpstreamRefused       int64 // upstream dials refused (nothing listening there)
	UpstreamTimeout       int64 // upstream dials that did not connect within ConnectTimeout
	UpstreamOther         int64 // upstream dials that failed otherwise (name, route, resources)
	IdleClosed            int64 // pairs closed by IdleTimeout
	ToUpstream            int64 // bytes devices sent that went to the upstream
	ToDevice              int64 // bytes the upstream sent that went to devices
	// Paused counts the times a connection stopped being read because its peer held Buffer
	// bytes not yet sent.
	Paused int64
	// Buffered is the bytes the relay holds for all pairs, both directions (read from one
	// side, not yet taken by the other's socket), as of each pair's last event; PeakBuffered
	// the most one pair held at once.
	Buffered     int64
	PeakBuffered int64
}

// Defaults of ConnectorConfig.
const (
	DefaultConnectTimeout  = 5 * time.Second
	DefaultConnectorBuffer = 256 << 10
	// DefaultConnectorMaxConnections is ConnectorConfig.MaxConnections when it is 0.
	DefaultConnectorMaxConnections = 1000
)

const (
	// connReadChunk is gnet's read size per event (its ReadBufferCap): what a paused
	// connection may still have read on top of Buffer.
	connReadChunk = 64 << 10
	// connLogEvery rate-limits the logs of upstream failures and of refused devices.
	connLogEvery = 10 * time.Second
)

// Connector forwards devices' raw TCP connections to an upstream server (the vendor's "TCP
// connector"), on the device links' pairing core (pair.go): each accepted device connection is
// the client leg of a pair, its new upstream connection the dialled leg, and bytes are copied
// between the two sockets on gnet's event loops, with no goroutine per pair once it is
// connected.
//
// At most MaxConnections device connections are held at once, from accept to the pair's end:
// one beyond is closed at once, before any dial (counted, logged at most every 10 s), so a flood
// of connections cannot take every open file of the process.
//
// Each accepted device connection gets a new upstream connection, dialled within
// ConnectTimeout and enrolled into the device's event loop; a refused or timed-out dial closes
// the device (counted, logged at most every 10 s). What the device sends meanwhile waits, up to
// Buffer and one read: beyond that the device is not read. With ProxyProtocol, the PROXY v2
// header is the first thing the upstream gets. Each direction holds at most Buffer unsent
// bytes and one read (64 KiB): beyond that the sending side is not read, so TCP flow control
// slows it down, and the watcher wakes the pair once the receiving socket can take more.
//
// Closing: a FIN from one side is passed on to the other once every byte before it was
// delivered, and the pair goes on carrying the other direction — a device that sends its
// request and shuts its write side still gets the whole answer — until that side ends too.
// An error or reset on either side, IdleTimeout, or Stop ends both at once. A pair one side
// of which half-closed lasts until the other side ends, or IdleTimeout.
//
// Start, Stop, Addr and Stats are safe for concurrent use; Start must return before the others
// are called.
type Connector struct {
	cfg ConnectorConfig
	log *slog.Logger
	st  connCounters
	w   *watcher // wakes pairs whose socket can take more (nil before Start)
	// wStop stops w once (a second Stop must not close its descriptors again).
	wStop sync.Once

	eng  gnet.Engine
	addr net.Addr
	// running is closed once the event loops run (gnet calls OnBoot before it starts them;
	// its ticker, whose first tick closes running, starts after them).
	running chan struct{}
	runErr  chan error // gnet.Run's result

	// ctx is the Connector's lifetime, from Start to Stop: the dials the event loops start
	// (which have no caller's context) run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // dials

	now       atomic.Int64      // unix nanoseconds, refreshed each tick (a coarse clock for idleness)
	failLog   throttle.Throttle // upstream failures, logged at most every connLogEvery
	refuseLog throttle.Throttle // devices refused for MaxConnections, likewise

	mu       sync.Mutex // guards the fields below; taken on open and end, not per byte
	stopping bool
	pairs    map[*connPair]struct{}
	loops    map[gnet.EventLoop]int // each loop's epoll descriptor (loopPollFD)
}

type connCounters struct {
	open, upOpen, accepted, refused, timeout, other, idle atomic.Int64
	pairs, refusedMax                                     atomic.Int64
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
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultConnectorMaxConnections
	}
	if cfg.EventLoops <= 0 {
		cfg.EventLoops = runtime.NumCPU()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Connector{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "connector", "connector", cfg.Name),
		running:   make(chan struct{}),
		runErr:    make(chan error, 1),
		failLog:   throttle.Throttle{Period: connLogEvery},
		refuseLog: throttle.Throttle{Period: connLogEvery},
		pairs:     make(map[*connPair]struct{}),
		loops:     make(map[gnet.EventLoop]int),
	}
	c.now.Store(time.Now().UnixNano())
	return c, nil
}

// tickEvery is how often the connector's tick refreshes its clock and looks for idle pairs.
func (c *Connector) tickEvery() time.Duration {
	if t := c.cfg.IdleTimeout; t > 0 {
		return min(max(t/4, time.Millisecond), time.Second)
	}
	return time.Hour // nothing to look for: the first tick only tells Start the loops run
}

// Start binds the listener and runs the event loops and the watcher in goroutines the
// Connector owns. It returns once the event loops run, or with the error that prevented it.
func (c *Connector) Start(ctx context.Context) error {
	w, err := newWatcher()
	if err != nil {
		return fmt.Errorf("connector %s: %w", c.cfg.Name, err)
	}
	c.w = w
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
			gnet.WithLogger(netutil.GnetLogger{L: c.log}),
		)
	}()
	select {
	case <-c.running:
		return nil
	case err := <-c.runErr:
		c.runErr <- err // Stop reads it again
		c.cancel()
		c.stopWatcher()
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
			c.stopWatcher()
		}
		return ctx.Err()
	}
}

// Stop closes every connection and stops the event loops and the watcher, waiting for them
// and for the dials under way (bounded by ctx).
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
	c.stopWatcher() // before the loops go: no wake-up is sent to a loop that is gone
	if err := stopEngine(ctx, c.eng, c.runErr, c.endLeftovers); err != nil {
		return fmt.Errorf("connector %s stop: %w", c.cfg.Name, err)
	}
	return nil
}

func (c *Connector) stopWatcher() { c.wStop.Do(c.w.stop) }

// endLeftovers ends the pairs the stopped engine did not: those both of whose sockets gnet had
// let go after their remotes' FINs, the pair holding their duplicates. Called once the event
// loops returned, so nothing else touches the pairs.
func (c *Connector) endLeftovers() {
	c.mu.Lock()
	rest := make([]*connPair, 0, len(c.pairs))
	for cp := range c.pairs {
		rest = append(rest, cp)
	}
	c.mu.Unlock()
	for _, cp := range rest {
		cp.p.end()
	}
}

// Addr is the bound listen address (nil before Start).
func (c *Connector) Addr() net.Addr { return c.addr }

// Name is the connector's name (ConnectorConfig.Name).
func (c *Connector) Name() string { return c.cfg.Name }

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (c *Connector) Stats() ConnectorStats {
	return ConnectorStats{
		Open:                  c.st.open.Load(),
		Accepted:              c.st.accepted.Load(),
		Pairs:                 c.st.pairs.Load(),
		RefusedMaxConnections: c.st.refusedMax.Load(),
		UpstreamOpen:          c.st.upOpen.Load(),
		UpstreamRefused:       c.st.refused.Load(),
		UpstreamTimeout:       c.st.timeout.Load(),
		UpstreamOther:         c.st.other.Load(),
		IdleClosed:            c.st.idle.Load(),
		ToUpstream:            c.st.toUp.Load(),
		ToDevice:              c.st.toDev.Load(),
		Paused:                c.st.paused.Load(),
		Buffered:              c.st.buffered.Load(),
		PeakBuffered:          c.st.peak.Load(),
	}
}

var _ pairHost = (*connPair)(nil)

// connPair is a device connection and its upstream connection: a pair (its client leg the
// device, its device leg the upstream) whose host it is. Its fields are owned by the pair's
// event loop, except those said otherwise.
type connPair struct {
	c       *Connector
	p       *pair
	dirHeld [2]int       // bytes held per direction (0: to the upstream, 1: to the device)
	last    atomic.Int64 // coarse unix nanoseconds of the last byte either way (read by the tick)
	idle    atomic.Bool  // ended by the tick for IdleTimeout (set under Connector.mu)
}

func (cp *connPair) moved(src *leg, n int) {
	if src.device {
		cp.c.st.toDev.Add(int64(n))
	} else {
		cp.c.st.toUp.Add(int64(n))
	}
	cp.last.Store(cp.c.now.Load())
}

// held accounts the bytes cp holds for src's direction, and the most one pair held at once.
func (cp *connPair) held(src *leg, n int) {
	i := 0
	if src.device {
		i = 1
	}
	st := &cp.c.st
	st.buffered.Add(int64(n - cp.dirHeld[i]))
	cp.dirHeld[i] = n
	total := int64(cp.dirHeld[0] + cp.dirHeld[1])
	for {
		peak := st.peak.Load()
		if total <= peak || st.peak.CompareAndSwap(peak, total) {
			return
		}
	}
}

func (cp *connPair) paused(*leg) { cp.c.st.paused.Add(1) }

func (cp *connPair) warn(msg string, args ...any) { cp.c.log.Warn(msg, args...) }

// ended forgets cp; its bytes held go with it.
func (cp *connPair) ended(*pair) {
	c := cp.c
	c.st.buffered.Add(-int64(cp.dirHeld[0] + cp.dirHeld[1]))
	cp.dirHeld = [2]int{}
	c.mu.Lock()
	delete(c.pairs, cp)
	c.st.pairs.Store(int64(len(c.pairs)))
	c.mu.Unlock()
}

var _ gnet.EventHandler = (*connHandler)(nil)

// connHandler is the gnet handler of a connector: both the accepted device connections and the
// upstream connections enrolled into the same loops come through it (an upstream's context is
// its pair's leg from the start).
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
			c.addr = net.TCPAddrFromAddrPort(netutil.AddrPort(sa))
		}
		_ = unix.Close(fd)
	}
	return gnet.None
}

// OnTick tells Start the loops run (first tick), keeps the coarse clock and ends the pairs idle
// for IdleTimeout. It runs on one event loop; each idle pair is ended on its own.
func (h *connHandler) OnTick() (time.Duration, gnet.Action) {
	c := h.c
	h.once.Do(func() { close(c.running) })
	now := time.Now().UnixNano()
	c.now.Store(now)
	if c.cfg.IdleTimeout > 0 {
		limit := now - c.cfg.IdleTimeout.Nanoseconds()
		var idle []*connPair
		c.mu.Lock()
		for cp := range c.pairs {
			if cp.last.Load() < limit && !cp.idle.Load() {
				cp.idle.Store(true)
				idle = append(idle, cp)
			}
		}
		c.mu.Unlock()
		for _, cp := range idle {
			c.st.idle.Add(1)
			p := cp.p
			_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				p.end()
				return nil
			}))
		}
	}
	return c.tickEvery(), gnet.None
}

func (h *connHandler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	c := h.c
	if l, ok := gc.Context().(*leg); ok { // an upstream connection the dial enrolled
		c.st.upOpen.Add(1)
		return nil, l.p.deviceOpened(gc)
	}
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return nil, gnet.Close
	}
	if len(c.pairs) >= c.cfg.MaxConnections {
		c.mu.Unlock()
		c.st.refusedMax.Add(1)
		if n, ok := c.refuseLog.Allow(); ok {
			c.log.Warn("max_connections reached, device connection closed at accept (logged at most every 10 s)",
				"max_connections", c.cfg.MaxConnections, "remote", gc.RemoteAddr(), "unlogged", n)
		}
		return nil, gnet.Close
	}
	epfd, err := c.loopFD(gc)
	if err != nil {
		c.mu.Unlock()
		c.log.Error("connector engine cannot pause sockets", "err", err)
		return nil, gnet.Close
	}
	cp := &connPair{c: c}
	cp.p = newPair(cp, c.w, c.cfg.Buffer, gc, epfd)
	cp.last.Store(c.now.Load())
	c.pairs[cp] = struct{}{}
	c.st.pairs.Store(int64(len(c.pairs)))
	c.wg.Add(1) // under mu: Stop sets stopping, then waits for the dials
	c.mu.Unlock()
	c.st.accepted.Add(1)
	c.st.open.Add(1)
	p := cp.p
	if c.cfg.ProxyProtocol { // the first bytes the upstream gets, once it is enrolled
		var dst netip.AddrPort
		if sa, err := unix.Getsockname(gc.Fd()); err == nil {
			dst = netutil.AddrPort(sa)
		}
		p.device.out = appendProxyV2(make([]byte, 0, proxyV2MaxLen), connAddrPort(gc.RemoteAddr()), dst)
	}
	gc.SetContext(&p.client)
	go c.dial(c.ctx, p)
	return nil, gnet.None
}

// loopFD is gc's event loop's epoll descriptor, looked up once per loop. With c.mu held.
func (c *Connector) loopFD(gc gnet.Conn) (int, error) {
	el := gc.EventLoop()
	if fd, ok := c.loops[el]; ok {
		return fd, nil
	}
	fd, err := loopPollFD(el, gc.Fd())
	if err != nil {
		return -1, err
	}
	c.loops[el] = fd
	return fd, nil
}

// dial connects p's upstream within ConnectTimeout and enrolls the socket into p's event loop,
// where OnOpen attaches it to p (gnet's own EventLoop.Register dials without a timeout). It
// runs on a goroutine of its own, owned by the Connector, only while connecting.
func (c *Connector) dial(ctx context.Context, p *pair) {
	defer c.wg.Done()
	d := net.Dialer{Timeout: c.cfg.ConnectTimeout}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Upstream)
	if err == nil {
		// Enroll takes the connection over (it keeps a duplicate and closes nc).
		var res <-chan gnet.RegisteredResult
		if res, err = p.loop.Enroll(gnet.NewContext(ctx, &p.device), nc); err == nil {
			err = (<-res).Err
		} else {
			_ = nc.Close()
		}
		if err == nil {
			return
		}
		err = fmt.Errorf("enroll upstream connection: %w", err)
	}
	if ctx.Err() == nil {
		c.upstreamFailed(err)
	}
	// The pair's state is the loop's: end it there (an engine that stops closes it itself).
	_ = p.loop.Execute(ctx, gnet.RunnableFunc(func(context.Context) error {
		p.end()
		return nil
	}))
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
	if n, ok := c.failLog.Allow(); ok {
		c.log.Warn("upstream unreachable, device connection closed (logged at most every 10 s)",
			"upstream", c.cfg.Upstream, "err", err, "unlogged", n)
	}
}

func (h *connHandler) OnTraffic(gc gnet.Conn) gnet.Action {
	if l, ok := gc.Context().(*leg); ok {
		l.p.traffic(l)
	}
	return gnet.None
}

func (h *connHandler) OnClose(gc gnet.Conn, err error) gnet.Action {
	l, ok := gc.Context().(*leg)
	if !ok {
		return gnet.None
	}
	if l.device {
		h.c.st.upOpen.Add(-1)
	} else {
		h.c.st.open.Add(-1)
	}
	l.p.closed(l, err)
	return gnet.None
}

func connAddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}
