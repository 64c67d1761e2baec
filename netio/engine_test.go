package netio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/netio"
)

// These tests run the real gnet engines on 127.0.0.1:0 and talk to them over real sockets; the
// Dispatcher is a small real one (fleet is below) that does what the relay's actors do at the
// protocol's edges — WELCOME on Open, an ACK for every DATA and UDATA, sent later from a goroutine
// of its own through Conn — and keeps what it was handed so the tests can compare.

const hang = 10 * time.Second // bound on every wait: a liveness guard, not a speed check

// fleet is a Dispatcher. Open refuses the serials in refuse; UData answers identities in fail
// with Conn.Fail. ACKs and Fails are sent by one goroutine of its own (as the actors send them
// after the store's commit), never from the event loop; Close waits for it.
type fleet struct {
	refuse map[string]string // serial → refusal text
	fail   map[string]bool   // UDATA identities answered with ERROR 503

	mu       sync.Mutex
	sessions []*session
	udata    []udataCall
	queue    []func() // replies waiting for the worker
	wake     chan struct{}
	done     chan struct{}
	stopped  chan struct{}
}

type udataCall struct {
	identity string
	seq      uint64
	records  []string
}

// session is one device connection as the fleet saw it.
type session struct {
	serial string
	conn   netio.Conn

	mu      sync.Mutex
	data    []dataCall
	results []native.Result
	closed  int
}

type dataCall struct {
	seq     uint64
	records []string
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{refuse: map[string]string{}, fail: map[string]bool{},
		wake: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go f.work()
	t.Cleanup(f.Close)
	return f
}

// work sends the queued replies until Close.
func (f *fleet) work() {
	defer close(f.stopped)
	for {
		select {
		case <-f.wake:
		case <-f.done:
			return
		}
		f.mu.Lock()
		q := f.queue
		f.queue = nil
		f.mu.Unlock()
		for _, reply := range q {
			reply()
		}
	}
}

// later queues a reply for the worker; it never blocks.
func (f *fleet) later(reply func()) {
	f.mu.Lock()
	f.queue = append(f.queue, reply)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Close stops the worker and waits for it.
func (f *fleet) Close() {
	select {
	case <-f.done:
	default:
		close(f.done)
	}
	<-f.stopped
}

func (f *fleet) Open(c netio.Conn, h *native.Hello) (netio.Session, error) {
	if msg, ok := f.refuse[h.Identity()]; ok {
		return nil, errors.New(msg)
	}
	s := &session{serial: h.Identity(), conn: c}
	f.mu.Lock()
	f.sessions = append(f.sessions, s)
	f.mu.Unlock()
	c.Write(native.AppendWelcome(nil, &native.Welcome{Ack: "persist", MaxFrame: native.DefaultMaxFrame}))
	return &sessionHandler{f: f, s: s}, nil
}

func (f *fleet) UData(c netio.Conn, u *native.UData, frame []byte) {
	call := udataCall{identity: string(u.Identity), seq: u.Seq, records: strs(u.Records)}
	f.mu.Lock()
	f.udata = append(f.udata, call)
	f.mu.Unlock()
	if f.fail[call.identity] {
		f.later(func() { c.Fail(native.CodeUnavailable, "relay cannot store data") })
		return
	}
	f.later(func() { c.Write(native.AppendAck(nil, call.seq)) })
}

func (f *fleet) Lines(string, bool, netip.AddrPort, [][]byte, func()) {}

// session returns the i-th session opened, waiting for it.
func (f *fleet) session(t *testing.T, i int) *session {
	t.Helper()
	var s *session
	checkfor.Check(t, hang, time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.sessions) <= i {
			return fmt.Errorf("%d sessions opened, want %d", len(f.sessions), i+1)
		}
		s = f.sessions[i]
		return nil
	})
	return s
}

func (f *fleet) udataCalls() []udataCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.udata)
}

// sessionHandler is the netio.Session of one connection.
type sessionHandler struct {
	f *fleet
	s *session
}

func (h *sessionHandler) Data(seq uint64, records [][]byte, frame []byte) {
	h.s.mu.Lock()
	h.s.data = append(h.s.data, dataCall{seq: seq, records: strs(records)})
	h.s.mu.Unlock()
	h.f.later(func() { h.s.conn.Write(native.AppendAck(nil, seq)) })
}

