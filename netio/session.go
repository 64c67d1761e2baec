package netio

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// The native protocol over a stream, whatever carries the stream: the plain TCP listener feeds
// it from gnet's OnTraffic (tcp.go), the TLS listener from the goroutine that reads the
// connection's decrypted stream (tls.go). Both get the same frame decoding, HELLO, limits,
// timeouts and ERROR answers; a transport only moves bytes (wire).

// wire is what a transport does for the protocol core of one connection.
type wire interface {
	// put writes frame from the goroutine feeding the core (OnTraffic; the TLS reader) before
	// that goroutine returns: written now, or copied into the transport's outbound buffer.
	put(frame []byte)
	// send queues frame for the connection from any goroutine without blocking; the caller
	// does not modify it afterwards.
	send(frame []byte)
	// sendAndClose queues frame and closes the connection once it is written (any goroutine).
	sendAndClose(frame []byte)
	// shut closes the connection now, writing nothing more (any goroutine).
	shut()
}

// streamCore is a protocol's side of one stream connection, which a transport feeds: the
// native protocol (streamConn) or Teltonika's (telStream, teltonika.go). The transport calls
// feed and ended from the one goroutine that reads the connection, check from any.
type streamCore interface {
	// feed handles the whole frames at the start of buf (only read during the call) and
	// returns the bytes consumed and whether the connection must close once what was put
	// is written.
	feed(buf []byte) (done int, closeNow bool)
	// check enforces the protocol's timeouts at now (unix nanos).
	check(now int64, d deadlines)
	// ended is called once when the connection is gone.
	ended()
	// base is what every core has.
	base() *streamBase
}

// streamBase is what every protocol core of a stream connection holds: its transport, its peer,
// when it opened and last sent a frame, whether it failed, and the identities a verified device
// certificate names.
type streamBase struct {
	w      wire
	self   Conn // the transport's Conn, handed to the dispatcher (it may implement Acker)
	srv    *Server
	remote netip.AddrPort
	opened int64 // unix nanos

	// certIDs are the identities a verified device certificate names (TLS with a client CA;
	// nil otherwise): the device's handshake must name one of them.
	certIDs []string

	last   atomic.Int64 // unix nanos of the last frame
	failed atomic.Bool  // nothing more is written
}

func (b *streamBase) init(w wire, self Conn, srv *Server, remote netip.AddrPort, now int64) {
	b.w, b.self, b.srv, b.remote, b.opened = w, self, srv, remote, now
	b.last.Store(now)
}

func (b *streamBase) base() *streamBase { return b }

// Remote implements Conn.
func (b *streamBase) Remote() netip.AddrPort { return b.remote }

// Datagram implements Conn.
func (b *streamBase) Datagram() bool { return false }

// streamConn is the native protocol of one stream connection (plain TCP or TLS). Fields without
// atomics are owned by the goroutine that feeds it (the connection's event loop, or its TLS
// reader); the Conn methods are safe from any goroutine. A HELLO on a connection with a device
// certificate must name one of certIDs, and the connection is authenticated.
type streamConn struct {
	streamBase

	session Session // feeder-owned
	helloed atomic.Bool
	// proven: the connection sent DATA, or its session is authenticated (a token, a device
	// certificate); until then FirstDataTimeout applies.
	proven atomic.Bool
}

var _ streamCore = (*streamConn)(nil)

// feed decodes the whole frames at the start of buf and handles them. It returns the bytes
// consumed and whether the connection must close (an ERROR was put already). buf is only read
// during the call.
func (sc *streamConn) feed(buf []byte) (done int, closeNow bool) {
	for !closeNow {
		typ, body, n, err := native.Next(buf[done:], sc.srv.opts.MaxFrame)
		if errors.Is(err, native.ErrShort) {
			break
		}
		if err != nil {
			code := native.CodeMalformed
			if errors.Is(err, native.ErrTooLarge) {
				code = native.CodeTooLarge
			}
			closeNow = sc.failHere(code, err.Error())
			break
		}
		done += n
		sc.srv.st.frames.Add(1)
		sc.srv.st.bytes.Add(int64(n))
		closeNow = sc.frame(typ, body)
	}
	if done > 0 {
		sc.last.Store(time.Now().UnixNano())
	}
	return done, closeNow
}

