package link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/netutil"
	"github.com/fleetrelay/fleetrelay/internal/udpport"
)

// The UDP carrier. One gnet engine (gnet.Rotate) binds every port of the range on the links'
// listen address from the start, whether or not a link uses it: a link's client side exists
// the moment the link does, and a datagram to a port without a link is dropped and counted.
// gnet binds UDP with SO_REUSEPORT, one socket per port in each event loop, so the range costs
// loops × ports descriptors (udpLoops below), and the open links one more each.
//
// The device leg of a link reaches the device one of two ways (Spec.Via).
//
// ViaSocket: a connected UDP socket of the link's own toward Spec.DeviceAddr, dialled and added
// to one of the engine's loops by gnet (EventLoop.Register supports UDP: it dials a connected
// socket and polls it like a stream). It keeps the device's answers apart without
// demultiplexing: whatever arrives on a link's socket comes from that link's device, and the
// kernel drops what comes from anyone else. Its cost: one descriptor per link, and the device
// sees the relay from an ephemeral port, which a device behind carrier-grade NAT cannot be
// reached from (its mapping only admits the relay's device listener).
//
// ViaListener: no socket of the link's own. Datagrams to the device leave from the relay's UDP
// device listener (DeviceListener.Sender: sendto(2) on a duplicate of its socket) toward the
// device's last UDP source, through the mapping the device's own traffic keeps open; the
// listener's tap (netio/udptap.go) hands DeviceDatagram the datagrams that are not native
// frames, and the carrier finds their link by source in a copy-on-write map (bySrc: one atomic
// load and one map lookup per such datagram; a nil map when no link goes via the listener).
// One link per device source. When the device's NAT mapping changes, its datagrams come from
// a new source: the actors note it as the device's last address, and the ticker (OnTick, at
// most followTick later) moves the link to it — datagrams to the device go to the new source,
// and the new source's non-native datagrams reach the link (the old source's no longer do).
// Until then what the device sends from the new source is dropped by the listener as any
// stray datagram, and what the client sends goes to the old mapping: UDP's loss, which the
// link's protocols tolerate.
//
// Known limits of gnet's connected UDP sockets: a datagram is read per readiness event (level
// triggered); an empty datagram from the device reads as end of stream, and an ICMP error
// (the device's port unreachable) as a broken connection: either closes the device leg, which
// ends the link.
//
// Concurrency: a client's datagrams arrive on whichever loop the kernel's SO_REUSEPORT hash
// picks for the client's address, the device's on the loop its socket was registered with, so
// one link is touched from two loops (and closed from the Manager's goroutine or gnet's ticker).
// Each link has a mutex held only for non-blocking work: the source check, the cipher and a
// send with MSG_DONTWAIT. Datagrams to the client leave through a duplicate of the port's
// listener socket, kept until the carrier stops, so a send never meets a closed descriptor;
// the device socket's descriptor is used under the link's mutex, and forgotten (OnClose) before
// gnet closes it.

// udpLoops is how many event loops the UDP carrier runs; each binds every port of the range.
// One: device links carry little, and every further loop is one more thread blocked in
// epoll_wait, which keeps a P of the Go runtime until sysmon takes it back. On the 2-core
// development machine a second loop made a 64-byte round trip through a link about 8 times
// slower (≈100–180 µs instead of ≈12–15 µs, BenchmarkUDPLinkRoundTrip/link-2loops; with
// GOMAXPROCS=4 most of the gap goes). The code is correct for any number: the tests run two.
const udpLoops = 1

// maxTick is the ticker's period when no link has a timeout shorter than 4 × maxTick; minTick
// the shortest period whatever the timeouts.
const (
	maxTick = time.Second
	minTick = 5 * time.Millisecond
)

// followTick is the ticker's longest period while a link goes via the device listener: how
// late, at most, such a link follows its device to a new source.
const followTick = 250 * time.Millisecond

