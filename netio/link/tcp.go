package link

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetrelay/fleetrelay/internal/netutil"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

var _ gnet.EventHandler = (*tcpCarrier)(nil)

// tcpCarrier carries TCP links: one gnet engine listens on every port of the range (gnet cannot
// add a listener to a running engine, and Rotate runs one engine over many addresses); a
// client connecting to a port is paired with a connection to the device, dialed by a short
// goroutine and enrolled into the client's event loop, so both sockets of a pair live on one
// loop and everything of a pair (pair.go) is owned by it.
//
// Its gnet callbacks run on the event loops; start, open, close and stop may be called from any
// goroutine. mu guards the maps; it is taken when a client connects or a link opens or ends,
// never on the data path.
type tcpCarrier struct {
	gnet.BuiltinEventEngine
	cfg Config
	log *slog.Logger
	st  stats
	w   *watcher

	eng    gnet.Engine
	booted chan struct{}
	done   chan error // gnet.Rotate's result

	dialCtx    context.Context
	cancelDial context.CancelFunc
	dials      sync.WaitGroup    // dial goroutines
	dialLog    throttle.Throttle // dial failures are logged at most every 10 s

	mu     sync.Mutex
	byPort map[uint16]*entry // links waiting for or holding a client
	pairs  map[*entry]*pair
	loops  map[gnet.EventLoop]*loopShare
	closed bool
}

func newTCPCarrier(cfg Config, log *slog.Logger) *tcpCarrier {
	t := &tcpCarrier{
		cfg: cfg, log: log.With("protocol", TCP),
		byPort:  make(map[uint16]*entry),
		pairs:   make(map[*entry]*pair),
		loops:   make(map[gnet.EventLoop]*loopShare),
		dialLog: throttle.Throttle{Period: 10 * time.Second},
	}
	t.dialCtx, t.cancelDial = context.WithCancel(context.Background())
	return t
}

func (t *tcpCarrier) start(context.Context) error {
	// gnet.Rotate leaks the listeners it bound when a later one fails: check the range first,
	// so a busy port is an error without a leak (unless it is taken in between).
	addrs := make([]string, 0, int(t.cfg.PortLast-t.cfg.PortFirst)+1)
	for p := int(t.cfg.PortFirst); p <= int(t.cfg.PortLast); p++ {
		ap := netip.AddrPortFrom(t.cfg.Listen, uint16(p))
		ln, err := net.Listen("tcp", ap.String())
		if err != nil {
			return err
		}
		_ = ln.Close()
		addrs = append(addrs, "tcp://"+ap.String())
	}
	w, err := newWatcher()
	if err != nil {
		return err
	}
	loops := t.cfg.EventLoops
	if loops <= 0 {
		loops = runtime.NumCPU()
	}
	t.w = w
	t.booted = make(chan struct{})
	t.done = make(chan error, 1)
	go func() {
		t.done <- gnet.Rotate(t, addrs,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(loops),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithReadBufferCap(readChunk),
			gnet.WithLogger(netutil.GnetLogger{L: t.log}))
	}()
	select {
	case <-t.booted:
		return nil
	case err := <-t.done:
		t.done <- err
		w.stop()
		if err == nil {
			err = errors.New("engine stopped before it started")
		}
		return err
	}
}

func (t *tcpCarrier) OnBoot(eng gnet.Engine) gnet.Action {
	t.eng = eng
	close(t.booted)
	return gnet.None
}

func (t *tcpCarrier) open(e *entry) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.byPort[e.port] = e
	return nil
}

// close ends e: a waiting link at once, a paired one on its loop.
func (t *tcpCarrier) close(e *entry) {
	t.mu.Lock()
	p := t.pairs[e]
	if p == nil {
		if t.byPort[e.port] == e {
			delete(t.byPort, e.port)
		}
		e.end()
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	if err := p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		p.end()
		return nil
	})); err != nil { // the engine is stopping: it closes every connection itself
		e.end()
	}
}

var _ pairHost = (*linkPair)(nil)

// linkPair is a TCP link's pair host: its entry and the carrier's counters and log.
type linkPair struct {
	t *tcpCarrier
	e *entry
}

func (l *linkPair) moved(src *leg, n int) {
	if src.device {
		l.e.toClient.Add(uint64(n))
		l.t.st.toClient.Add(uint64(n))
	} else {
		l.e.toDevice.Add(uint64(n))
		l.t.st.toDevice.Add(uint64(n))
	}
	l.e.lastActive.Store(l.t.cfg.Now().UnixNano())
}

func (l *linkPair) held(_ *leg, n int) { l.e.held(n) }

func (l *linkPair) paused(*leg) {}

func (l *linkPair) warn(msg string, args ...any) {
	l.t.log.Warn("device link: "+msg, append([]any{"device", l.e.spec.Device}, args...)...)
}

// ended forgets the link's pair; called on its loop once it ended.
func (l *linkPair) ended(*pair) {
	t, e := l.t, l.e
	e.end()
	t.st.open.Add(-1)
	t.mu.Lock()
	delete(t.pairs, e)
	if t.byPort[e.port] == e {
		delete(t.byPort, e.port)
	}
	t.mu.Unlock()
}