// frame handles one decoded frame; body aliases the caller's buffer. It returns whether the
// connection must close.
func (sc *streamConn) frame(typ byte, body []byte) bool {
	if sc.session == nil {
		if typ != native.TypeHello {
			return sc.failHere(native.CodeUnauthorized, "HELLO must be the first frame")
		}
		h, err := native.ParseHello(body)
		if err != nil {
			return sc.failHere(native.CodeMalformed, err.Error())
		}
		if sc.certIDs != nil && !certNames(sc.certIDs, h.Identity()) {
			sc.srv.st.tls.identityRefused.Add(1)
			return sc.failHere(native.CodeUnauthorized, "HELLO names another device than the certificate")
		}
		sess, err := sc.srv.d.Open(sc.self, &h)
		if errors.Is(err, ErrBusy) {
			return sc.failHere(native.CodeUnavailable, err.Error())
		}
		if err != nil {
			return sc.failHere(native.CodeUnauthorized, err.Error())
		}
		sc.session = sess
		if a, ok := sess.(Authenticated); (ok && a.Authenticated()) || sc.certIDs != nil {
			sc.proven.Store(true)
		}
		sc.helloed.Store(true)
		return false
	}
	switch typ {
	case native.TypeData:
		if sc.srv.draining.Load() {
			return sc.failHere(native.CodeUnavailable, "relay shutting down")
		}
		frame := append([]byte(nil), body...)
		seq, recs, err := native.ParseData(frame, make([][]byte, 0, countRecords(frame)))
		if err != nil {
			return sc.failHere(native.CodeMalformed, err.Error())
		}
		sc.proven.Store(true)
		sc.session.Data(seq, recs, frame)
	case native.TypePing:
		sc.w.put(native.AppendFrame(nil, native.TypePong, body))
	case native.TypePong:
	case native.TypeResult:
		frame := append([]byte(nil), body...)
		r, err := native.ParseResult(frame)
		if err != nil {
			return sc.failHere(native.CodeMalformed, err.Error())
		}
		sc.proven.Store(true) // the answer to a COMMAND the relay sent: a device at work
		sc.session.Result(&r, frame)
	case native.TypeHello:
		return sc.failHere(native.CodeMalformed, "second HELLO")
	default:
		return sc.failHere(native.CodeMalformed, "unexpected frame type")
	}
	return false
}

// certNames reports whether id is one of a certificate's identities, compared as the registry
// compares device identities (upper-cased).
func certNames(ids []string, id string) bool {
	up := strings.ToUpper(id)
	for _, c := range ids {
		if strings.ToUpper(c) == up {
			return true
		}
	}
	return false
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

// failHere puts ERROR from the feeding goroutine and says the connection must close (the
// transport writes the frame before closing).
func (sc *streamConn) failHere(code uint16, msg string) bool {
	if sc.failed.CompareAndSwap(false, true) {
		sc.srv.st.errors.Add(1)
		sc.w.put(native.AppendError(nil, code, msg))
	}
	return true
}

// ended is called once by the feeding goroutine when the connection is gone: the session is
// closed before the connection is uncounted, so whoever sees 0 connections sees them closed.
func (sc *streamConn) ended() {
	sc.failed.Store(true)
	if sc.session != nil {
		sc.session.Closed()
		sc.session = nil
	}
}

// deadlines are the timeouts a connection's timer checks, in nanoseconds (0: none).
type deadlines struct{ hello, first, idle int64 }

func (o Options) deadlines() deadlines {
	return deadlines{hello: o.HelloTimeout.Nanoseconds(), first: o.FirstDataTimeout.Nanoseconds(), idle: o.IdleTimeout.Nanoseconds()}
}

// check enforces the HELLO, first-DATA and idle timeouts at now; any goroutine.
func (sc *streamConn) check(now int64, d deadlines) {
	switch {
	case !sc.helloed.Load() && now-sc.opened > d.hello:
		sc.Fail(native.CodeHelloTimeout, "no HELLO in time")
	case d.first > 0 && !sc.proven.Load() && now-sc.opened > d.first:
		if !sc.failed.Load() {
			sc.srv.st.firstDataLate.Add(1)
		}
		sc.Fail(native.CodeHelloTimeout, "no DATA in time")
	case d.idle > 0 && now-sc.last.Load() > d.idle:
		sc.Close()
	}
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

// Write implements Conn.
func (sc *streamConn) Write(frame []byte) {
	if sc.failed.Load() {
		return
	}
	sc.w.send(frame)
}

// Fail implements Conn.
func (sc *streamConn) Fail(code uint16, msg string) {
	if !sc.failed.CompareAndSwap(false, true) {
		return
	}
	sc.srv.st.errors.Add(1)
	sc.w.sendAndClose(native.AppendError(nil, code, msg))
}

// Close implements Conn.
func (sc *streamConn) Close() {
	sc.failed.Store(true)
	sc.w.shut()
}
