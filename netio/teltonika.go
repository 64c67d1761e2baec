package netio

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/internal/udpport"
)

// Teltonika trackers (Codec 8, 8 Extended and 16 over TCP and UDP; Codec 12 commands over TCP)
// are served by gnet engines of their own, on Options.TeltonikaTCP and Options.TeltonikaUDP, and
// over TLS by a crypto/tls listener (Options.TeltonikaTLS, tls.go) that feeds the decrypted
// stream to the same protocol core as the plain TCP listener (telStream). With a client CA, the
// IMEI of the handshake must be one the device certificate names (subject CN or a DNS SAN),
// else it is answered 00 and the connection closed.
// They share the connection cap, the per-source cap, the idle timeout and the handshake
// deadline (HelloTimeout, for the IMEI) with the native TCP listener.
//
// TCP: the first bytes are the IMEI handshake, answered 01 when TeltonikaDispatcher.OpenTeltonika
// admits it and 00 (then closed) when it does not. Then every AVL packet is copied out of gnet's
// buffer, checked (codec/teltonika.ParseTCP: CRC, lengths, counts) and handed to the session,
// which answers it with the count of records accepted once they are stored. A packet that does
// not check is handed on as bad (TeltonikaSession.Bad): its answer, a count of 0, is written in
// turn with the answers of the packets before it, so the device resends it and the answers stay
// in order. A frame whose preamble or length is wrong (codec/teltonika.FrameLen refuses it) leaves
// no way to find the next frame: the connection is closed. A lone 0xFF byte (a keep-alive) is
// skipped. Codec 12 frames are the device's responses to commands.
//
// UDP: each datagram is one AVL packet with its own header and IMEI; a malformed one is counted
// and dropped without an answer. Its answer (the packet id echoed, the count accepted) is written
// by the dispatcher once the records are stored, with sendto(2) on the listener's socket.

// TeltonikaDispatcher receives what Teltonika trackers send. Its methods are called from gnet
// event loops and must not block.
type TeltonikaDispatcher interface {
	// OpenTeltonika is called once per TCP connection after its IMEI handshake. A non-nil error
	// refuses the device: it is answered 00 and the connection closed.
	OpenTeltonika(c Conn, imei string) (TeltonikaSession, error)
	// TeltonikaUDP is called for each well-formed datagram; h is the callee's, while p, its
	// records and their IO elements are only valid during the call (they alias gnet's buffer and
	// a reused parser's). The answer is written with c.Write (teltonika.AppendUDPAck).
	TeltonikaUDP(c Conn, h *teltonika.UDPHeader, p *teltonika.Packet)
}

// TeltonikaSession is one Teltonika TCP connection after its handshake. Its methods are called
// from the connection's event loop, in the order frames arrived, and must not block.
type TeltonikaSession interface {
	// Packet delivers one AVL packet that checked. p, its records and their IO elements are only
	// valid during the call (they alias the connection's buffer and a reused parser's): the
	// callee copies what it keeps. The callee answers it (teltonika.AppendAck) with c.Write.
	Packet(p *teltonika.Packet)
	// Bad says a packet did not check (reason: "crc", "length", ... from the parser's error);
	// the callee answers it with a count of 0, in order with the other answers.
	Bad(reason string)
	// Response delivers the text of a Codec 12 response.
	Response(text string)
	// Closed is called once when the connection is gone.
	Closed()
}

// Teltonika counters (Stats).
type telCounters struct {
	packets, bad, pings, responses, framing, refused atomic.Int64
	datagrams, udpDropped                            atomic.Int64
	badReasons                                       sync.Map    // reason → *atomic.Int64
	tls                                              tlsCounters // the Teltonika TLS listener's
}

