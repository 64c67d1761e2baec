package netio

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
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/codec/ndjson"
	"github.com/fleetrelay/fleetrelay/internal/netutil"
	"github.com/fleetrelay/fleetrelay/internal/udpport"
)

// Options configure the device listeners.
type Options struct {
	TCP, UDP     string        // native protocol listen addresses ("" disables)
	MaxFrame     int           // largest accepted frame len (type + body)
	HelloTimeout time.Duration // a TCP connection must send HELLO within this
	IdleTimeout  time.Duration // a TCP or NDJSON connection silent this long is closed (0: never)
	MaxConns     int           // TCP connections (native and NDJSON together) beyond this are refused
	// MaxConnsPerSource caps the TCP connections (native and NDJSON together) of one source
	// address (IPv6: one /64); further ones are refused (native ones with ERROR 503). 0: no cap.
	MaxConnsPerSource int
	// FirstDataTimeout closes, with ERROR 408, a native TCP connection whose session is not
	// authenticated (see Authenticated) and that has sent no DATA (nor RESULT) this long after
	// it was accepted; PINGs do not extend it. 0: never.
	FirstDataTimeout time.Duration
	EventLoops       int // 0: one per CPU
	Logger           *slog.Logger

	NDJSON        string // NDJSON listen address ("" disables)
	IdentityField string // NDJSON: the top-level field naming the device (default "serial")
	MaxLine       int    // NDJSON: longest line, line ending not counted (default 64 KiB)
	// NDJSONInflight bounds the bytes of NDJSON lines read but not yet stored, over all NDJSON
	// connections; while it is reached no NDJSON connection is read (default 16 MiB).
	NDJSONInflight int

	// Teltonika listen addresses ("" disables) and their dispatcher (teltonika.go).
	TeltonikaTCP, TeltonikaUDP string
	Teltonika                  TeltonikaDispatcher

	// TLS is the native protocol over TLS (tls.go); its Addr "" disables it.
	TLS TLSOptions
	// TeltonikaTLS is Teltonika's TCP protocol over TLS, with the Teltonika dispatcher; its
	// Addr "" disables it.
	TeltonikaTLS TLSOptions
}

// Stats are counters of the device listeners. All fields are read atomically by Stats().
type Stats struct {
	Connections   int64 // open TCP connections, native and NDJSON
	Accepted      int64 // TCP connections accepted in total, native and NDJSON
	Refused       int64 // TCP connections refused (connection cap, per-source cap, draining), native and NDJSON
	SourceRefused int64 // of Refused: those refused because their source held MaxConnsPerSource
	FirstDataLate int64 // unauthenticated native connections closed for sending no DATA in time
	Frames        int64 // native frames decoded (TCP and UDP)
	Bytes         int64 // bytes decoded: native frames (TCP and UDP) and NDJSON lines
	Errors        int64 // connections closed with an ERROR frame
	UDPDropped    int64 // malformed or unexpected datagrams, dropped without an answer
	UDPSendErrors int64 // datagram replies that could not be sent

	NDJSONLines     int64 // NDJSON lines handed to the dispatcher
	NDJSONMalformed int64 // NDJSON lines dropped: not JSON, or not an object
	NDJSONIdentity  int64 // NDJSON lines dropped: identity field missing or invalid
	NDJSONTooLong   int64 // NDJSON lines over MaxLine (each closed its connection)
	NDJSONShutdown  int64 // NDJSON lines that arrived after Drain, not read
	NDJSONInflight  int64 // bytes of NDJSON lines read and not yet stored (current)

	TLS TLSStats // the TLS listener's; its connections also count in Connections, Accepted, Refused
}

type counters struct {
	conns, accepted, refused, frames, bytes, errors, udpDropped, udpSendErrors atomic.Int64
	sourceRefused, firstDataLate                                               atomic.Int64

	ndjsonLines, ndjsonMalformed, ndjsonIdentity, ndjsonTooLong, ndjsonShutdown atomic.Int64

	tls tlsCounters // the native TLS listener's
}

// Server runs the device listeners: gnet engines for the native protocol over TCP and UDP, and
// the NDJSON listener over TCP. Start, Drain and Stop may be called from any goroutine; Start must complete before the
// others.
type Server struct {
	opts Options
	d    Dispatcher
	log  *slog.Logger
	st   counters

	draining atomic.Bool
	sources  sources // connections per source address (MaxConnsPerSource)
	tap      udpTap  // device links' datagrams at the UDP listener (udptap.go)

	// pause is PauseNDJSON's state, applied to the NDJSON listener once it exists.
	pause struct {
		sync.Mutex
		paused bool
		b      *budget // the NDJSON listener's, nil before Start
	}

	tcp    *tcpServer
	udp    *udpServer
	ndjson *ndjsonServer
	telTCP *telTCPServer
	telUDP *telUDPServer
	tel    telCounters
	tls    *tlsServer // native
	telTLS *tlsServer // Teltonika
	wg     sync.WaitGroup
}

