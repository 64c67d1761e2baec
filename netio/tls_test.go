package netio_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/testcert"
	"github.com/fleetrelay/fleetrelay/netio"
)

// These tests run the TLS listener on 127.0.0.1:0 with certificates of a CA made here, and talk
// to it with crypto/tls clients over real sockets, through the same fleet Dispatcher as the
// plain listener's tests.

// startTLS runs a server whose TLS listener has a certificate from ca and, with clientCAs, asks
// for device certificates.
func startTLS(t *testing.T, opts netio.Options, d netio.Dispatcher, ca *testcert.CA, clientCAs *x509.CertPool) *netio.Server {
	t.Helper()
	opts.TLS = netio.TLSOptions{Addr: "127.0.0.1:0", Certificates: []tls.Certificate{ca.Issue(t, true, "relay")}, ClientCAs: clientCAs}
	return start(t, opts, d)
}

// dialTLS connects to srv's TLS listener trusting ca, presenting cert when it has one, and
// completes the handshake (a TLS 1.3 client learns of a refused certificate only at its first
// read).
func dialTLS(t *testing.T, srv *netio.Server, ca *testcert.CA, cert *tls.Certificate, maxVersion uint16) *tls.Conn {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MaxVersion: maxVersion}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", srv.TLSAddr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A device with a certificate from the client CA is admitted under the identity its
// certificate names (its CN or a DNS SAN, in any case), over TLS 1.2 with AES-256-GCM and over
// TLS 1.3: DATA reaches the session split and coalesced and is acknowledged through the
// Acker, PING is answered, and it is authenticated (FirstDataTimeout spares it). Closing the
// socket closes the session once and uncounts the connection.
func TestTLSSession(t *testing.T) {
	ca := testcert.NewCA(t, "device CA")
	f := newFleet(t)
	srv := startTLS(t, netio.Options{FirstDataTimeout: 200 * time.Millisecond}, ackFleet{f}, ca, ca.Pool)
	cert := ca.Issue(t, false, "TLS1", "tls1-alias.example")

	c12 := dialTLS(t, srv, ca, &cert, tls.VersionTLS12)
	if cs := c12.ConnectionState(); cs.Version != tls.VersionTLS12 || cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
		t.Fatalf("TLS 1.2 connection: version %#x suite %s, want ECDHE-ECDSA AES-256-GCM", cs.Version, tls.CipherSuiteName(cs.CipherSuite))
	}
	hello(t, c12, "tls1") // the CN, another case
	s := f.session(t, 0)
	var burst []byte
	for seq := uint64(1); seq <= 20; seq++ {
		burst = append(burst, native.AppendData(nil, seq, []byte(fmt.Sprintf(`{"seq":%d}`, seq)))...)
	}
	for cut := 0; cut < len(burst); cut += 7 { // split everywhere, coalesced across frames
		write(t, c12, burst[cut:min(cut+7, len(burst))])
	}
	expectAcks(t, c12, 20)
	write(t, c12, native.AppendFrame(nil, native.TypePing, []byte("tls")))
	if typ, body := readFrame(t, c12); typ != native.TypePong || string(body) != "tls" {
		t.Fatalf("answer to PING %#x %q, want PONG", typ, body)
	}
	if data, _, _ := s.snapshot(); len(data) != 20 || data[19].seq != 20 || data[19].records[0] != `{"seq":20}` {
		t.Fatalf("session got %d frames (%+v), want 20 in order", len(data), data)
	}

	c13 := dialTLS(t, srv, ca, &cert, 0)
	if v := c13.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("version %#x, want TLS 1.3 by default", v)
	}
	hello(t, c13, "TLS1-ALIAS.EXAMPLE") // a DNS SAN
	// Authenticated by its certificate: silent past FirstDataTimeout, it stays.
	time.Sleep(400 * time.Millisecond)
	write(t, c13, native.AppendFrame(nil, native.TypePing, []byte("still")))
	if typ, body := readFrame(t, c13); typ != native.TypePong || string(body) != "still" {
		t.Fatalf("answer %#x %q, want PONG: a certificate-authenticated device was closed", typ, body)
	}

	st := srv.Stats()
	if st.TLS.Handshakes != 2 || st.TLS.Connections != 2 || st.Connections != 2 || st.FirstDataLate != 0 || st.Errors != 0 {
		t.Errorf("stats %+v, want 2 TLS handshakes and connections, no errors", st)
	}
	c12.Close()
	s.waitClosed(t)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := srv.Stats(); st.Connections != 1 || st.TLS.Connections != 1 {
			return fmt.Errorf("%d connections, %d TLS, want 1", st.Connections, st.TLS.Connections)
		}
		return nil
	})
}

// ackFleet acknowledges DATA through netio.WriteAck (the Acker of the connection), as the
// relay's actors do.
type ackFleet struct{ *fleet }