func (tc *telCounters) badReason(reason string) {
	tc.bad.Add(1)
	v, ok := tc.badReasons.Load(reason)
	if !ok {
		v, _ = tc.badReasons.LoadOrStore(reason, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// TeltonikaStats are counters of the Teltonika listeners.
type TeltonikaStats struct {
	Packets   int64            // AVL packets over TCP that checked
	Bad       int64            // AVL packets over TCP that did not check (answered 0)
	BadBy     map[string]int64 // Bad by reason
	Pings     int64            // lone 0xFF bytes
	Responses int64            // Codec 12 responses
	Framing   int64            // connections closed because a frame's preamble or length was wrong
	Refused   int64            // handshakes answered 00
	Datagrams int64            // datagrams that parsed
	Dropped   int64            // datagrams dropped unanswered (malformed, or while draining)
	TLS       TLSStats         // the Teltonika TLS listener's; its connections count in Stats too
}

// TeltonikaStats returns a snapshot of the Teltonika counters. Safe for concurrent use.
func (s *Server) TeltonikaStats() TeltonikaStats {
	t := &s.tel
	st := TeltonikaStats{Packets: t.packets.Load(), Bad: t.bad.Load(), Pings: t.pings.Load(),
		Responses: t.responses.Load(), Framing: t.framing.Load(), Refused: t.refused.Load(),
		Datagrams: t.datagrams.Load(), Dropped: t.udpDropped.Load(), BadBy: map[string]int64{}, TLS: t.tls.stats()}
	t.badReasons.Range(func(k, v any) bool {
		st.BadBy[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return st
}

// teltonikaCollectors are the collectors of TeltonikaStats, read when scraped.
func (s *Server) teltonikaCollectors() []prometheus.Collector {
	counter := func(name, help string, f func(TeltonikaStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(s.TeltonikaStats())) })
	}
	cs := []prometheus.Collector{
		counter("fleetrelay_teltonika_packets_total", "Teltonika AVL packets over TCP that checked.", func(t TeltonikaStats) int64 { return t.Packets }),
		counter("fleetrelay_teltonika_pings_total", "Teltonika keep-alive bytes (0xFF).", func(t TeltonikaStats) int64 { return t.Pings }),
		counter("fleetrelay_teltonika_responses_total", "Teltonika Codec 12 responses.", func(t TeltonikaStats) int64 { return t.Responses }),
		counter("fleetrelay_teltonika_framing_errors_total", "Teltonika connections closed because a frame's preamble, length or IMEI handshake was wrong.", func(t TeltonikaStats) int64 { return t.Framing }),
		counter("fleetrelay_teltonika_refused_total", "Teltonika handshakes answered 00 (devices.auth, unknown identities at their cap, shutdown, an IMEI its TLS certificate does not name).", func(t TeltonikaStats) int64 { return t.Refused }),
		counter("fleetrelay_teltonika_datagrams_total", "Teltonika UDP datagrams that parsed.", func(t TeltonikaStats) int64 { return t.Datagrams }),
		counter("fleetrelay_teltonika_datagrams_dropped_total", "Teltonika UDP datagrams dropped unanswered: malformed, or during shutdown.", func(t TeltonikaStats) int64 { return t.Dropped }),
	}
	for _, r := range []string{"crc", "length", "truncated", "count", "codec", "type", "codec12", "other"} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetrelay_teltonika_bad_packets_total",
			Help:        "Teltonika TCP packets that did not check, answered with a count of 0, by reason.",
			ConstLabels: prometheus.Labels{"reason": r}}, func() float64 { return float64(s.TeltonikaStats().BadBy[r]) }))
	}
	return cs
}

// TeltonikaTCPAddr is the bound Teltonika TCP address (nil when disabled).
func (s *Server) TeltonikaTCPAddr() net.Addr {
	if s.telTCP == nil {
		return nil
	}
	return s.telTCP.addr
}

// TeltonikaUDPAddr is the bound Teltonika UDP address (nil when disabled).
func (s *Server) TeltonikaUDPAddr() net.Addr {
	if s.telUDP == nil {
		return nil
	}
	return s.telUDP.addr
}

// startTeltonika binds the Teltonika listeners that are configured.
func (s *Server) startTeltonika() error {
	if s.opts.TeltonikaTCP == "" && s.opts.TeltonikaUDP == "" && s.opts.TeltonikaTLS.Addr == "" {
		return nil
	}
	if s.opts.Teltonika == nil {
		return fmt.Errorf("teltonika listeners: no dispatcher")
	}
	if a := s.opts.TeltonikaTCP; a != "" {
		s.telTCP = &telTCPServer{srv: s, conns: make(map[*telConn]struct{})}
		if err := s.run(&s.telTCP.engineHolder, s.telTCP, "tcp", a, gnet.WithTicker(true), gnet.WithTCPNoDelay(gnet.TCPNoDelay)); err != nil {
			return fmt.Errorf("teltonika tcp listener %s: %w", a, err)
		}
	}
	if a := s.opts.TeltonikaUDP; a != "" {
		s.telUDP = &telUDPServer{srv: s}
		addr, release, err := udpport.Claim(a) // see Start
		if err != nil {
			return fmt.Errorf("teltonika udp listener %s: %w", a, err)
		}
		err = s.run(&s.telUDP.engineHolder, s.telUDP, "udp", addr, gnet.WithSocketRecvBuffer(udpRecvBuffer))
		release()
		if err != nil {
			return fmt.Errorf("teltonika udp listener %s: %w", a, err)
		}
	}
	if a := s.opts.TeltonikaTLS.Addr; a != "" {
		s.telTLS = newTLSServer(s, s.opts.TeltonikaTLS, "teltonika", &s.tel.tls, s.telTLSCore, telRefuse)
		if err := s.telTLS.start(a); err != nil {
			s.telTLS = nil
			return fmt.Errorf("teltonika tls listener %s: %w", a, err)
		}
	}
	return nil
}