func (h *sessionHandler) Result(r *native.Result, frame []byte) {
	h.s.mu.Lock()
	h.s.results = append(h.s.results, native.Result{Task: r.Task, Code: r.Code, Data: slices.Clone(r.Data)})
	h.s.mu.Unlock()
}

func (h *sessionHandler) Closed() {
	h.s.mu.Lock()
	h.s.closed++
	h.s.mu.Unlock()
}

func (s *session) snapshot() (data []dataCall, results []native.Result, closed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.data), slices.Clone(s.results), s.closed
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, r := range b {
		out[i] = string(r)
	}
	return out
}

// start runs a server with opts (TCP and UDP on 127.0.0.1:0 unless set) for d, stopped when the
// test ends.
func start(t *testing.T, opts netio.Options, d netio.Dispatcher) *netio.Server {
	t.Helper()
	if opts.TCP == "" {
		opts.TCP = "127.0.0.1:0"
	}
	if opts.UDP == "" {
		opts.UDP = "127.0.0.1:0"
	}
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	srv := netio.New(opts, d)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return srv
}

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readFrame reads one frame from a TCP connection.
func readFrame(t *testing.T, c net.Conn) (byte, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(hang))
	var hdr [native.HeaderLen]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("read frame header: %v", err)
	}
	n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	body := make([]byte, n-1)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read frame body: %v", err)
	}
	return hdr[4], body
}

// expectError reads an ERROR frame with code, then the connection's end.
func expectError(t *testing.T, c net.Conn, code uint16, msgPart string) {
	t.Helper()
	typ, body := readFrame(t, c)
	if typ != native.TypeError {
		t.Fatalf("frame type %#x (% x), want ERROR %d", typ, body, code)
	}
	got, msg, err := native.ParseError(body)
	if err != nil || got != code || !strings.Contains(msg, msgPart) {
		t.Fatalf("ERROR %d %q (%v), want %d containing %q", got, msg, err, code, msgPart)
	}
	expectClosed(t, c)
}

// expectClosed reads until the server closes c; nothing more may arrive.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(hang))
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("read until close: %v", err)
	}
	if len(b) != 0 {
		t.Fatalf("% x after the end, want the connection closed", b)
	}
}

// hello says HELLO as serial and reads the fleet's WELCOME.
func hello(t *testing.T, c net.Conn, serial string) {
	t.Helper()
	write(t, c, native.AppendHello(nil, &native.Hello{Serial: serial}))
	typ, body := readFrame(t, c)
	if typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: type %#x (% x), want WELCOME", typ, body)
	}
	if w, err := native.ParseWelcome(body); err != nil || w.Ack != "persist" {
		t.Fatalf("WELCOME %+v, %v", w, err)
	}
}

// device connects to srv's TCP listener as serial and returns the connection and the i-th
// session the fleet opened (i counts the sessions of the test so far).
func device(t *testing.T, srv *netio.Server, f *fleet, serial string, i int) (net.Conn, *session) {
	t.Helper()
	c := dial(t, "tcp", srv.TCPAddr().String())
	hello(t, c, serial)
	return c, f.session(t, i)
}

// waitClosed waits until s was closed, and fails if it was closed more than once.
func (s *session) waitClosed(t *testing.T) {
	t.Helper()
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if _, _, closed := s.snapshot(); closed != 1 {
			return fmt.Errorf("session %s closed %d times, want once", s.serial, closed)
		}
		return nil
	})
}

// expectAcks reads ACK frames until seq last was acknowledged; ACKs arrive in order.
func expectAcks(t *testing.T, c net.Conn, last uint64) {
	t.Helper()
	var got uint64
	for got < last {
		typ, body := readFrame(t, c)
		if typ != native.TypeAck {
			t.Fatalf("frame type %#x (% x), want ACK", typ, body)
		}
		seq, err := native.ParseAck(body)
		if err != nil || seq <= got {
			t.Fatalf("ACK %d (%v) after %d", seq, err, got)
		}
		got = seq
	}
}