// Reasons a datagram is dropped, indexes of udpCounters.dropped.
const (
	dropNoLink   = iota // to a port without a link, or after the link closed
	dropSource          // from a host:port other than the link's client (pinned, or the first)
	dropNoClient        // from the device while the link has no client yet
	dropCipher          // refused by the link's Cipher.Open
	dropTooLarge        // larger than a datagram can be once sealed (EMSGSIZE)
	dropSend            // refused by the kernel: socket buffer full, or an ICMP error pending
	numDrops
)

var udpDropReasons = [numDrops]string{"no_link", "source", "no_client", "cipher", "too_large", "send"}

// udpCounters are the carrier's metrics, updated by the event loops.
type udpCounters struct {
	datagrams [2]atomic.Uint64 // by direction: toDeviceDir, toClientDir
	bytes     [2]atomic.Uint64 // payload bytes (plaintext) by direction
	dropped   [numDrops]atomic.Uint64
	timeouts  atomic.Uint64 // links closed by their Spec.Timeout
	followed  atomic.Uint64 // links via the device listener moved to their device's new source
}

const (
	toDeviceDir = 0
	toClientDir = 1
)

var _ gnet.EventHandler = (*udpCarrier)(nil)
var _ carrier = (*udpCarrier)(nil)

// udpCarrier carries the UDP links of one port range. start, open, close and stop may be
// called from any goroutine; start must complete before the others. Its gnet callbacks run on
// the engine's loops and ticker.
type udpCarrier struct {
	gnet.BuiltinEventEngine

	listen      netip.Addr
	first, last uint16
	loops       int
	v6          bool // the listen sockets are AF_INET6
	log         *slog.Logger

	eng      gnet.Engine   // set by OnBoot
	running  chan struct{} // closed at the first tick: every loop runs
	tickOnce sync.Once
	done     chan struct{} // closed when gnet.Rotate has returned; nil before start
	runErr   error         // Rotate's error, read after done
	stopOnce sync.Once
	stopErr  error

	ports []atomic.Pointer[udpLink] // by port − first: the open link on that port
	fds   []atomic.Int32            // by port − first: 1 + a duplicate of its listen socket (0: none yet)

	dl    DeviceListener                              // for links via the device listener
	bySrc atomic.Pointer[map[netip.AddrPort]*udpLink] // links via the listener by device source; replaced whole under mu, nil when empty

	mu       sync.Mutex
	links    map[*entry]*udpLink // every link not yet closed, published or still opening
	stopping bool
	opening  sync.WaitGroup // open calls waiting for gnet to register a device leg

	st udpCounters
}

// udpLink is one link's state on the event loops.
type udpLink struct {
	e      *entry
	idx    int       // e.port − first
	opened time.Time // idle time counts from here until the first datagram

	mu       sync.Mutex
	closed   bool
	dev      gnet.Conn      // the device leg (nil before gnet opened it and after it closed)
	devFd    int            // dev's descriptor, -1 without dev
	client   netip.AddrPort // who holds the link (unmapped; zero: nobody yet)
	clientSA unix.Sockaddr  // client as the listen sockets' family
	sealed   uint64         // datagrams sealed for the client so far: the next one's number

	// Via the device listener only: where the device is, and the send function toward it.
	// devAddr changes under both h.mu and mu (OnTick's follow); send under mu.
	devAddr netip.AddrPort
	send    func([]byte) error
}

// viaListener reports whether l goes via the device listener (fixed when l is made).
func (l *udpLink) viaListener() bool { return l.e.spec.Via == ViaListener }

// newUDP returns the carrier of UDP links on listen, ports first to last (inclusive). Nothing
// is bound until start.
func newUDP(listen netip.Addr, first, last uint16, log *slog.Logger) *udpCarrier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen = listen.Unmap()
	n := 0
	if last >= first {
		n = int(last-first) + 1
	}
	return &udpCarrier{
		listen: listen, first: first, last: last,
		loops: udpLoops,
		v6:    !listen.Is4(),
		log:   log.With("component", "link", "protocol", UDP),
		ports: make([]atomic.Pointer[udpLink], n),
		fds:   make([]atomic.Int32, n),
		links: make(map[*entry]*udpLink),
	}
}