var (
	_ gnet.EventHandler = (*telTCPServer)(nil)
	_ gnet.EventHandler = (*telUDPServer)(nil)
)

// telTCPServer is the gnet handler of Teltonika trackers over TCP: it moves bytes between gnet
// and each connection's protocol core (telStream), as tcp.go does for the native protocol.
type telTCPServer struct {
	gnet.BuiltinEventEngine
	engineHolder
	srv *Server

	mu    sync.Mutex // guards conns; taken on open/close and once per tick
	conns map[*telConn]struct{}
}

// telStream is the Teltonika protocol of one stream connection, whatever carries the stream:
// the plain listener feeds it from gnet's OnTraffic (telConn), the TLS listener from the
// goroutine that reads the connection's decrypted stream (tls.go). It holds the IMEI
// handshake, the framing, the limits and timeouts; answers and Codec 12 commands are written
// by the dispatcher through its Conn methods, and reach the device through the wire. Fields
// without atomics are owned by the goroutine that feeds it; the Conn methods are safe from any
// goroutine.
type telStream struct {
	streamBase

	session    TeltonikaSession // feeder-owned
	handshaken atomic.Bool      // the handshake was answered 01
}

// telConn is one plain Teltonika TCP connection: the protocol core over gnet.
type telConn struct {
	telStream
	gnetWire
}

var (
	_ streamCore = (*telStream)(nil)
	_ Conn       = (*telStream)(nil)
	_ wire       = (*telConn)(nil)
)

func (s *telTCPServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.boot(eng, "tcp")
	return gnet.None
}

func (s *telTCPServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	remote := addrPort(c.RemoteAddr())
	if s.srv.admit(remote) != admitted {
		return nil, gnet.Close // Teltonika has no error frame
	}
	tc := &telConn{gnetWire: gnetWire{c}}
	tc.init(tc, tc, s.srv, remote, time.Now().UnixNano())
	c.SetContext(tc)
	s.mu.Lock()
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
	return nil, gnet.None
}

