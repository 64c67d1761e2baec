package netio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

// TLSOptions configure a TLS listener of devices: the native protocol's (Options.TLS) or
// Teltonika's (Options.TeltonikaTLS).
//
// gnet has no TLS (gnet issue #749), so this listener is crypto/tls over the standard library's
// sockets: one goroutine per connection reads and decrypts, and feeds the decrypted stream to
// the same protocol core as the plain gnet listener of its protocol (session.go,
// teltonika.go); writes go through a writer goroutine that runs only while the connection has
// something to send. The connection cap, the per-source cap, the protocol's timeouts, its
// counters and its dispatcher are the plain listener's.
//
// Suites: TLS 1.2 is offered with the two ECDHE AES-256-GCM suites only
// (TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384): forward
// secrecy, an AEAD, and the AES-256 the device contract names; Go ignores the order of a
// suite list, so leaving AES-128 or ChaCha20 suites in would let Go pick them first. TLS 1.3's
// suites are not configurable in Go: a TLS 1.3 connection uses TLS_AES_128_GCM_SHA256,
// TLS_AES_256_GCM_SHA384 or TLS_CHACHA20_POLY1305_SHA256 as Go and the device agree (all AEAD
// with forward secrecy); a device that must have AES-256 offers only TLS_AES_256_GCM_SHA384.
//
// The listener only moves bytes: its reader hands the decrypted stream to the connection's
// protocol core (streamCore: feed, check, ended) and its writer sends what the core queues
// through the wire interface (put, send, sendAndClose, shut); the core's check runs on the
// listener's timer. One listener type serves both protocols: the native one (Options.TLS, its
// core streamConn, session.go) and Teltonika's (Options.TeltonikaTLS, its core telStream,
// teltonika.go), each listener with the core's constructor, its own counters (the protocol
// label of the metrics) and its own answer to a plain client.
type TLSOptions struct {
	Addr         string            // listen address ("" disables)
	Certificates []tls.Certificate // the relay's certificate chain and key
	// ClientCAs, when set, makes a device certificate signed by one of them required (the
	// handshake fails without one) and names the device: its subject CN and its DNS SANs are
	// the identities its handshake may give (compared as the registry compares identities,
	// case-folded). A native HELLO naming another is refused with ERROR 401, and such a
	// connection is authenticated: FirstDataTimeout does not apply to it. A Teltonika IMEI
	// handshake naming another is answered 00 and the connection closed.
	ClientCAs  *x509.CertPool
	MinVersion uint16 // tls.VersionTLS12 (the default) or tls.VersionTLS13
}

// TLS handshake failure reasons: the reason label of fleetrelay_device_tls_handshake_failures_total.
const (
	TLSNotTLS        = "not_tls"         // the client's first bytes are not a TLS handshake (a plain client)
	TLSNoClientCert  = "no_client_cert"  // a device certificate is required and none was sent
	TLSBadClientCert = "bad_client_cert" // the device certificate does not verify, or names no identity
	TLSTimeout       = "timeout"         // the handshake did not end within devices.hello_timeout
	TLSClosed        = "closed"          // the client went away during the handshake
	TLSProtocol      = "protocol"        // anything else: no common version or suite, a bad message, an alert
)

// TLSReasons lists the handshake failure reasons, in a fixed order.
const tlsReasonCount = 6

var TLSReasons = [tlsReasonCount]string{TLSNotTLS, TLSNoClientCert, TLSBadClientCert, TLSTimeout, TLSClosed, TLSProtocol}

var (
	errNoClientCert = errors.New("no device certificate")
	errCertIdentity = errors.New("device certificate names no identity (no subject CN, no DNS SAN)")
)

// tlsWriteTimeout bounds one write to a TLS device: a device that reads nothing for this long
// is closed (the plain listener's gnet buffers what a device does not read instead).
const tlsWriteTimeout = 30 * time.Second

// Read buffer sizes of a TLS connection: small while frames are small, doubled up to a whole
// frame when one does not fit, and given back once it is handled.
const tlsMinRead = 1 << 10

// serverTLSConfig is the crypto/tls configuration of the listener.
func serverTLSConfig(o TLSOptions) *tls.Config {
	cfg := &tls.Config{
		Certificates: o.Certificates,
		MinVersion:   max(o.MinVersion, tls.VersionTLS12),
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
	}
	if o.ClientCAs != nil {
		// crypto/tls verifies a certificate the device sends (chain to ClientCAs, client-auth
		// usage, validity); VerifyConnection then requires one, so that a missing certificate
		// is told apart from a bad one in the metrics.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = o.ClientCAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errNoClientCert
			}
			if len(certIdentities(cs.PeerCertificates[0])) == 0 {
				return errCertIdentity
			}
			return nil
		}
	}
	return cfg
}