// address is port's listen address as gnet was given it (and DupListener wants it).
func (h *udpCarrier) address(port uint16) string {
	return netip.AddrPortFrom(h.listen, port).String()
}

// start binds every port of the range and runs the engine's loops in a goroutine the carrier
// owns, which stop ends. It returns once all loops run, or with the bind error.
func (h *udpCarrier) start(ctx context.Context) error {
	if !h.listen.IsValid() || len(h.ports) == 0 {
		return fmt.Errorf("udp links: listen address %v ports %d-%d: nothing to bind", h.listen, h.first, h.last)
	}
	// gnet binds UDP with SO_REUSEPORT, which would let another server's socket share a port of
	// the range and take a share of its datagrams (see internal/udpport): each port is claimed
	// first, and released once the engine's loops hold it.
	addrs := make([]string, 0, len(h.ports))
	var releases []func()
	releaseAll := func() {
		for _, r := range releases {
			r()
		}
		releases = nil
	}
	defer releaseAll()
	for i := range h.ports {
		addr, release, err := udpport.Claim(h.address(h.first + uint16(i)))
		if err != nil {
			return fmt.Errorf("udp links on %s ports %d-%d: %w", h.listen, h.first, h.last, err)
		}
		releases = append(releases, release)
		addrs = append(addrs, "udp://"+addr)
	}
	h.running = make(chan struct{})
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		h.runErr = gnet.Rotate(h, addrs,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(h.loops),
			gnet.WithReuseAddr(true),
			gnet.WithTicker(true),
			// The largest datagram (65,507 bytes over IPv4, 65,527 over IPv6) fits whole.
			gnet.WithReadBufferCap(1<<16),
			gnet.WithLogger(netutil.GnetLogger{L: h.log}),
		)
	}()
	select {
	case <-h.running:
		return nil
	case <-h.done:
		err := h.runErr
		if err == nil {
			err = errors.New("engine stopped before it ran")
		}
		return fmt.Errorf("udp links on %s ports %d-%d: %w", h.listen, h.first, h.last, err)
	case <-ctx.Done():
		_ = h.stop(context.WithoutCancel(ctx))
		return fmt.Errorf("udp links on %s ports %d-%d: %w", h.listen, h.first, h.last, ctx.Err())
	}
}

// open starts carrying e: it dials the device leg, then admits datagrams on e's port. With
// Spec.Source the link is open at once (the device's datagrams go there); without, it waits for
// its first client.
func (h *udpCarrier) open(e *entry) error {
	sp := e.spec
	switch {
	case sp.Protocol != UDP:
		return fmt.Errorf("link on port %d: protocol %q is not %s", e.port, sp.Protocol, UDP)
	case e.port < h.first || e.port > h.last:
		return fmt.Errorf("link on port %d: outside the range %d-%d", e.port, h.first, h.last)
	case !sp.DeviceAddr.IsValid():
		return fmt.Errorf("link on port %d: no device address", e.port)
	case sp.Source.IsValid() && sp.Source.Addr().Unmap().Is4() == h.v6:
		return fmt.Errorf("link on port %d: source %s is not reachable from the listen address %s", e.port, sp.Source, h.listen)
	}
	idx := int(e.port - h.first)
	l := &udpLink{e: e, idx: idx, opened: time.Now(), devFd: -1}
	if sp.Source.IsValid() {
		l.client = unmap(sp.Source)
		l.clientSA = sockaddr(l.client, h.v6)
	}
	if sp.Via == ViaListener {
		return h.openViaListener(l)
	}

	h.mu.Lock()
	if h.stopping || h.done == nil {
		h.mu.Unlock()
		return ErrClosed
	}
	if h.ports[idx].Load() != nil || h.links[e] != nil {
		h.mu.Unlock()
		return fmt.Errorf("link on port %d: the port holds a link", e.port)
	}
	if err := h.dupListener(idx); err != nil {
		h.mu.Unlock()
		return fmt.Errorf("link on port %d: %w", e.port, err)
	}
	h.links[e] = l
	// gnet's round-robin choice of a loop is not safe for concurrent use: h.mu serializes it.
	ctx := gnet.NewNetAddrContext(gnet.NewContext(context.Background(), l), net.UDPAddrFromAddrPort(sp.dialAddr()))
	res, err := h.eng.Register(ctx)
	if err == nil {
		h.opening.Add(1)
	}
	h.mu.Unlock()

	if err == nil {
		// gnet dials on its worker pool and adds the socket on the loop, which runs: stop waits
		// for h.opening before it stops the engine.
		select {
		case r := <-res:
			err = r.Err
		case <-h.done: // the engine ended by itself
			err = ErrClosed
		}
		h.opening.Done()
	}
	if err != nil {
		h.forget(l)
		return fmt.Errorf("link on port %d: device leg to %s: %w", e.port, sp.dialAddr(), err)
	}

	h.mu.Lock()
	l.mu.Lock()
	closed := l.closed
	if !closed {
		if l.client.IsValid() { // pinned: paired with its client already
			e.client.Store(l.client)
			e.state.Store(StateOpen)
		}
		h.ports[idx].Store(l)
	}
	l.mu.Unlock()
	h.mu.Unlock()
	if closed { // closed while opening: by close, stop, or its device leg ending
		return fmt.Errorf("link on port %d: %w", e.port, ErrClosed)
	}
	h.log.Debug("udp link open", "device", sp.Device, "port", e.port, "device_addr", sp.DeviceAddr, "source", sp.Source)
	return nil
}

