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
)

// Options configure the device listeners.
type Options struct {
	TCP, UDP     string        // listen addresses ("" disables)
	MaxFrame     int           // largest accepted frame len (type + body)
	HelloTimeout time.Duration // a TCP connection must send HELLO within this
	IdleTimeout  time.Duration // a TCP connection silent this long is closed (0: never)
	MaxConns     int           // TCP connections beyond this are refused with ERROR 503
	EventLoops   int           // 0: one per CPU
	Logger       *slog.Logger
}

// Stats are counters of the device listeners. All fields are read atomically by Stats().
type Stats struct {
	Connections   int64 // open TCP connections
	Accepted      int64 // TCP connections accepted in total
	Refused       int64 // TCP connections refused (connection cap, draining)
	Frames        int64 // frames decoded (TCP and UDP)
	Bytes         int64 // bytes decoded (TCP and UDP)
	Errors        int64 // connections closed with an ERROR frame
	UDPDropped    int64 // malformed or unexpected datagrams, dropped without an answer
	UDPSendErrors int64 // datagram replies that could not be sent
}

type counters struct {
	conns, accepted, refused, frames, bytes, errors, udpDropped, udpSendErrors atomic.Int64
}

// Server runs the gnet engines of the native protocol. Start, Drain and Stop may be called from
// any goroutine; Start must complete before the others.
type Server struct {
	opts Options
	d    Dispatcher
	log  *slog.Logger
	st   counters

	draining atomic.Bool

	tcp *tcpServer
	udp *udpServer
	wg  sync.WaitGroup
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
	return &Server{opts: opts, d: d, log: opts.Logger.With("component", "netio")}
}

// Start binds the listeners and runs their event loops in goroutines the Server owns. It returns
// once every listener accepts, or with the first error.
func (s *Server) Start() error {
	if s.opts.TCP != "" {
		s.tcp = &tcpServer{srv: s, conns: make(map[*tcpConn]struct{})}
		if err := s.run(&s.tcp.engineHolder, s.tcp, "tcp", s.opts.TCP, gnet.WithTicker(true), gnet.WithTCPNoDelay(gnet.TCPNoDelay)); err != nil {
			return fmt.Errorf("tcp listener %s: %w", s.opts.TCP, err)
		}
	}
	if s.opts.UDP != "" {
		s.udp = &udpServer{srv: s}
		if err := s.run(&s.udp.engineHolder, s.udp, "udp", s.opts.UDP); err != nil {
			_ = s.Stop(context.Background())
			return fmt.Errorf("udp listener %s: %w", s.opts.UDP, err)
		}
	}
	return nil
}

type engineHolder struct {
	eng    gnet.Engine
	addr   net.Addr
	booted chan struct{}
}

func (h *engineHolder) boot(eng gnet.Engine, network string) {
	h.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			ap := sockaddrToAddrPort(sa)
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
		gnet.WithLogger(gnetLogger{s.log}),
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

// UDPAddr is the bound UDP address (nil when disabled).
func (s *Server) UDPAddr() net.Addr {
	if s.udp == nil {
		return nil
	}
	return s.udp.addr
}

// Drain stops taking new data: from now on new connections are refused and DATA frames are
// answered with ERROR 503, so nothing is accepted that shutdown could not acknowledge.
func (s *Server) Drain() { s.draining.Store(true) }

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// Stop closes every connection and stops the event loops, waiting for them (bounded by ctx).
func (s *Server) Stop(ctx context.Context) error {
	var errs []error
	for _, h := range []*engineHolder{s.tcpHolder(), s.udpHolder()} {
		if h == nil || h.booted == nil {
			continue
		}
		select {
		case <-h.booted:
			if err := h.eng.Stop(ctx); err != nil {
				errs = append(errs, err)
			}
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
		Frames:        s.st.frames.Load(),
		Bytes:         s.st.bytes.Load(),
		Errors:        s.st.errors.Load(),
		UDPDropped:    s.st.udpDropped.Load(),
		UDPSendErrors: s.st.udpSendErrors.Load(),
	}
}

func sockaddrToAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
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

// gnetLogger routes gnet's logs through slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Info(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...)) }