// certIdentities are the device identities a certificate names: its subject CN, then its DNS
// SANs. URI, e-mail and IP SANs name no device.
func certIdentities(c *x509.Certificate) []string {
	var ids []string
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	return append(ids, c.DNSNames...)
}

// handshakeReason classifies a failed handshake.
func handshakeReason(err error) string {
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.As(err, &rh):
		return TLSNotTLS
	case errors.Is(err, errNoClientCert):
		return TLSNoClientCert
	case errors.As(err, &cv), errors.Is(err, errCertIdentity):
		return TLSBadClientCert
	case errors.As(err, &ne) && ne.Timeout():
		return TLSTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return TLSClosed
	}
	return TLSProtocol
}

// tlsServer is a TLS listener of device connections (native or Teltonika): an accept
// goroutine, a goroutine per connection, a writer goroutine per connection while it has
// something to write, and a timer goroutine for the connections' timeouts; stop waits for all
// of them.
type tlsServer struct {
	srv      *Server
	protocol string       // "native" or "teltonika": logs, and the metrics' protocol label
	st       *tlsCounters // the protocol's
	// newCore makes the protocol core of a connection accepted from remote at now (unix
	// nanos), whose transport is c.
	newCore func(c *tlsConn, remote netip.AddrPort, now int64) streamCore
	plain   []byte // what a plain client is told, in its protocol, before it is closed
	ln      net.Listener
	addr    net.Addr
	cfg     *tls.Config
	warn    throttle.Throttle

	done chan struct{} // closed by stop: the timer ends
	connTable[*tlsConn]
}

// tlsConn is one TLS device connection: the transport of a protocol core, fed by the goroutine
// that reads the decrypted stream. Its methods are safe from any goroutine and never block on
// the network.
type tlsConn struct {
	core streamCore
	b    *streamBase // core.base()
	s    *tlsServer
	raw  net.Conn
	tc   *tls.Conn
	// ready: the handshake succeeded; from then on the timer checks the connection.
	ready atomic.Bool

	mu         sync.Mutex
	out        []byte // queued for the writer
	spare      []byte // the writer's last buffer, reused
	writing    bool   // a writer goroutine runs
	closing    bool   // close once out is written; queue nothing more
	gone       bool   // the reader ended: no writer may start
	sockClosed bool   // the socket is closed
	ackSeq     uint64 // the highest seq asked for
	ackSent    uint64 // the highest seq written
	ackDue     bool
	ackRep     bool // write the ACK even if it repeats ackSent
}

// tlsNative is the native protocol over a TLS connection: the Conn its dispatcher gets, which
// coalesces cumulative ACKs through the connection's writer.
type tlsNative struct {
	streamConn
	t *tlsConn
}

var (
	_ wire  = (*tlsConn)(nil)
	_ Acker = (*tlsNative)(nil)
)

// Ack implements Acker.
func (n *tlsNative) Ack(seq uint64, again bool) { n.t.Ack(seq, again) }

// nativeTLSCore is the native listener's newCore.
func (s *Server) nativeTLSCore(c *tlsConn, remote netip.AddrPort, now int64) streamCore {
	n := &tlsNative{t: c}
	n.init(c, n, s, remote, now)
	return n
}

// telTLSCore is the Teltonika listener's newCore.
func (s *Server) telTLSCore(c *tlsConn, remote netip.AddrPort, now int64) streamCore {
	ts := &telStream{}
	ts.init(c, ts, s, remote, now)
	return ts
}

func newTLSServer(srv *Server, o TLSOptions, protocol string, st *tlsCounters,
	newCore func(*tlsConn, netip.AddrPort, int64) streamCore, plain []byte) *tlsServer {
	return &tlsServer{
		srv:      srv,
		protocol: protocol,
		st:       st,
		newCore:  newCore,
		plain:    plain,
		cfg:      serverTLSConfig(o),
		warn:     throttle.Throttle{Period: 10 * time.Second},
		done:     make(chan struct{}),
	}
}

// start listens on addr and runs the accept and timer goroutines.
func (s *tlsServer) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln, s.addr = ln, ln.Addr()
	s.wg.Add(2)
	go s.accept()
	go s.timer()
	return nil
}