// openViaListener publishes l, a link via the device listener: there is no socket to open, only
// the send function toward the device's source and the source's place in bySrc.
func (h *udpCarrier) openViaListener(l *udpLink) error {
	e := l.e
	if h.dl.Sender == nil {
		return fmt.Errorf("link on port %d: %w", e.port, ErrNoListener)
	}
	l.devAddr = unmap(e.spec.DeviceAddr)
	send, err := h.dl.Sender(l.devAddr)
	if err != nil {
		return fmt.Errorf("link on port %d: device leg to %s: %w", e.port, l.devAddr, err)
	}
	l.send = send
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping || h.done == nil {
		return ErrClosed
	}
	if h.ports[l.idx].Load() != nil || h.links[e] != nil {
		return fmt.Errorf("link on port %d: the port holds a link", e.port)
	}
	if m := h.bySrc.Load(); m != nil && (*m)[l.devAddr] != nil {
		return fmt.Errorf("link on port %d: device source %s: %w", e.port, l.devAddr, ErrSourceBusy)
	}
	if err := h.dupListener(l.idx); err != nil {
		return fmt.Errorf("link on port %d: %w", e.port, err)
	}
	h.links[e] = l
	h.setSource(l, netip.AddrPort{}, l.devAddr)
	if l.client.IsValid() { // pinned: paired with its client already
		e.client.Store(l.client)
		e.state.Store(StateOpen)
	}
	h.ports[l.idx].Store(l)
	h.log.Debug("udp link open via the device listener", "device", e.spec.Device, "port", e.port, "device_addr", l.devAddr, "source", e.spec.Source)
	return nil
}

// setSource moves l in bySrc from old to src (either may be zero: none), replacing the map.
// Called with h.mu held.
func (h *udpCarrier) setSource(l *udpLink, old, src netip.AddrPort) {
	var m map[netip.AddrPort]*udpLink
	if p := h.bySrc.Load(); p != nil {
		m = make(map[netip.AddrPort]*udpLink, len(*p)+1)
		for k, v := range *p {
			m[k] = v
		}
	} else {
		m = make(map[netip.AddrPort]*udpLink, 1)
	}
	if old.IsValid() && m[old] == l {
		delete(m, old)
	}
	if src.IsValid() {
		m[src] = l
	}
	if len(m) == 0 {
		h.bySrc.Store(nil)
		return
	}
	h.bySrc.Store(&m)
}

// fromListener forwards a datagram that reached the device listener from src and is not a
// native frame to the link via the listener that src belongs to, and reports whether there is
// one. It runs on the listener's event loop (netio's tap).
func (h *udpCarrier) fromListener(src netip.AddrPort, data []byte) bool {
	m := h.bySrc.Load()
	if m == nil {
		return false
	}
	l := (*m)[src]
	if l == nil {
		return false
	}
	h.fromDevice(l, data)
	return true
}