type ackSession struct {
	netio.Session
	f    *fleet
	conn netio.Conn
}

func (a ackSession) Data(seq uint64, records [][]byte, frame []byte) {
	h := a.Session.(*sessionHandler)
	h.s.mu.Lock()
	h.s.data = append(h.s.data, dataCall{seq: seq, records: strs(records)})
	h.s.mu.Unlock()
	a.f.later(func() { netio.WriteAck(a.conn, seq, false) })
}

func (f ackFleet) Open(c netio.Conn, h *native.Hello) (netio.Session, error) {
	s, err := f.fleet.Open(c, h)
	if err != nil {
		return nil, err
	}
	if _, ok := c.(netio.Acker); !ok {
		return nil, errors.New("the TLS connection is no Acker")
	}
	return ackSession{Session: s, f: f.fleet, conn: c}, nil
}

// Every refusal of the TLS listener, each counted by its reason: a device without a
// certificate when one is required (the handshake fails), one whose certificate another CA
// signed, one whose HELLO names another device than its certificate (ERROR 401), a plain
// client of the native protocol (told so in the clear, then closed), and a client that never
// finishes its handshake (closed at HelloTimeout). None reaches the Dispatcher.
func TestTLSRefusals(t *testing.T) {
	ca := testcert.NewCA(t, "device CA")
	f := newFleet(t)
	srv := startTLS(t, netio.Options{HelloTimeout: 500 * time.Millisecond}, f, ca, ca.Pool)

	// No certificate: TLS 1.3 lets the client finish first; its first read gets the alert.
	noCert := dialTLS(t, srv, ca, nil, 0)
	_ = noCert.SetReadDeadline(time.Now().Add(hang))
	if _, err := noCert.Read(make([]byte, 1)); err == nil || !isAlert(err) {
		t.Fatalf("read without a certificate: %v, want the server's alert", err)
	}
	// A certificate of another CA (sent although the server names its CA: Go's client would
	// send none): the TLS 1.2 handshake itself fails.
	other := testcert.NewCA(t, "other CA").Issue(t, false, "EVIL")
	if c, err := tls.Dial("tcp", srv.TLSAddr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1",
		MaxVersion: tls.VersionTLS12, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &other, nil
		}}); err == nil {
		c.Close()
		t.Fatal("a certificate of another CA was accepted")
	}
	// A certificate for A2, a HELLO as B2.
	cert := ca.Issue(t, false, "A2")
	impostor := dialTLS(t, srv, ca, &cert, 0)
	write(t, impostor, native.AppendHello(nil, &native.Hello{Serial: "B2"}))
	expectError(t, impostor, native.CodeUnauthorized, "another device than the certificate")
	// A plain client.
	plain := dial(t, "tcp", srv.TLSAddr().String())
	write(t, plain, native.AppendHello(nil, &native.Hello{Serial: "PLAIN"}))
	expectError(t, plain, native.CodeMalformed, "this port speaks TLS")
	// A client that says nothing.
	silent := dial(t, "tcp", srv.TLSAddr().String())
	expectClosed(t, silent)

	checkfor.Check(t, hang, time.Millisecond, func() error {
		st := srv.Stats()
		want := map[string]int64{netio.TLSNoClientCert: 1, netio.TLSBadClientCert: 1, netio.TLSNotTLS: 1, netio.TLSTimeout: 1}
		for _, r := range netio.TLSReasons {
			if st.TLS.Failures[r] != want[r] {
				return fmt.Errorf("handshake failures %v, want %v", st.TLS.Failures, want)
			}
		}
		if st.TLS.IdentityRefused != 1 || st.TLS.Handshakes != 1 || st.Connections != 0 {
			return fmt.Errorf("stats %+v, want 1 identity refused of 1 handshake, no connection left", st)
		}
		return nil
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sessions) != 0 {
		t.Errorf("%d sessions opened, want none", len(f.sessions))
	}
}

func isAlert(err error) bool {
	var a tls.AlertError
	return errors.As(err, &a) || (err != nil && !errors.Is(err, io.EOF))
}

// Without a client CA the listener asks for no certificate: any device is admitted by its
// HELLO alone, and is not authenticated (FirstDataTimeout applies).
func TestTLSWithoutClientCA(t *testing.T) {
	ca := testcert.NewCA(t, "relay CA")
	f := newFleet(t)
	srv := startTLS(t, netio.Options{FirstDataTimeout: 200 * time.Millisecond}, f, ca, nil)
	c := dialTLS(t, srv, ca, nil, 0)
	hello(t, c, "ANON")
	expectError(t, c, native.CodeHelloTimeout, "no DATA in time")
	if st := srv.Stats(); st.FirstDataLate != 1 {
		t.Errorf("%d first-DATA timeouts, want 1", st.FirstDataLate)
	}
}