// accept admits connections; a refused one is closed before its handshake: refusing costs no
// handshake, and nothing can be said to the device before one (so no ERROR 503).
func (s *tlsServer) accept() {
	defer s.wg.Done()
	s.srv.acceptAdmitted(s.ln, "tls", &s.warn, func(raw net.Conn, remote netip.AddrPort) {
		c := &tlsConn{s: s, raw: raw, tc: tls.Server(raw, s.cfg)}
		c.core = s.newCore(c, remote, time.Now().UnixNano())
		c.b = c.core.base()
		if !s.enroll(c) {
			raw.Close()
			s.srv.release(remote)
			return
		}
		go s.serve(c)
	})
}

// serve runs one connection's handshake (within HelloTimeout of the accept) and, once it
// succeeded, starts the goroutine that reads the connection. The handshake's deep calls grow a
// goroutine's stack to tens of KiB, which an idle connection would keep: the reader starts on
// a fresh, small stack instead (half the memory of an idle TLS connection).
func (s *tlsServer) serve(c *tlsConn) {
	defer s.wg.Done()
	st := s.st
	_ = c.raw.SetDeadline(time.Unix(0, c.b.opened).Add(s.srv.opts.HelloTimeout))
	if err := c.tc.Handshake(); err != nil {
		reason := handshakeReason(err)
		st.failures[reasonIndex(reason)].Add(1)
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && rh.Conn != nil {
			// A plain client: tell it in its own protocol.
			_ = rh.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = rh.Conn.Write(s.plain)
		}
		if held, ok := s.warn.Allow(); ok {
			s.srv.log.Info("tls handshake failed", "protocol", s.protocol, "remote", c.b.remote, "reason", reason, "err", err, "failed_since_last_log", held)
		}
		s.end(c)
		return
	}
	_ = c.raw.SetDeadline(time.Time{})
	cs := c.tc.ConnectionState()
	if s.cfg.ClientCAs != nil && len(cs.PeerCertificates) > 0 {
		c.b.certIDs = certIdentities(cs.PeerCertificates[0])
	}
	st.handshakes.Add(1)
	st.conns.Add(1)
	c.ready.Store(true)
	s.wg.Add(1) // this goroutine's count holds the server's above 0
	go s.read(c)
}

// read feeds the decrypted stream to the protocol core until the connection ends, is failed
// or closed, or the server stops.
func (s *tlsServer) read(c *tlsConn) {
	defer s.wg.Done()
	defer s.end(c)
	defer s.st.conns.Add(-1)
	buf := make([]byte, tlsMinRead)
	n := 0
	for {
		m, err := c.tc.Read(buf[n:])
		if m > 0 {
			n += m
			done, closeNow := c.core.feed(buf[:n])
			n = copy(buf, buf[done:n])
			if closeNow {
				return
			}
			switch {
			case n == len(buf): // a partial frame fills the buffer (MaxFrame bounds it)
				nb := make([]byte, 2*len(buf))
				copy(nb, buf[:n])
				buf = nb
			case n == 0 && len(buf) > tlsMinRead:
				buf = make([]byte, tlsMinRead)
			}
		}
		if err != nil {
			return // EOF, a closed socket (Close, Fail, idle timeout, Stop), a TLS error
		}
	}
}

// end is the reader's last act: the session is closed, the socket closed unless the writer
// still flushes (it closes it), and the connection uncounted.
func (s *tlsServer) end(c *tlsConn) {
	c.core.ended()
	c.mu.Lock()
	c.gone = true
	if !c.writing && !c.sockClosed {
		c.sockClosed = true
		c.raw.Close()
	}
	c.mu.Unlock()
	s.drop(c)
	s.srv.release(c.b.remote)
}

// timer checks the timeouts of the connections past their handshake (a handshake is bounded
// by its socket's deadline).
func (s *tlsServer) timer() {
	defer s.wg.Done()
	t := time.NewTicker(tickEvery(s.srv.opts))
	defer t.Stop()
	d := s.srv.opts.deadlines()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		s.each(func(c *tlsConn) {
			if c.ready.Load() {
				c.core.check(now, d)
			}
		})
	}
}

// stop closes the listener and every connection, each once what was queued for it (the ACKs
// of the frames stored before shutdown) is written, and waits for every goroutine; when ctx
// ends first, the connections still writing are closed at once.
func (s *tlsServer) stop(ctx context.Context) {
	s.closing((*tlsConn).closeSoon)
	_ = s.ln.Close()
	close(s.done)
	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		s.each((*tlsConn).shutNow)
		<-waited
	}
}

// closeSoon closes the connection once the writer has written what is queued (now if nothing
// is); nothing more is queued.
func (c *tlsConn) closeSoon() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	if !c.writing && !c.sockClosed {
		c.sockClosed = true
		c.raw.Close()
	}
}

// put implements wire: queued like send (the reader never writes to the socket itself).
func (c *tlsConn) put(frame []byte) { c.queue(frame, false) }