// A device session over a real engine: HELLO opens a session, every DATA frame reaches it with
// its records in order — frames coalesced in one write, and a frame split at every offset — and
// is acknowledged through Conn from another goroutine; PING is answered with PONG by netio
// itself, RESULT reaches the session, and closing the socket closes the session once.
func TestTCPSession(t *testing.T) {
	f := newFleet(t)
	srv := start(t, netio.Options{}, f)
	c, s := device(t, srv, f, "S1", 0)
	if s.serial != "S1" || s.conn.Datagram() || s.conn.Remote().Port() != uint16(c.LocalAddr().(*net.TCPAddr).Port) {
		t.Fatalf("session %q, datagram %v, remote %v; want S1 over TCP from %v", s.serial, s.conn.Datagram(), s.conn.Remote(), c.LocalAddr())
	}

	var want []dataCall
	// frame is DATA seq with n records, which the session must get.
	frame := func(seq uint64, n int) []byte {
		call := dataCall{seq: seq}
		var recs [][]byte
		for i := range n {
			r := fmt.Sprintf(`{"seq":%d,"i":%d}`, seq, i)
			recs = append(recs, []byte(r))
			call.records = append(call.records, r)
		}
		want = append(want, call)
		return native.AppendData(nil, seq, recs...)
	}
	// Ten frames of 1 to 4 records in one write.
	var burst []byte
	for seq := uint64(1); seq <= 10; seq++ {
		burst = append(burst, frame(seq, int(seq%4)+1)...)
	}
	write(t, c, burst)
	expectAcks(t, c, 10)
	// Frames split at every offset (in two writes): the engine holds a partial frame until it
	// is whole.
	seq := uint64(11)
	for cut := 1; ; cut++ {
		b := frame(seq, 2)
		if cut >= len(b) {
			want = want[:len(want)-1] // not sent
			break
		}
		write(t, c, b[:cut])
		write(t, c, b[cut:])
		expectAcks(t, c, seq)
		seq++
	}
	data, _, _ := s.snapshot()
	if len(data) != len(want) {
		t.Fatalf("session got %d frames, want %d", len(data), len(want))
	}
	for i := range want {
		if data[i].seq != want[i].seq || !slices.Equal(data[i].records, want[i].records) {
			t.Fatalf("frame %d = %+v, want %+v", i, data[i], want[i])
		}
	}

	write(t, c, native.AppendFrame(nil, native.TypePing, []byte("are you there")))
	if typ, body := readFrame(t, c); typ != native.TypePong || string(body) != "are you there" {
		t.Fatalf("answer to PING: %#x %q, want PONG with its bytes", typ, body)
	}
	write(t, c, native.AppendResult(nil, 42, 1, []byte(`{"ok":false}`)))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if _, results, _ := s.snapshot(); len(results) != 1 {
			return fmt.Errorf("%d results", len(results))
		}
		return nil
	})
	if _, results, _ := s.snapshot(); results[0].Task != 42 || results[0].Code != 1 || string(results[0].Data) != `{"ok":false}` {
		t.Errorf("result %+v, want task 42 code 1", results[0])
	}

	st := srv.Stats()
	frames := int64(1 + len(want) + 2) // HELLO, DATA, PING, RESULT
	if st.Connections != 1 || st.Accepted != 1 || st.Frames != frames || st.Errors != 0 {
		t.Errorf("stats %+v, want 1 connection, %d frames, no errors", st, frames)
	}
	c.Close()
	s.waitClosed(t)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := srv.Stats().Connections; n != 0 {
			return fmt.Errorf("%d connections open", n)
		}
		return nil
	})
}