// follow moves the links via the device listener to their device's last UDP source when it
// changed. It runs on the ticker goroutine.
func (h *udpCarrier) follow(ls []*udpLink) {
	for _, l := range ls {
		src, ok := h.dl.Locate(l.e.spec.Device)
		if !ok {
			continue // last seen over TCP or NDJSON: the UDP source stays the last one known
		}
		src = unmap(src)
		h.mu.Lock()
		if l.devAddr == src || h.links[l.e] != l {
			h.mu.Unlock()
			continue
		}
		if m := h.bySrc.Load(); m != nil && (*m)[src] != nil {
			h.mu.Unlock()
			continue // another link holds that source
		}
		send, err := h.dl.Sender(src)
		if err != nil {
			h.mu.Unlock()
			continue
		}
		old := l.devAddr
		l.mu.Lock()
		l.devAddr, l.send = src, send
		l.mu.Unlock()
		h.setSource(l, old, src)
		h.mu.Unlock()
		l.e.deviceAddr.Store(&src)
		h.st.followed.Add(1)
		h.log.Debug("udp link follows its device", "device", l.e.spec.Device, "port", l.e.port, "from", old, "to", src)
	}
}

// dupListener makes sure the carrier holds a duplicate of the listen socket of port first+idx,
// through which the link's datagrams leave for the client. Called with h.mu held.
func (h *udpCarrier) dupListener(idx int) error {
	if h.fds[idx].Load() != 0 {
		return nil
	}
	fd, err := h.eng.DupListener("udp", h.address(h.first+uint16(idx)))
	if err != nil {
		return fmt.Errorf("duplicate the listen socket: %w", err)
	}
	h.fds[idx].Store(int32(fd) + 1)
	return nil
}

// close ends e's link: its device socket closes (on its loop) and datagrams to its port are
// dropped from now on. Idempotent.
func (h *udpCarrier) close(e *entry) {
	h.mu.Lock()
	l := h.links[e]
	h.mu.Unlock()
	if l == nil {
		e.state.Store(StateClosed)
		return
	}
	h.closeLink(l)
}

// closeLink closes l unless it was closed already, and reports whether it did.
func (h *udpCarrier) closeLink(l *udpLink) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	dev := l.dev
	l.mu.Unlock()
	h.forget(l)
	l.e.state.Store(StateClosed)
	if dev != nil {
		_ = dev.Close() // asynchronous: gnet closes the socket on its loop (OnClose)
	}
	h.log.Debug("udp link closed", "device", l.e.spec.Device, "port", l.e.port)
	return true
}

// forget removes l from the carrier's tables.
func (h *udpCarrier) forget(l *udpLink) {
	h.mu.Lock()
	if h.links[l.e] == l {
		delete(h.links, l.e)
	}
	h.ports[l.idx].CompareAndSwap(l, nil)
	if l.viaListener() {
		h.setSource(l, l.devAddr, netip.AddrPort{})
	}
	h.mu.Unlock()
}

// stop closes every link, stops the engine and waits for it (bounded by ctx). Idempotent.
func (h *udpCarrier) stop(ctx context.Context) error {
	h.mu.Lock()
	h.stopping = true
	started := h.done != nil
	h.mu.Unlock()
	if !started {
		return nil
	}
	h.stopOnce.Do(func() { h.stopErr = h.stopEngine(ctx) })
	return h.stopErr
}