// send implements wire.
func (c *tlsConn) send(frame []byte) { c.queue(frame, false) }

// sendAndClose implements wire.
func (c *tlsConn) sendAndClose(frame []byte) { c.queue(frame, true) }

// shut implements wire.
func (c *tlsConn) shut() { c.shutNow() }

func (c *tlsConn) shutNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out, c.ackDue, c.closing = nil, false, true
	if !c.sockClosed {
		c.sockClosed = true
		c.raw.Close() // the reader's Read and the writer's Write return
	}
}

// queue appends frame to the outbound bytes and makes sure a writer runs; with thenClose the
// connection closes once they are written.
func (c *tlsConn) queue(frame []byte, thenClose bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.out = append(c.out, frame...)
	c.closing = thenClose
	c.wakeLocked()
}

// Ack is the native protocol's Acker: the highest seq asked for is written after what was
// queued before it, once per writer pass.
func (c *tlsConn) Ack(seq uint64, again bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.b.failed.Load() {
		return
	}
	switch {
	case seq > c.ackSeq:
		c.ackSeq = seq
	case !again:
		return // said already, or about to be
	default:
		c.ackRep = true
	}
	c.ackDue = true
	c.wakeLocked()
}

// wakeLocked starts a writer unless one runs or the reader ended (then nothing is written but
// what a running writer already has). Called with c.mu held.
func (c *tlsConn) wakeLocked() {
	if c.writing || c.gone || c.sockClosed {
		return
	}
	c.writing = true
	c.s.wg.Add(1) // the reader runs: the server's count is not 0
	go c.write()
}

// write sends what is queued until nothing is, then ends (closing the socket if it was asked
// to, or if the reader ended meanwhile).
func (c *tlsConn) write() {
	defer c.s.wg.Done()
	for {
		c.mu.Lock()
		if c.ackDue && (c.ackSeq > c.ackSent || c.ackRep) {
			c.out = native.AppendAck(c.out, c.ackSeq)
			c.ackSent = c.ackSeq
		}
		c.ackDue, c.ackRep = false, false
		if len(c.out) == 0 || c.sockClosed {
			c.writing = false
			if (c.closing || c.gone) && !c.sockClosed {
				c.sockClosed = true
				c.raw.Close()
			}
			c.mu.Unlock()
			return
		}
		buf := c.out
		c.out = c.spare[:0]
		c.mu.Unlock()

		_ = c.raw.SetWriteDeadline(time.Now().Add(tlsWriteTimeout))
		_, err := c.tc.Write(buf)

		c.mu.Lock()
		if cap(buf) <= 64<<10 { // keep a small buffer, not one a burst grew
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		if err != nil {
			c.b.failed.Store(true)
			c.out, c.closing = nil, true
			if !c.sockClosed {
				c.sockClosed = true
				c.raw.Close()
			}
		}
		c.mu.Unlock()
	}
}

// TLSAddr is the bound address of the native TLS listener (nil when disabled).
func (s *Server) TLSAddr() net.Addr {
	if s.tls == nil {
		return nil
	}
	return s.tls.addr
}

// TeltonikaTLSAddr is the bound address of the Teltonika TLS listener (nil when disabled).
func (s *Server) TeltonikaTLSAddr() net.Addr {
	if s.telTLS == nil {
		return nil
	}
	return s.telTLS.addr
}

func reasonIndex(reason string) int {
	for i, r := range TLSReasons {
		if r == reason {
			return i
		}
	}
	return len(TLSReasons) - 1
}

// tlsCounters are one TLS listener's counters.
type tlsCounters struct {
	conns, handshakes, identityRefused atomic.Int64
	failures                           [tlsReasonCount]atomic.Int64 // by TLSReasons
}

// TLSStats are a TLS listener's counters (Stats.TLS, TeltonikaStats.TLS).
type TLSStats struct {
	Connections int64            // open TLS connections past their handshake
	Handshakes  int64            // handshakes completed in total
	Failures    map[string]int64 // failed handshakes by reason (TLSReasons)
	// IdentityRefused counts handshakes of the device protocol (a native HELLO: ERROR 401; a
	// Teltonika IMEI: 00) refused for naming another device than the connection's certificate.
	IdentityRefused int64
}

func (t *tlsCounters) stats() TLSStats {
	st := TLSStats{
		Connections:     t.conns.Load(),
		Handshakes:      t.handshakes.Load(),
		IdentityRefused: t.identityRefused.Load(),
		Failures:        make(map[string]int64, len(TLSReasons)),
	}
	for i, r := range TLSReasons {
		st.Failures[r] = t.failures[i].Load()
	}
	return st
}