// Conn.Fail and Close from another goroutine, max_connections shared with the plain listener,
// and no goroutine left behind after many connections, TLS ones and plain clients on the TLS
// port: each connection's goroutines end with it, with the server still running.
func TestTLSConnsAndGoroutines(t *testing.T) {
	ca := testcert.NewCA(t, "device CA")
	f := newFleet(t)
	srv := startTLS(t, netio.Options{MaxConns: 3}, f, ca, ca.Pool)
	cert := ca.Issue(t, false, "G")

	c := dialTLS(t, srv, ca, &cert, 0)
	hello(t, c, "G")
	if connGoroutines() == 0 { // the count below sees a live connection's reader
		t.Fatal("no goroutine of the open TLS connection found")
	}
	first := f.session(t, 0)
	f.later(func() {
		first.conn.Fail(native.CodeRateLimited, "slow down")
		first.conn.Write(native.AppendAck(nil, 1))
	})
	expectError(t, c, native.CodeRateLimited, "slow down")
	checkfor.Check(t, hang, time.Millisecond, func() error { // uncounted just after the socket closed
		if n := srv.Stats().Connections; n != 0 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})

	// Plain and TLS connections share MaxConns: two plain ones and a TLS one fill it, and the
	// next TLS connection is closed before its handshake.
	hello(t, dial(t, "tcp", srv.TCPAddr().String()), "P1")
	hello(t, dial(t, "tcp", srv.TCPAddr().String()), "P2")
	hello(t, dialTLS(t, srv, ca, &cert, 0), "G")
	if c, err := tls.Dial("tcp", srv.TLSAddr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{cert}}); err == nil {
		c.Close()
		t.Fatal("a TLS connection beyond MaxConns completed its handshake")
	}
	if st := srv.Stats(); st.Refused != 1 {
		t.Errorf("%d refused, want 1", st.Refused)
	}
	for i := 1; i <= 3; i++ {
		f.session(t, i).conn.Close()
	}
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := srv.Stats().Connections; n != 0 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
	// Many connections to a server without a cap: each one's goroutines (reader, writer) end
	// with it.
	srv = startTLS(t, netio.Options{}, f, ca, ca.Pool)

	const n = 300
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%3 == 0 { // a plain client on the TLS port: told so, closed
				c, err := net.Dial("tcp", srv.TLSAddr().String())
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				_, _ = c.Write(native.AppendHello(nil, &native.Hello{Serial: "G"}))
				_ = c.SetReadDeadline(time.Now().Add(hang))
				_, _ = io.ReadAll(c)
				return
			}
			cfg := &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}
			c, err := tls.Dial("tcp", srv.TLSAddr().String(), cfg)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_, _ = c.Write(native.AppendHello(nil, &native.Hello{Serial: "G"}))
			_, _ = c.Write(native.AppendData(nil, uint64(i+1), []byte(`{}`)))
			_ = c.SetReadDeadline(time.Now().Add(hang))
			_, _ = io.ReadFull(c, make([]byte, native.HeaderLen)) // WELCOME or ERROR 503 (cap)
		}()
	}
	wg.Wait()
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := srv.Stats(); st.Connections != 0 || st.TLS.Connections != 0 || st.TLS.Failures[netio.TLSNotTLS] != n/3 {
			return fmt.Errorf("%d connections, %d TLS, %d plain clients refused; want 0, 0, %d", st.Connections, st.TLS.Connections,
				st.TLS.Failures[netio.TLSNotTLS], n/3)
		}
		if n := connGoroutines(); n != 0 {
			return fmt.Errorf("%d goroutines of TLS connections left", n)
		}
		return nil
	})
}

// Stop writes what was queued for a TLS connection before closing it (the ACKs of what was
// stored before shutdown), closes its session, and leaves no goroutine behind (TestMain).
func TestTLSStopFlushes(t *testing.T) {
	ca := testcert.NewCA(t, "device CA")
	f := newFleet(t)
	srv := netio.New(netio.Options{EventLoops: 1, TLS: netio.TLSOptions{Addr: "127.0.0.1:0",
		Certificates: []tls.Certificate{ca.Issue(t, true, "relay")}}}, f)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialTLS(t, srv, ca, nil, 0)
	hello(t, c, "STOP1")
	s := f.session(t, 0)
	const acks = 2000
	for seq := uint64(1); seq <= acks; seq++ {
		netio.WriteAck(s.conn, seq, true) // again: each one written, none coalesced away
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	expectAcks(t, c, acks)
	expectClosed(t, c)
	if _, _, closed := s.snapshot(); closed != 1 {
		t.Errorf("session closed %d times after Stop, want 1", closed)
	}
}

// connGoroutines counts the goroutines of TLS connections: handshakes, readers and writers.
func connGoroutines() int {
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "netio.(*tlsServer).serve") || strings.Contains(g, "netio.(*tlsServer).read") ||
			strings.Contains(g, "netio.(*tlsConn).write") {
			n++
		}
	}
	return n
}