// Every protocol violation over a real engine ends in ERROR with its code and the connection
// closed; a session that was opened is closed once, and nothing after the bad frame reaches it.
func TestTCPProtocolErrors(t *testing.T) {
	f := newFleet(t)
	f.refuse["NOPE"] = "unknown device NOPE"
	srv := start(t, netio.Options{MaxFrame: 1024}, f)
	addr := srv.TCPAddr().String()
	helloFrame := func(serial string) []byte { return native.AppendHello(nil, &native.Hello{Serial: serial}) }
	badRecords := native.AppendFrame(nil, native.TypeData, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, '{'})
	cases := []struct {
		name    string
		hello   string // serial to open a session with first ("" for none)
		send    []byte
		code    uint16
		msgPart string
	}{
		{"data before hello", "", native.AppendData(nil, 1, []byte(`{}`)), native.CodeUnauthorized, "HELLO must be the first frame"},
		{"malformed hello", "", native.AppendFrame(nil, native.TypeHello, []byte(`{"serial":`)), native.CodeMalformed, ""},
		{"refused device", "", helloFrame("NOPE"), native.CodeUnauthorized, "unknown device NOPE"},
		{"frame too large", "", []byte{0, 0, 0x10, 0, native.TypeData}, native.CodeTooLarge, ""},
		{"empty frame", "E1", []byte{0, 0, 0, 0}, native.CodeMalformed, ""},
		{"second hello", "E2", helloFrame("E2"), native.CodeMalformed, "second HELLO"},
		{"unknown type", "E3", native.AppendFrame(nil, 0x55, nil), native.CodeMalformed, "unexpected frame type"},
		{"truncated record", "E4", badRecords, native.CodeMalformed, ""},
		{"welcome from a device", "E5", native.AppendWelcome(nil, &native.Welcome{Ack: "persist"}), native.CodeMalformed, ""},
	}
	sessions := 0
	for i, tc := range cases {
		c := dial(t, "tcp", addr)
		if tc.hello != "" {
			hello(t, c, tc.hello)
			sessions++
		}
		// The bad frame, then a good one that must not be taken.
		write(t, c, append(slices.Clone(tc.send), native.AppendData(nil, 99, []byte(`{}`))...))
		expectError(t, c, tc.code, tc.msgPart)
		if tc.hello != "" {
			s := f.session(t, sessions-1)
			s.waitClosed(t)
			if data, _, _ := s.snapshot(); len(data) != 0 {
				t.Errorf("%s: session got %+v after a bad frame", tc.name, data)
			}
		}
		if n := srv.Stats().Errors; n != int64(i+1) {
			t.Errorf("%s: stats count %d errors, want %d", tc.name, n, i+1)
		}
	}
}

// A connection that says nothing within HelloTimeout gets ERROR 408; one that goes silent after
// HELLO for IdleTimeout is closed without an ERROR, and its session closed. (Two servers: the
// idle timeout applies before HELLO too, and a short HELLO timeout could catch the idle
// connection's HELLO on a loaded machine.)
func TestTCPTimeouts(t *testing.T) {
	f := newFleet(t)
	hellos := start(t, netio.Options{HelloTimeout: 100 * time.Millisecond}, f)
	silent := dial(t, "tcp", hellos.TCPAddr().String())
	expectError(t, silent, native.CodeHelloTimeout, "no HELLO in time")

	idles := start(t, netio.Options{IdleTimeout: 300 * time.Millisecond}, f)
	idle, s := device(t, idles, f, "I1", 0)
	expectClosed(t, idle)
	s.waitClosed(t)
}

// Connections beyond MaxConns get ERROR 503 at once, and a place freed is taken again. After
// Drain new connections are refused and DATA on an open one is answered with ERROR 503.
func TestTCPCapAndDrain(t *testing.T) {
	f := newFleet(t)
	srv := start(t, netio.Options{MaxConns: 2}, f)
	addr := srv.TCPAddr().String()
	a, b := dial(t, "tcp", addr), dial(t, "tcp", addr)
	hello(t, a, "C1")
	hello(t, b, "C2")
	expectError(t, dial(t, "tcp", addr), native.CodeUnavailable, "relay at capacity")
	b.Close()
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := srv.Stats().Connections; n != 1 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
	hello(t, dial(t, "tcp", addr), "C3")
	if st := srv.Stats(); st.Refused != 1 || st.Accepted != 3 {
		t.Errorf("stats %+v, want 3 accepted, 1 refused", st)
	}

	srv.Drain()
	if !srv.Draining() {
		t.Fatal("Draining() = false after Drain")
	}
	expectError(t, dial(t, "tcp", addr), native.CodeUnavailable, "relay at capacity")
	write(t, a, native.AppendData(nil, 1, []byte(`{}`)))
	expectError(t, a, native.CodeUnavailable, "relay shutting down")
	if data, _, _ := f.session(t, 0).snapshot(); len(data) != 0 {
		t.Errorf("a DATA frame after Drain reached the session: %+v", data)
	}
}