// New creates a server; nothing listens until Start.
func New(opts Options, d Dispatcher) *Server {
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = native.DefaultMaxFrame
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 10000
	}
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = 10 * time.Second
	}
	if opts.EventLoops <= 0 {
		opts.EventLoops = runtime.NumCPU()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IdentityField == "" {
		opts.IdentityField = ndjson.DefaultIdentityField
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = ndjson.DefaultMaxLine
	}
	if opts.NDJSONInflight <= 0 {
		opts.NDJSONInflight = 16 << 20
	}
	return &Server{opts: opts, d: d, log: opts.Logger.With("component", "netio")}
}

// Start binds the listeners and runs their event loops in goroutines the Server owns. It returns
// once every listener accepts, or with the first error.
func (s *Server) Start() error {
	if s.opts.TCP != "" {
		s.tcp = &tcpServer{srv: s, conns: make(map[*tcpConn]struct{}), acks: make(map[gnet.EventLoop]*ackQueue)}
		if err := s.run(&s.tcp.engineHolder, s.tcp, "tcp", s.opts.TCP, gnet.WithTicker(true), gnet.WithTCPNoDelay(gnet.TCPNoDelay)); err != nil {
			return fmt.Errorf("tcp listener %s: %w", s.opts.TCP, err)
		}
	}
	if s.opts.UDP != "" {
		s.udp = &udpServer{srv: s, sendFd: -1}
		// gnet binds every UDP socket with SO_REUSEPORT, which lets another process's socket
		// share the port (see internal/udpport): the port is claimed first, and every event loop
		// binds the claimed one.
		addr, release, err := udpport.Claim(s.opts.UDP)
		if err != nil {
			_ = s.Stop(context.Background())
			return fmt.Errorf("udp listener %s: %w", s.opts.UDP, err)
		}
		// A fleet of UDP devices with several datagrams in flight each sends in bursts: a receive
		// buffer of the default size (≈200 KiB, a few hundred datagrams) overflows, and every
		// datagram the kernel drops is resent. The kernel caps it at net.core.rmem_max.
		err = s.run(&s.udp.engineHolder, s.udp, "udp", addr, gnet.WithSocketRecvBuffer(udpRecvBuffer))
		release() // the first event loop's socket holds the port now (or none was bound)
		if err != nil {
			_ = s.Stop(context.Background())
			return fmt.Errorf("udp listener %s: %w", s.opts.UDP, err)
		}
	}
	if err := s.startTeltonika(); err != nil {
		_ = s.Stop(context.Background())
		return err
	}
	if s.opts.NDJSON != "" {
		s.ndjson = newNDJSONServer(s)
		s.pause.Lock()
		s.pause.b = &s.ndjson.budget
		s.ndjson.budget.pause(s.pause.paused)
		s.pause.Unlock()
		if err := s.ndjson.start(s.opts.NDJSON); err != nil {
			s.ndjson = nil
			_ = s.Stop(context.Background())
			return fmt.Errorf("ndjson listener %s: %w", s.opts.NDJSON, err)
		}
	}
	if s.opts.TLS.Addr != "" {
		s.tls = newTLSServer(s, s.opts.TLS, "native", &s.st.tls, s.nativeTLSCore,
			native.AppendError(nil, native.CodeMalformed, "this port speaks TLS"))
		if err := s.tls.start(s.opts.TLS.Addr); err != nil {
			s.tls = nil
			_ = s.Stop(context.Background())
			return fmt.Errorf("tls listener %s: %w", s.opts.TLS.Addr, err)
		}
	}
	return nil
}

// udpRecvBuffer is the receive buffer asked for the UDP listener's socket.
const udpRecvBuffer = 4 << 20

type engineHolder struct {
	eng    gnet.Engine
	addr   net.Addr
	booted chan struct{}
}

func (h *engineHolder) boot(eng gnet.Engine, network string) {
	h.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			ap := netutil.AddrPort(sa)
			if network == "udp" {
				h.addr = net.UDPAddrFromAddrPort(ap)
			} else {
				h.addr = net.TCPAddrFromAddrPort(ap)
			}
		}
		_ = unix.Close(fd)
	}
	close(h.booted)
}

func (s *Server) run(h *engineHolder, handler gnet.EventHandler, network, addr string, extra ...gnet.Option) error {
	h.booted = make(chan struct{})
	opts := append([]gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(s.opts.EventLoops),
		gnet.WithReuseAddr(true),
		gnet.WithLogger(netutil.GnetLogger{L: s.log}),
	}, extra...)
	errc := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		errc <- gnet.Run(handler, network+"://"+addr, opts...)
	}()
	select {
	case <-h.booted:
		return nil
	case err := <-errc:
		if err == nil {
			err = errors.New("engine stopped before it started")
		}
		return err
	}
}

// TCPAddr is the bound TCP address (nil when disabled).
func (s *Server) TCPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.addr
}

// NDJSONAddr is the bound NDJSON TCP address (nil when disabled).
func (s *Server) NDJSONAddr() net.Addr {
	if s.ndjson == nil {
		return nil
	}
	return s.ndjson.addr
}