func (s *telTCPServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	tc, ok := c.Context().(*telConn)
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

func (s *telTCPServer) OnTraffic(c gnet.Conn) gnet.Action {
	return feedGnet(c, c.Context().(*telConn))
}

func (s *telTCPServer) OnTick() (time.Duration, gnet.Action) {
	now := time.Now().UnixNano()
	d := s.srv.opts.deadlines()
	s.mu.Lock()
	for tc := range s.conns {
		tc.check(now, d)
	}
	s.mu.Unlock()
	return tickEvery(s.srv.opts), gnet.None
}

// handshake answers.
var (
	telAccept = []byte{0x01}
	telRefuse = []byte{0x00}
)

// feed handles the IMEI handshake and then the whole frames at the start of buf. It returns the
// bytes consumed and whether the connection must close (what it must be told was put already).
// buf is only read during the call.
func (ts *telStream) feed(buf []byte) (done int, closeNow bool) {
	st := &ts.srv.tel
	if ts.session == nil {
		imei, n, err := teltonika.ParseIMEI(buf)
		if err != nil {
			st.framing.Add(1)
			return 0, true
		}
		if n == 0 {
			return 0, false
		}
		if ts.certIDs != nil && !certNames(ts.certIDs, imei) {
			st.tls.identityRefused.Add(1)
			return n, ts.refuse()
		}
		sess, err := ts.srv.opts.Teltonika.OpenTeltonika(ts.self, imei)
		if err != nil || ts.srv.draining.Load() {
			if sess != nil {
				sess.Closed()
			}
			return n, ts.refuse()
		}
		done = n
		ts.session = sess
		ts.handshaken.Store(true)
		ts.w.put(telAccept)
	}
	for !closeNow {
		n, err := teltonika.FrameLen(buf[done:])
		if errors.Is(err, teltonika.ErrPing) {
			done += n
			st.pings.Add(1)
			continue
		}
		if err != nil {
			st.framing.Add(1)
			closeNow = true
			break
		}
		if n == 0 {
			break
		}
		frame := buf[done : done+n]
		done += n
		ts.srv.st.bytes.Add(int64(n))
		switch {
		case ts.srv.draining.Load():
			closeNow = true // not answered: the device resends it to the next relay
		case teltonika.IsCodec12(frame):
			text, err := teltonika.ParseResponse(frame)
			if err != nil {
				st.badReason("codec12")
				continue
			}
			st.responses.Add(1)
			ts.session.Response(text)
		default:
			ps, _ := telParsers.Get().(*teltonika.Parser)
			if ps == nil {
				ps = new(teltonika.Parser)
			}
			p, err := ps.ParseTCP(frame)
			if err != nil {
				telParsers.Put(ps)
				st.badReason(badReason(err))
				ts.session.Bad(badReason(err))
				continue
			}
			st.packets.Add(1)
			ts.session.Packet(&p)
			telParsers.Put(ps)
		}
	}
	if done > 0 {
		ts.last.Store(time.Now().UnixNano())
	}
	return done, closeNow
}

// telParsers holds the *teltonika.Parser the event loops decode TCP packets and datagrams with:
// a packet is decoded and handed over within its callback, so a parser's records are reused for the next.
var telParsers sync.Pool

// refuse answers the handshake 00; the connection closes once it is written.
func (ts *telStream) refuse() bool {
	ts.srv.tel.refused.Add(1)
	ts.w.put(telRefuse)
	ts.failed.Store(true)
	return true
}

// badReason is the metric label of a packet the parser refused.
func badReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{{teltonika.ErrCRC, "crc"}, {teltonika.ErrLength, "length"}, {teltonika.ErrTruncated, "truncated"},
		{teltonika.ErrCount, "count"}, {teltonika.ErrCodec, "codec"}, {teltonika.ErrType, "type"}} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// check enforces the handshake and idle timeouts at now; any goroutine. Teltonika has no
// first-DATA deadline: the handshake is its HELLO.
func (ts *telStream) check(now int64, d deadlines) {
	switch {
	case !ts.handshaken.Load() && now-ts.opened > d.hello:
		ts.Close()
	case d.idle > 0 && now-ts.last.Load() > d.idle:
		ts.Close()
	}
}

// ended is called once by the feeding goroutine when the connection is gone.
func (ts *telStream) ended() {
	ts.failed.Store(true)
	if ts.session != nil {
		ts.session.Closed()
		ts.session = nil
	}
}

// Write implements Conn.
func (ts *telStream) Write(frame []byte) {
	if ts.failed.Load() {
		return
	}
	ts.w.send(frame)
}

// Fail implements Conn: it closes the connection, Teltonika having no error frame.
func (ts *telStream) Fail(uint16, string) { ts.Close() }

// Close implements Conn.
func (ts *telStream) Close() {
	ts.failed.Store(true)
	ts.w.shut()
}

// telUDPServer is the gnet handler of Teltonika datagrams. Malformed datagrams are counted and
// dropped without an answer.
type telUDPServer struct {
	gnet.BuiltinEventEngine
	engineHolder
	srv *Server
}

func (s *telUDPServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.boot(eng, "udp")
	return gnet.None
}

func (s *telUDPServer) OnTraffic(c gnet.Conn) gnet.Action {
	st := &s.srv.tel
	buf, _ := c.Peek(-1)
	if s.srv.draining.Load() || len(buf) > teltonika.MaxPacket {
		st.udpDropped.Add(1)
		return gnet.None
	}
	ps, _ := telParsers.Get().(*teltonika.Parser)
	if ps == nil {
		ps = new(teltonika.Parser)
	}
	defer telParsers.Put(ps)
	h, p, err := ps.ParseUDP(buf)
	if err != nil {
		st.udpDropped.Add(1)
		return gnet.None
	}
	st.datagrams.Add(1)
	s.srv.st.bytes.Add(int64(len(buf)))
	uc := &udpConn{fd: c.Fd(), st: &s.srv.st, remote: addrPort(c.RemoteAddr()), size: len(buf)}
	uc.sa = addrPortToSockaddr(uc.remote, !addrPort(s.addr).Addr().Unmap().Is4())
	s.srv.opts.Teltonika.TeltonikaUDP(telUDPConn{uc}, &h, &p)
	return gnet.None
}

// teltonikaHolders are the Teltonika engines started, for Stop.
func (s *Server) teltonikaHolders() []*engineHolder {
	var hs []*engineHolder
	if s.telTCP != nil {
		hs = append(hs, &s.telTCP.engineHolder)
	}
	if s.telUDP != nil {
		hs = append(hs, &s.telUDP.engineHolder)
	}
	return hs
}

// telUDPConn answers one Teltonika source address; Fail sends nothing (Teltonika has no error
// frame, and a datagram source has no connection to close).
type telUDPConn struct{ *udpConn }

func (telUDPConn) Fail(uint16, string) {}