func (h *udpCarrier) stopEngine(ctx context.Context) error {
	select {
	case <-h.running:
	case <-h.done:
		return nil // it never ran, or ended by itself
	}
	h.opening.Wait() // no new open passes h.stopping; those under way end with the loops running
	h.mu.Lock()
	ls := make([]*udpLink, 0, len(h.links))
	for _, l := range h.links {
		ls = append(ls, l)
	}
	h.mu.Unlock()
	for _, l := range ls {
		h.closeLink(l)
	}

	// gnet's Engine.Stop polls every 500 ms until the engine is down: wait for Rotate to
	// return instead, and end the polling Stop with it.
	stopped, cancel := context.WithCancel(ctx)
	defer cancel()
	stopc := make(chan error, 1)
	go func() { stopc <- h.eng.Stop(stopped) }()
	var err error
	select {
	case <-h.done:
	case <-ctx.Done():
		err = fmt.Errorf("stop udp links: %w", ctx.Err())
	}
	cancel()
	if serr := <-stopc; serr != nil && !errors.Is(serr, context.Canceled) && !errors.Is(serr, context.DeadlineExceeded) {
		err = errors.Join(err, fmt.Errorf("stop udp links: %w", serr))
	}
	if err != nil {
		return err // the loops may still send through the duplicates: keep them
	}
	for i := range h.fds {
		if fd := h.fds[i].Swap(0); fd != 0 {
			_ = unix.Close(int(fd) - 1)
		}
	}
	return nil
}

// OnBoot keeps the engine.
func (h *udpCarrier) OnBoot(eng gnet.Engine) gnet.Action {
	h.eng = eng
	return gnet.None
}

// OnOpen runs when gnet has added a link's device socket to a loop.
func (h *udpCarrier) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	l, ok := c.Context().(*udpLink)
	if !ok {
		return nil, gnet.Close
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, gnet.Close
	}
	l.dev, l.devFd = c, c.Fd()
	return nil, gnet.None
}

// OnClose runs before gnet closes a device socket: the link forgets it, and ends if it had not.
func (h *udpCarrier) OnClose(c gnet.Conn, err error) gnet.Action {
	l, ok := c.Context().(*udpLink)
	if !ok {
		return gnet.None
	}
	l.mu.Lock()
	if l.dev == c {
		l.dev, l.devFd = nil, -1
	}
	l.mu.Unlock()
	if h.closeLink(l) {
		h.log.Debug("udp link's device leg ended", "device", l.e.spec.Device, "port", l.e.port, "err", err)
	}
	return gnet.None
}