func (t *tcpCarrier) stop(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	if t.booted == nil {
		return nil
	}
	// Dials in flight give up; one that has its connection enrolls it first, while the loops
	// still run, so no gnet worker waits for a loop that is gone.
	t.cancelDial()
	t.dials.Wait()
	t.w.stop()
	return stopEngine(ctx, t.eng, t.done, t.endLeftovers)
}

// endLeftovers ends the pairs the stopped engine did not: those whose sockets gnet had both
// closed after their remotes' FINs, the pair holding their duplicates (gnet ends a pair by
// closing a socket it still has). Called once the event loops returned, so nothing else
// touches the pairs.
func (t *tcpCarrier) endLeftovers() {
	t.mu.Lock()
	rest := make([]*pair, 0, len(t.pairs))
	for _, p := range t.pairs {
		rest = append(rest, p)
	}
	t.mu.Unlock()
	for _, p := range rest {
		p.end()
	}
}

// OnOpen admits a client to the link waiting on its port, or attaches the device connection
// a dial enrolled (its context is the device leg).
func (t *tcpCarrier) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if l, ok := c.Context().(*leg); ok {
		return nil, l.p.deviceOpened(c)
	}
	local, remote := addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	t.mu.Lock()
	e := t.byPort[local.Port()]
	reason := ""
	switch {
	case t.closed || e == nil || e.closed():
		reason = refusedNoLink
	case e.spec.Source.IsValid() && !sameAddrPort(e.spec.Source, remote):
		reason = refusedSource
	case !e.state.CompareAndSwap(StateWaiting, StateOpen):
		reason = refusedSecondClient
	}
	if reason != "" {
		t.mu.Unlock()
		t.st.refused(reason)
		return nil, gnet.Close
	}
	ls, err := t.loopShare(c)
	if err != nil {
		t.mu.Unlock()
		e.end()
		t.log.Error("device link engine cannot pause sockets", "err", err)
		return nil, gnet.Close
	}
	p := newPair(&linkPair{t: t, e: e}, t.w, t.cfg.Buffer, c, ls.epfd)
	p.busy = ls.busy
	if e.spec.Cipher != nil {
		if ls.scratch == nil {
			ls.scratch = make([]byte, readChunk)
		}
		p.client.xor, p.device.xor = e.spec.Cipher.Streams()
		p.scratch = ls.scratch
	}
	t.pairs[e] = p
	t.dials.Add(1) // under mu: stop sets closed, then waits for the dials
	t.mu.Unlock()
	e.client.Store(remote)
	t.st.open.Add(1)
	c.SetContext(&p.client)
	go t.dial(p, e)
	return nil, gnet.None
}

// loopShare is what the pairs of one event loop share: the loop's epoll descriptor (found
// once per loop), its busy poller and the cipher's output buffer. Called with t.mu held.
type loopShare struct {
	epfd    int
	busy    *busyPoller // nil: Config.BusyPoll is 0
	scratch []byte      // loop-owned once handed to a pair
}

func (t *tcpCarrier) loopShare(c gnet.Conn) (*loopShare, error) {
	el := c.EventLoop()
	if ls, ok := t.loops[el]; ok {
		return ls, nil
	}
	fd, err := loopPollFD(el, c.Fd())
	if err != nil {
		return nil, err
	}
	ls := &loopShare{epfd: fd}
	if t.cfg.BusyPoll > 0 {
		ls.busy = newBusyPoller(el, fd, t.cfg.BusyPoll)
	}
	t.loops[el] = ls
	return ls, nil
}

// dial connects to p's device and enrolls the connection into the client's loop; on failure
// the link ends and its client is closed.
func (t *tcpCarrier) dial(p *pair, e *entry) {
	defer t.dials.Done()
	ctx, cancel := context.WithTimeout(t.dialCtx, t.cfg.DialTimeout)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", e.spec.dialAddr().String())
	cancel()
	if err == nil {
		var res <-chan gnet.RegisteredResult
		// Enroll takes the connection over (it keeps a duplicate and closes conn). Register would
		// dial too, but in gnet's worker pool with net.Dial: no timeout.
		res, err = p.loop.Enroll(gnet.NewContext(context.Background(), &p.device), conn)
		if err == nil {
			err = (<-res).Err
		} else {
			_ = conn.Close()
		}
	}
	if err == nil {
		return
	}
	t.st.dialFailures.Add(1)
	t.st.refused(refusedUnreachable)
	if held, ok := t.dialLog.Allow(); ok {
		t.log.Warn("device link: device unreachable; its client is closed (logged at most every 10 s)",
			"device", e.spec.Device, "address", e.spec.dialAddr(), "err", err, "unlogged", held)
	}
	_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		p.end()
		return nil
	}))
}

func (t *tcpCarrier) OnTraffic(c gnet.Conn) gnet.Action {
	if l, ok := c.Context().(*leg); ok {
		l.p.traffic(l)
	}
	return gnet.None
}

func (t *tcpCarrier) OnClose(c gnet.Conn, err error) gnet.Action {
	if l, ok := c.Context().(*leg); ok {
		l.p.closed(l, err)
	}
	return gnet.None
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

func addrPort(a net.Addr) netip.AddrPort {
	if a, ok := a.(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