// Conn.Fail from outside the event loop sends ERROR and closes the connection; Write after that
// sends nothing.
func TestTCPFailFromAnotherGoroutine(t *testing.T) {
	f := newFleet(t)
	srv := start(t, netio.Options{}, f)
	c, s := device(t, srv, f, "F1", 0)
	f.later(func() {
		s.conn.Fail(native.CodeRateLimited, "slow down")
		s.conn.Write(native.AppendAck(nil, 1))
	})
	expectError(t, c, native.CodeRateLimited, "slow down")
}

// UDATA over a real UDP engine: each well-formed datagram reaches UData with its identity, seq
// and records and is acknowledged to its source from another goroutine; malformed ones are
// dropped without an answer and counted; a refused one is answered with an ERROR no longer than
// the datagram.
func TestUDP(t *testing.T) {
	f := newFleet(t)
	f.fail["FULL"] = true
	srv := start(t, netio.Options{}, f)
	c := dial(t, "udp", srv.UDPAddr().String())
	read := func() (byte, []byte) {
		t.Helper()
		buf := make([]byte, 2048)
		_ = c.SetReadDeadline(time.Now().Add(hang))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		typ, body, m, err := native.Next(buf[:n], 2048)
		if err != nil || m != n {
			t.Fatalf("answer % x is not one frame: %v", buf[:n], err)
		}
		return typ, body
	}

	good := native.AppendUData(nil, "U1", "tok", 7, []byte(`{"a":1}`), []byte(`{"b":2}`))
	bad := [][]byte{
		good[:len(good)-3],                           // truncated
		append(slices.Clone(good), good...),          // two frames in one datagram
		native.AppendData(nil, 1, []byte(`{"a":1}`)), // DATA is TCP's frame
		native.AppendHello(nil, &native.Hello{Serial: "U1"}),
		native.AppendUData(nil, "U1", "", 8, []byte(`[1]`)), // a record that is not an object
	}
	for _, b := range bad {
		write(t, c, b)
	}
	write(t, c, good)
	// The first answer is the good datagram's ACK: nothing answered the malformed ones before it.
	if typ, body := read(); typ != native.TypeAck {
		t.Fatalf("answer type %#x (% x), want ACK", typ, body)
	} else if seq, _ := native.ParseAck(body); seq != 7 {
		t.Fatalf("ACK %d, want 7", seq)
	}
	calls := f.udataCalls()
	if len(calls) != 1 || calls[0].identity != "U1" || calls[0].seq != 7 || !slices.Equal(calls[0].records, []string{`{"a":1}`, `{"b":2}`}) {
		t.Fatalf("UData calls %+v, want U1 seq 7 with its two records", calls)
	}
	// Each event loop reads datagrams of its own: the malformed ones may be counted after the ACK.
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := srv.Stats(); st.UDPDropped != int64(len(bad)) || st.Frames != 1 {
			return fmt.Errorf("stats %+v, want %d dropped, 1 frame", st, len(bad))
		}
		return nil
	})

	full := native.AppendUData(nil, "FULL", "", 1, []byte(`{}`))
	write(t, c, full)
	typ, body := read()
	if code, msg, _ := native.ParseError(body); typ != native.TypeError || code != native.CodeUnavailable ||
		native.HeaderLen+len(body) > len(full) || !strings.HasPrefix("relay cannot store data", msg) {
		t.Fatalf("answer %#x %d %q (%d bytes to a %d-byte datagram), want ERROR 503, cut to the datagram's length",
			typ, code, msg, native.HeaderLen+len(body), len(full))
	}
}

// Stop closes every connection and its session, and the engines' goroutines end (TestMain checks
// that no goroutine is left behind).
func TestStopClosesSessions(t *testing.T) {
	f := newFleet(t)
	srv := netio.New(netio.Options{TCP: "127.0.0.1:0", UDP: "127.0.0.1:0", EventLoops: 2}, f)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for i := range 5 {
		c, _ := device(t, srv, f, fmt.Sprintf("T%d", i), i)
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		expectClosed(t, c)
		if _, _, closed := f.session(t, i).snapshot(); closed != 1 { // by the time Stop returned
			t.Errorf("session %d closed %d times after Stop, want 1", i, closed)
		}
	}
}