// OnTraffic forwards one datagram: from a client to a port of the range, or from a device to
// its link's socket.
func (h *udpCarrier) OnTraffic(c gnet.Conn) gnet.Action {
	data, _ := c.Next(-1) // all of it: gnet would keep what is left for the next datagram
	if l, ok := c.Context().(*udpLink); ok {
		h.fromDevice(l, data)
		return gnet.None
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	ra, _ := c.RemoteAddr().(*net.UDPAddr)
	if la == nil || ra == nil || la.Port < int(h.first) || la.Port > int(h.last) {
		h.st.dropped[dropNoLink].Add(1)
		return gnet.None
	}
	l := h.ports[la.Port-int(h.first)].Load()
	if l == nil {
		h.st.dropped[dropNoLink].Add(1)
		return gnet.None
	}
	h.fromClient(l, unmap(ra.AddrPort()), data)
	return gnet.None
}

// fromClient forwards a client's datagram to l's device. A client that is not yet l's client
// becomes it only with a datagram the cipher accepts.
func (h *udpCarrier) fromClient(l *udpLink, src netip.AddrPort, data []byte) {
	scratch := getScratch()
	defer putScratch(scratch)
	l.mu.Lock()
	n, drop := l.toDevice(src, data, scratch, h.v6)
	l.mu.Unlock()
	h.count(l.e, toDeviceDir, n, drop)
}

func (l *udpLink) toDevice(src netip.AddrPort, data []byte, scratch *[]byte, v6 bool) (int, int) {
	if l.closed || (l.devFd < 0 && l.send == nil) {
		return 0, dropNoLink
	}
	if l.client.IsValid() && src != l.client {
		return 0, dropSource
	}
	plain := data
	if ci := l.e.spec.Cipher; ci != nil {
		p, err := ci.Open((*scratch)[:0], data)
		if err != nil {
			return 0, dropCipher
		}
		*scratch, plain = p, p
	}
	if !l.client.IsValid() {
		l.client, l.clientSA = src, sockaddr(src, v6)
		l.e.client.Store(src)
		l.e.state.Store(StateOpen)
	}
	var err error
	if l.send != nil {
		err = l.send(plain) // from the device listener's socket
	} else {
		err = unix.Send(l.devFd, plain, unix.MSG_DONTWAIT)
	}
	if err != nil {
		return 0, sendDrop(err)
	}
	return len(plain), -1
}

// fromDevice forwards a device's datagram to l's client, sealed when l has a cipher.
func (h *udpCarrier) fromDevice(l *udpLink, data []byte) {
	scratch := getScratch()
	defer putScratch(scratch)
	fd := int(h.fds[l.idx].Load()) - 1
	l.mu.Lock()
	n, drop := l.toClient(fd, data, scratch)
	l.mu.Unlock()
	h.count(l.e, toClientDir, n, drop)
}

func (l *udpLink) toClient(fd int, data []byte, scratch *[]byte) (int, int) {
	if l.closed {
		return 0, dropNoLink
	}
	if !l.client.IsValid() {
		return 0, dropNoClient
	}
	out := data
	if ci := l.e.spec.Cipher; ci != nil {
		// Every number is sealed once, sent or not: a keystream is never used twice.
		out = ci.Seal((*scratch)[:0], l.sealed, data)
		*scratch = out
		l.sealed++
	}
	if err := unix.Sendto(fd, out, unix.MSG_DONTWAIT, l.clientSA); err != nil {
		return 0, sendDrop(err)
	}
	return len(data), -1
}

// count records a datagram forwarded (drop < 0, n payload bytes) or dropped.
func (h *udpCarrier) count(e *entry, dir, n, drop int) {
	if drop >= 0 {
		h.st.dropped[drop].Add(1)
		return
	}
	h.st.datagrams[dir].Add(1)
	h.st.bytes[dir].Add(uint64(n))
	if dir == toDeviceDir {
		e.toDevice.Add(uint64(n))
	} else {
		e.toClient.Add(uint64(n))
	}
	e.lastActive.Store(time.Now().UnixNano())
}

func sendDrop(err error) int {
	if errors.Is(err, unix.EMSGSIZE) {
		return dropTooLarge
	}
	return dropSend
}

// OnTick closes the links idle for their Spec.Timeout. It runs on gnet's ticker goroutine, not
// on a loop, every quarter of the shortest timeout (between minTick and maxTick): a link closes
// between its timeout and a quarter more after its last datagram (up to maxTick more for one
// opened while the ticker waited its longest).
func (h *udpCarrier) OnTick() (time.Duration, gnet.Action) {
	h.tickOnce.Do(func() { close(h.running) })
	now := time.Now()
	next := maxTick
	var expired, via []*udpLink
	h.mu.Lock()
	for _, l := range h.links {
		if l.viaListener() && h.dl.Locate != nil {
			via = append(via, l)
			next = min(next, followTick)
		}
		t := l.e.spec.Timeout
		if t <= 0 {
			continue
		}
		next = min(next, t/4)
		last := l.opened
		if ns := l.e.lastActive.Load(); ns != 0 {
			last = time.Unix(0, ns)
		}
		if now.Sub(last) >= t {
			expired = append(expired, l)
		}
	}
	h.mu.Unlock()
	for _, l := range expired {
		if h.closeLink(l) {
			h.st.timeouts.Add(1)
		}
	}
	h.follow(via)
	return max(next, minTick), gnet.None
}

// openLinks counts the links not closed (the gauge of open UDP links).
func (h *udpCarrier) openLinks() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.links)
}

// listenerLinks counts the links via the device listener.
func (h *udpCarrier) listenerLinks() int {
	if m := h.bySrc.Load(); m != nil {
		return len(*m)
	}
	return 0
}

// scratch buffers hold a datagram opened or sealed by a link's cipher while its loop forwards it.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<16+64); return &b }}

func getScratch() *[]byte  { return scratchPool.Get().(*[]byte) }
func putScratch(b *[]byte) { scratchPool.Put(b) }

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// sockaddr is ap for a socket of family AF_INET6 (v6) or AF_INET.
func sockaddr(ap netip.AddrPort, v6 bool) unix.Sockaddr {
	if !v6 {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
