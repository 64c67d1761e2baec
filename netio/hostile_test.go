package netio_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/netio"
)

// dialFrom connects to addr from the loopback address src (any of 127.0.0.0/8 reaches a
// listener on 127.0.0.1).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// One source holding its MaxConnsPerSource connections with HELLO and nothing else: 2,100 more
// from it are refused at once with ERROR 503 and counted, while a device from another address
// connects; a connection the source closes frees a place for it.
func TestPerSourceLimit(t *testing.T) {
	const limit, extra = 20, 2100
	f := newFleet(t)
	srv := start(t, netio.Options{MaxConnsPerSource: limit}, f)
	addr := srv.TCPAddr().String()
	held := make([]net.Conn, limit)
	for i := range held {
		held[i] = dialFrom(t, "127.0.0.1", addr)
		hello(t, held[i], fmt.Sprintf("H%d", i))
	}
	for i := range extra {
		c := dialFrom(t, "127.0.0.1", addr)
		write(t, c, native.AppendHello(nil, &native.Hello{Serial: fmt.Sprintf("X%d", i)}))
		expectError(t, c, native.CodeUnavailable, "too many connections from this address")
		c.Close()
	}
	hello(t, dialFrom(t, "127.0.0.2", addr), "LEGIT")
	if st := srv.Stats(); st.SourceRefused != extra || st.Refused != extra || st.Connections != limit+1 {
		t.Errorf("stats %+v, want %d refused (all for their source), %d connections", st, extra, limit+1)
	}

	held[0].Close()
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := srv.Stats().Connections; n != limit {
			return fmt.Errorf("%d connections, want %d", n, limit)
		}
		return nil
	})
	hello(t, dialFrom(t, "127.0.0.1", addr), "AGAIN")
	if st := srv.Stats(); st.SourceRefused != extra {
		t.Errorf("%d refused for their source after a place was freed, want %d", st.SourceRefused, extra)
	}
}

// The per-source limit covers the NDJSON listener too (sharing the count with native TCP): a
// connection over it is closed unread.
func TestPerSourceLimitNDJSON(t *testing.T) {
	f := newFleet(t)
	srv := start(t, netio.Options{MaxConnsPerSource: 1, NDJSON: "127.0.0.1:0"}, f)
	hello(t, dialFrom(t, "127.0.0.1", srv.TCPAddr().String()), "N1")
	expectClosed(t, dialFrom(t, "127.0.0.1", srv.NDJSONAddr().String()))
	if st := srv.Stats(); st.SourceRefused != 1 {
		t.Errorf("%d refused for their source, want 1", st.SourceRefused)
	}
}

// authFleet is a fleet whose sessions for identities starting with "AUTH" are authenticated.
type authFleet struct{ *fleet }

type authSession struct{ netio.Session }

func (authSession) Authenticated() bool { return true }

func (f authFleet) Open(c netio.Conn, h *native.Hello) (netio.Session, error) {
	s, err := f.fleet.Open(c, h)
	if err == nil && strings.HasPrefix(h.Identity(), "AUTH") {
		s = authSession{s}
	}
	return s, err
}

// An unauthenticated connection that sends HELLO and then only PINGs is closed with ERROR 408
// at FirstDataTimeout; one that sent DATA, one that sent a RESULT and an authenticated one that
// sent nothing, all opened before it, stay.
func TestFirstDataTimeout(t *testing.T) {
	f := newFleet(t)
	srv := start(t, netio.Options{FirstDataTimeout: 300 * time.Millisecond}, authFleet{f})
	good, _ := device(t, srv, f, "GOOD", 0)
	write(t, good, native.AppendData(nil, 1, []byte(`{}`)))
	expectAcks(t, good, 1)
	authed, _ := device(t, srv, f, "AUTH1", 1)
	worker, ws := device(t, srv, f, "WORKER", 2) // answers a COMMAND: a RESULT, no DATA
	write(t, worker, native.AppendResult(nil, 7, 0, []byte(`{}`)))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if _, results, _ := ws.snapshot(); len(results) != 1 {
			return fmt.Errorf("%d results reached the session", len(results))
		}
		return nil
	})

	pinger, _ := device(t, srv, f, "PINGER", 3)
	for i := 0; ; i++ {
		write(t, pinger, native.AppendFrame(nil, native.TypePing, []byte{byte(i)}))
		typ, body := readFrame(t, pinger)
		if typ == native.TypeError {
			code, msg, err := native.ParseError(body)
			if err != nil || code != native.CodeHelloTimeout || msg != "no DATA in time" {
				t.Fatalf("ERROR %d %q (%v), want 408 no DATA in time", code, msg, err)
			}
			expectClosed(t, pinger)
			break
		}
		if typ != native.TypePong {
			t.Fatalf("frame %#x, want PONG", typ)
		}
		if i > 10000 {
			t.Fatal("PINGs held the connection open")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []net.Conn{good, authed, worker} {
		write(t, c, native.AppendFrame(nil, native.TypePing, []byte("still")))
		if typ, body := readFrame(t, c); typ != native.TypePong || string(body) != "still" {
			t.Fatalf("answer %#x %q, want PONG still: a device that sent DATA or is authenticated was closed", typ, body)
		}
	}
	if st := srv.Stats(); st.FirstDataLate != 1 {
		t.Errorf("%d first-DATA timeouts, want 1", st.FirstDataLate)
	}
}