// UDPAddr is the bound UDP address (nil when disabled).
func (s *Server) UDPAddr() net.Addr {
	if s.udp == nil {
		return nil
	}
	return s.udp.addr
}

// Drain stops taking new data: from now on new connections are refused, DATA frames are
// answered with ERROR 503 and NDJSON connections that send anything are closed unread, so nothing
// is accepted that shutdown could not store.
func (s *Server) Drain() {
	s.draining.Store(true)
	if s.ndjson != nil {
		s.ndjson.drain()
	}
}

// refusal says why admit refused a connection.
type refusal int

const (
	admitted refusal = iota
	atCapacity
	sourceFull // the source address holds MaxConnsPerSource
)

// admit counts a new connection from remote on a connection-oriented listener (native TCP or
// NDJSON, which share MaxConns and MaxConnsPerSource), or refuses it when draining or at a cap.
// An admitted connection is released once. Called from event loops.
func (s *Server) admit(remote netip.AddrPort) refusal {
	if s.draining.Load() || s.st.conns.Load() >= int64(s.opts.MaxConns) {
		s.st.refused.Add(1)
		return atCapacity
	}
	if !s.sources.take(remote.Addr(), s.opts.MaxConnsPerSource) {
		s.st.refused.Add(1)
		s.st.sourceRefused.Add(1)
		return sourceFull
	}
	s.st.conns.Add(1)
	s.st.accepted.Add(1)
	return admitted
}

// release uncounts a connection admit admitted.
func (s *Server) release(remote netip.AddrPort) {
	s.sources.release(remote.Addr(), s.opts.MaxConnsPerSource)
	s.st.conns.Add(-1)
}

// PauseNDJSON stops (true) or resumes (false) reading NDJSON connections, for instance while
// the store refuses new data: the connections stay open and TCP flow control holds the gateways
// back. Lines already read are still handed on, and a connection already waiting in a read
// takes what arrives there once. It may be called at any time, before Start too, from any
// goroutine; Drain overrides it.
func (s *Server) PauseNDJSON(paused bool) {
	s.pause.Lock()
	defer s.pause.Unlock()
	s.pause.paused = paused
	if s.pause.b != nil {
		s.pause.b.pause(paused)
	}
}

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// Stop closes every connection and stops the event loops, waiting for them (bounded by ctx).
func (s *Server) Stop(ctx context.Context) error {
	var errs []error
	if s.ndjson != nil {
		s.ndjson.stop()
	}
	for _, t := range []*tlsServer{s.tls, s.telTLS} {
		if t != nil {
			t.stop(ctx)
		}
	}
	// gnet's Engine.Stop signals the engine and then polls every 500 ms until it is down, which
	// made every shutdown last 1 s for two engines. Signal both at once and wait for their
	// gnet.Run to return instead; the polling Stops end with stopped.
	stopped, cancel := context.WithCancel(ctx)
	defer cancel()
	holders := append([]*engineHolder{s.tcpHolder(), s.udpHolder()}, s.teltonikaHolders()...)
	stops := make(chan error, len(holders))
	signalled := 0
	for _, h := range holders {
		if h == nil || h.booted == nil {
			continue
		}
		select {
		case <-h.booted:
			signalled++
			go func(eng gnet.Engine) { stops <- eng.Stop(stopped) }(h.eng)
		default:
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	cancel()
	for range signalled {
		if err := <-stops; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
	}
	if s.udp != nil && len(errs) == 0 { // the loops are down: nothing of theirs sends any more
		s.udp.closeSender()
	}
	return errors.Join(errs...)
}

func (s *Server) tcpHolder() *engineHolder {
	if s.tcp == nil {
		return nil
	}
	return &s.tcp.engineHolder
}

func (s *Server) udpHolder() *engineHolder {
	if s.udp == nil {
		return nil
	}
	return &s.udp.engineHolder
}

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:   s.st.conns.Load(),
		Accepted:      s.st.accepted.Load(),
		Refused:       s.st.refused.Load(),
		SourceRefused: s.st.sourceRefused.Load(),
		FirstDataLate: s.st.firstDataLate.Load(),
		Frames:        s.st.frames.Load(),
		Bytes:         s.st.bytes.Load(),
		Errors:        s.st.errors.Load(),
		UDPDropped:    s.st.udpDropped.Load(),
		UDPSendErrors: s.st.udpSendErrors.Load(),

		NDJSONLines:     s.st.ndjsonLines.Load(),
		NDJSONMalformed: s.st.ndjsonMalformed.Load(),
		NDJSONIdentity:  s.st.ndjsonIdentity.Load(),
		NDJSONTooLong:   s.st.ndjsonTooLong.Load(),
		NDJSONShutdown:  s.st.ndjsonShutdown.Load(),
		NDJSONInflight:  s.ndjsonInflight(),

		TLS: s.st.tls.stats(),
	}
}

func (s *Server) ndjsonInflight() int64 {
	if s.ndjson == nil {
		return 0
	}
	return s.ndjson.budget.inUse()
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
