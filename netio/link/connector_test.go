package link_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/proxytest"
	"github.com/fleetrelay/fleetrelay/netio/link"
)

// noLeaks fails t if a goroutine started during t outlives it. It is registered first, so
// that it runs after every other cleanup (the connector's Stop, the servers' Close). Idle
// workers of gnet's process-wide pool (which runs gnet's Enroll) are not the test's.
func noLeaks(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1")}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

func startConnector(t testing.TB, cfg link.ConnectorConfig) *link.Connector {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	c, err := link.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

// server is an upstream stand-in: a loopback listener whose connections are each served by
// handle on a goroutine of its own; Close ends them all and waits.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startServer(t testing.TB, network, addr string, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *server) Addr() string { return s.ln.Addr().String() }

func (s *server) Close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// echo sends back what it reads until EOF, then closes (startServer's handler closes).
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

func dial(t testing.TB, addr net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// fdList lists the descriptors openFDs counts, for a failure's message.
func fdList() string {
	var b strings.Builder
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); countedFD(l) {
			fmt.Fprintf(&b, "%s:%s ", e.Name(), l)
		}
	}
	return b.String()
}

func countedFD(link string) bool {
	return strings.HasPrefix(link, "socket:") || strings.HasPrefix(link, "anon_inode:[event")
}

// openFDs counts the process's open sockets, epoll instances and eventfds (what a pair or an
// event loop holds) in /proc/self/fd. Other descriptors are left out: the runtime opens and
// closes its cgroup files on its own.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); countedFD(l) {
			n++
		}
	}
	return n
}

func waitStats(t *testing.T, c *link.Connector, what string, ok func(link.ConnectorStats) bool) link.ConnectorStats {
	t.Helper()
	var st link.ConnectorStats
	checkfor.Check(t, 30*time.Second, 5*time.Millisecond, func() error {
		if st = c.Stats(); !ok(st) {
			return fmt.Errorf("%s: stats %+v", what, st)
		}
		return nil
	})
	return st
}

// A device talks to an echo server through the connector: 4 MiB each way, byte-exact, while
// both directions flow at once.
func TestConnectorEchoBothWays(t *testing.T) {
	noLeaks(t)
	up := startServer(t, "tcp", "127.0.0.1:0", echo)
	c := startConnector(t, link.ConnectorConfig{Name: "echo", Upstream: up.Addr()})
	dev := dial(t, c.Addr())

	const size = 4 << 20
	sent := randomBytes(size, 1)
	werr := make(chan error, 1)
	go func() {
		// Uneven writes, so the relay sees the stream cut anywhere.
		var err error
		for b, i := sent, 1; len(b) > 0 && err == nil; i++ {
			n := min(len(b), 1+(i*7919)%100000)
			_, err = dev.Write(b[:n])
			b = b[n:]
		}
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(dev, got); err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("echo differs from what was sent (first difference at %d)", firstDiff(got, sent))
	}
	_ = dev.Close()
	st := waitStats(t, c, "pair closed", func(s link.ConnectorStats) bool {
		return s.Open == 0 && s.UpstreamOpen == 0 && s.Buffered == 0
	})
	if st.Accepted != 1 || st.ToUpstream != size || st.ToDevice != size {
		t.Errorf("stats %+v, want 1 accepted and %d bytes each way", st, size)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The upstream sends a large answer and closes at once: the device gets every byte, then EOF.
func TestConnectorUpstreamClosesAfterSending(t *testing.T) {
	noLeaks(t)
	const size = 8 << 20
	answer := randomBytes(size, 2)
	up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil {
			return
		}
		_, _ = c.Write(answer)
	})
	c := startConnector(t, link.ConnectorConfig{Name: "answer", Upstream: up.Addr(), Buffer: 64 << 10})
	dev := dial(t, c.Addr())
	if _, err := dev.Write([]byte{'?'}); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(dev) // ends at the FIN the relay passes on
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, answer) {
		t.Fatalf("got %d bytes, want %d byte-exact (first difference at %d)", len(got), size, firstDiff(got, answer))
	}
	_ = dev.Close()
	waitStats(t, c, "pair closed", func(s link.ConnectorStats) bool { return s.Open == 0 })
}

// The device half-closes after sending: the upstream reads everything, then EOF (the FIN is
// passed on after the bytes before it).
func TestConnectorDeviceHalfClose(t *testing.T) {
	noLeaks(t)
	const size = 2 << 20
	sent := randomBytes(size, 3)
	got := make(chan []byte, 1)
	up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
	})
	c := startConnector(t, link.ConnectorConfig{Name: "halfclose", Upstream: up.Addr()})
	dev := dial(t, c.Addr())
	if _, err := dev.Write(sent); err != nil {
		t.Fatal(err)
	}
	if err := dev.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, sent) {
		t.Fatalf("upstream read %d bytes, want %d byte-exact", len(b), size)
	}
	// The upstream closed after EOF; the device sees its side end too.
	if _, err := io.ReadAll(dev); err != nil && !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("device read after the upstream closed: %v", err)
	}
	waitStats(t, c, "pair closed", func(s link.ConnectorStats) bool { return s.Open == 0 })
}

// Half-close both ways: a device sends its request and shuts its write side, the upstream
// answers only after it read that FIN, and the device gets the whole answer (4 MiB, more than
// the relay holds, so the answer flows under backpressure into the half-closed device's
// socket); then the other way round, an upstream that speaks first and shuts its side still
// reads what the device sends after that FIN.
func TestConnectorHalfCloseBothWays(t *testing.T) {
	t.Run("device first", func(t *testing.T) {
		noLeaks(t)
		const size = 4 << 20
		request, answer := randomBytes(64<<10, 8), randomBytes(size, 9)
		got := make(chan []byte, 1)
		up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			b, _ := io.ReadAll(c) // up to the device's FIN, passed on
			got <- b
			_, _ = c.Write(answer)
		})
		c := startConnector(t, link.ConnectorConfig{Name: "halfdev", Upstream: up.Addr(), Buffer: 64 << 10})
		dev := dial(t, c.Addr())
		if _, err := dev.Write(request); err != nil {
			t.Fatal(err)
		}
		if err := dev.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = dev.SetReadDeadline(time.Now().Add(time.Minute)) // against a hang, not a speed check
		b, err := io.ReadAll(dev)
		if err != nil {
			t.Fatalf("device read after its FIN: %v (%d bytes)", err, len(b))
		}
		if !bytes.Equal(b, answer) {
			t.Fatalf("device got %d bytes after its FIN, want the %d-byte answer byte-exact (first difference at %d)", len(b), size, firstDiff(b, answer))
		}
		if r := <-got; !bytes.Equal(r, request) {
			t.Fatalf("upstream read %d bytes before the FIN, want the %d-byte request", len(r), len(request))
		}
		st := waitStats(t, c, "pair ended", func(s link.ConnectorStats) bool {
			return s.Open == 0 && s.UpstreamOpen == 0 && s.Buffered == 0
		})
		if st.ToUpstream != int64(len(request)) || st.ToDevice != size {
			t.Errorf("stats %+v, want %d bytes to the upstream and %d to the device", st, len(request), size)
		}
	})
	t.Run("upstream first", func(t *testing.T) {
		noLeaks(t)
		const size = 4 << 20
		greeting, report := randomBytes(1<<10, 10), randomBytes(size, 11)
		got := make(chan []byte, 1)
		up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			if _, err := c.Write(greeting); err != nil {
				return
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				return
			}
			b, _ := io.ReadAll(c)
			got <- b
		})
		c := startConnector(t, link.ConnectorConfig{Name: "halfup", Upstream: up.Addr(), Buffer: 64 << 10})
		dev := dial(t, c.Addr())
		_ = dev.SetReadDeadline(time.Now().Add(time.Minute))
		g, err := io.ReadAll(dev) // the greeting, then the upstream's FIN
		if err != nil || !bytes.Equal(g, greeting) {
			t.Fatalf("device read %d bytes, %v; want the greeting, then EOF", len(g), err)
		}
		if _, err := dev.Write(report); err != nil {
			t.Fatalf("device write after the upstream's FIN: %v", err)
		}
		if err := dev.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if r := <-got; !bytes.Equal(r, report) {
			t.Fatalf("upstream read %d bytes after its FIN, want the %d-byte report byte-exact (first difference at %d)", len(r), size, firstDiff(r, report))
		}
		waitStats(t, c, "pair ended", func(s link.ConnectorStats) bool {
			return s.Open == 0 && s.UpstreamOpen == 0 && s.Buffered == 0
		})
	})
}

// 10,000 device connections, in batches of 1,000 at once, each paired with an upstream
// connection, echoing, closed by the device: afterwards no descriptor and no goroutine is left.
func TestConnectorManyConnectionsNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	noLeaks(t)
	up := startServer(t, "tcp", "127.0.0.1:0", echo)
	// Batches of 1,000 at once: pairs of the batch before may still be ending when the next
	// starts, so the default max_connections (1,000) could refuse some.
	c := startConnector(t, link.ConnectorConfig{Name: "many", Upstream: up.Addr(), MaxConnections: 10000})
	before, beforeList := openFDs(t), fdList() // the runtime's poller is open already: the servers listen

	const total, batch = 10000, 1000
	var failed atomic.Int64
	var firstErr atomic.Value
	for start := 0; start < total; start += batch {
		var wg sync.WaitGroup
		for i := start; i < start+batch; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := echoOnce(c.Addr(), i); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of the connections up to %d failed, first: %v", n, start+batch, firstErr.Load())
		}
	}
	st := waitStats(t, c, "all pairs closed", func(s link.ConnectorStats) bool {
		return s.Open == 0 && s.UpstreamOpen == 0 && s.Buffered == 0
	})
	if st.Accepted != total || st.ToUpstream != total*16 || st.ToDevice != total*16 {
		t.Errorf("stats %+v, want %d accepted and %d bytes each way", st, total, total*16)
	}
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := openFDs(t); n != before {
			return fmt.Errorf("%d descriptors open, %d before the connections (%s; before: %s)", n, before, fdList(), beforeList)
		}
		return nil
	})
}

// echoOnce sends 16 bytes naming i through the connector and checks they come back.
func echoOnce(addr net.Addr, i int) error {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute)) // against a hang, not a speed check
	msg := fmt.Appendf(nil, "conn %010d\n", i)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("conn %d: %w", i, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("conn %d: echo %q, want %q", i, got, msg)
	}
	return nil
}

// freePort returns a loopback address where nothing listens.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Nothing listens upstream: the device is closed and the refusal counted.
func TestConnectorUpstreamRefused(t *testing.T) {
	noLeaks(t)
	c := startConnector(t, link.ConnectorConfig{Name: "down", Upstream: freePort(t)})
	dev := dial(t, c.Addr())
	_, _ = dev.Write([]byte("data before the upstream is known to be down"))
	waitStats(t, c, "device closed", func(s link.ConnectorStats) bool { return s.UpstreamRefused == 1 && s.Open == 0 })
	expectClosed(t, dev)
}

func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute)) // the relay closed it already
	n, err := c.Read(make([]byte, 1))
	if err == nil || (!errors.Is(err, io.EOF) && !errors.Is(err, unix.ECONNRESET)) {
		t.Fatalf("device read %d bytes, %v; want EOF or reset", n, err)
	}
}

// blackhole listens on loopback with a full accept queue, so that the SYN of a further
// connection is dropped and its dial times out.
func blackhole(t *testing.T) string {
	t.Helper()
	addr, _, _ := blackholeListener(t)
	return addr
}

// blackholeListener is blackhole's, with the listener (whose first connection is the filler)
// and the filler's address, to let connections in later.
func blackholeListener(t *testing.T) (addr string, ln net.Listener, filler net.Addr) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "blackhole") // owns fd from here on
	t.Cleanup(func() { _ = f.Close() })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one connection in the accept queue
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port)).String()
	fc, err := net.Dial("tcp", addr) // not accepted: it fills the queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fc.Close() })
	probe, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		_ = probe.Close()
		t.Skip("this kernel accepted a connection beyond the listen backlog: no blackhole")
	}
	ln, err = net.FileListener(f) // on a duplicate of fd
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return addr, ln, fc.LocalAddr()
}

// A device sends and closes while its upstream is still being dialled: once the upstream
// connects (its SYN is answered on a retry), it gets those bytes, then EOF.
func TestConnectorDeviceLeavesBeforeUpstream(t *testing.T) {
	noLeaks(t)
	addr, ln, filler := blackholeListener(t)
	c := startConnector(t, link.ConnectorConfig{Name: "early", Upstream: addr, ConnectTimeout: time.Minute})
	dev := dial(t, c.Addr())
	msg := []byte("a report, and the device hangs up")
	if _, err := dev.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = dev.Close()
	waitStats(t, c, "device closed", func(s link.ConnectorStats) bool { return s.Accepted == 1 && s.Open == 0 })
	// Make room in the accept queue: the connector's SYN goes through on its next retry.
	for {
		uc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if uc.RemoteAddr().String() == filler.String() {
			_ = uc.Close()
			continue
		}
		defer uc.Close()
		got, err := io.ReadAll(uc)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("upstream read %q, %v; want %q then EOF", got, err, msg)
		}
		break
	}
	st := waitStats(t, c, "bytes counted", func(s link.ConnectorStats) bool { return s.ToUpstream == int64(len(msg)) })
	if st.UpstreamTimeout+st.UpstreamRefused+st.UpstreamOther != 0 {
		t.Errorf("stats %+v: no upstream failure expected", st)
	}
}

// The upstream does not answer the SYN: the device is closed after ConnectTimeout and the
// timeout counted.
func TestConnectorUpstreamTimeout(t *testing.T) {
	noLeaks(t)
	addr := blackhole(t)
	c := startConnector(t, link.ConnectorConfig{Name: "blackhole", Upstream: addr, ConnectTimeout: 300 * time.Millisecond})
	dev := dial(t, c.Addr())
	waitStats(t, c, "device closed", func(s link.ConnectorStats) bool { return s.UpstreamTimeout == 1 && s.Open == 0 })
	expectClosed(t, dev)
}

// The upstream sees a PROXY v2 header carrying the device's address and the connector's
// listen address, then the device's bytes; its answer reaches the device without a header.
func TestConnectorProxyProtocolV2(t *testing.T) {
	f := func(t *testing.T, network, listen string, family byte) {
		t.Helper()
		headers := make(chan proxytest.Header, 1)
		up := startServer(t, network, listen, func(c net.Conn) {
			h, err := proxytest.ReadV2(c)
			if err != nil {
				t.Errorf("PROXY header: %v", err)
				return
			}
			headers <- h
			echo(c)
		})
		c := startConnector(t, link.ConnectorConfig{Name: "proxy", Listen: listen, Upstream: up.Addr(), ProxyProtocol: true})
		dev := dial(t, c.Addr())
		msg := []byte("device bytes after the header")
		if _, err := dev.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(dev, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo %q, %v; want %q", got, err, msg)
		}
		h := <-headers
		want := proxytest.Header{Version: 2, Command: 1, Family: family, Proto: 1,
			Src: dev.LocalAddr().(*net.TCPAddr).AddrPort(), Dst: c.Addr().(*net.TCPAddr).AddrPort()}
		if h != want {
			t.Errorf("%s: PROXY header %+v, want %+v", listen, h, want)
		}
	}
	t.Run("ipv4", func(t *testing.T) {
		noLeaks(t)
		f(t, "tcp4", "127.0.0.1:0", 1)
	})
	t.Run("ipv6", func(t *testing.T) {
		noLeaks(t)
		if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		} else {
			_ = ln.Close()
		}
		f(t, "tcp6", "[::1]:0", 2)
	})
}

// An upstream that does not read: the device fills its buffer, the relay stops reading it,
// and holds no more than Buffer and one read for the pair; once the upstream reads, every
// byte arrives in order.
func TestConnectorSlowUpstreamBounded(t *testing.T) {
	noLeaks(t)
	const buffer, chunk, size = 64 << 10, 64 << 10, 64 << 20
	release := make(chan struct{})
	var releaseOnce sync.Once
	letRead := func() { releaseOnce.Do(func() { close(release) }) }
	sums := make(chan [32]byte, 1)
	up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		<-release
		h := sha256.New()
		n, _ := io.Copy(h, c)
		if n != size {
			t.Errorf("upstream read %d bytes, want %d", n, size)
		}
		sums <- [32]byte(h.Sum(nil))
	})
	c := startConnector(t, link.ConnectorConfig{Name: "slow", Upstream: up.Addr(), Buffer: buffer})
	dev := dial(t, c.Addr())
	t.Cleanup(letRead) // a failure must not leave the upstream waiting
	_ = dev.SetWriteBuffer(64 << 10)
	sent := randomBytes(size, 4)
	werr := make(chan error, 1)
	go func() {
		_, err := dev.Write(sent)
		if err == nil {
			err = dev.CloseWrite()
		}
		werr <- err
	}()
	// The relay stops reading the device once the upstream's socket and gnet's buffer are full.
	waitStats(t, c, "device paused", func(s link.ConnectorStats) bool { return s.Paused >= 1 && s.Buffered >= buffer })
	const bound = buffer + 2*chunk
	if st := c.Stats(); st.PeakBuffered > bound {
		t.Fatalf("relay held %d bytes for one pair while the upstream did not read, bound %d", st.PeakBuffered, bound)
	}
	letRead()
	if err := <-werr; err != nil {
		t.Fatalf("device write: %v", err)
	}
	if got := <-sums; got != sha256.Sum256(sent) {
		t.Fatal("upstream received different bytes than the device sent")
	}
	if st := c.Stats(); st.PeakBuffered > bound || st.ToUpstream != size {
		t.Fatalf("stats %+v: want peak ≤ %d and %d bytes upstream", st, bound, size)
	}
}

// A device that does not read while the upstream sends: the relay stops reading the upstream,
// and holds no more than Buffer and one read; once the device reads, every byte arrives.
func TestConnectorSlowDeviceBounded(t *testing.T) {
	noLeaks(t)
	const buffer, chunk, size = 64 << 10, 64 << 10, 64 << 20
	sent := randomBytes(size, 6)
	werr := make(chan error, 1)
	up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
		_, err := c.Write(sent)
		werr <- err
	})
	c := startConnector(t, link.ConnectorConfig{Name: "slowdev", Upstream: up.Addr(), Buffer: buffer})
	dev := dial(t, c.Addr())
	_ = dev.SetReadBuffer(64 << 10)
	waitStats(t, c, "upstream paused", func(s link.ConnectorStats) bool { return s.Paused >= 1 && s.Buffered >= buffer })
	const bound = buffer + 2*chunk
	if st := c.Stats(); st.PeakBuffered > bound {
		t.Fatalf("relay held %d bytes for one pair while the device did not read, bound %d", st.PeakBuffered, bound)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, dev, size); err != nil {
		t.Fatalf("device read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("upstream write: %v", err)
	}
	if [32]byte(h.Sum(nil)) != sha256.Sum256(sent) {
		t.Fatal("device received different bytes than the upstream sent")
	}
	if st := c.Stats(); st.PeakBuffered > bound || st.ToDevice != size {
		t.Fatalf("stats %+v: want peak ≤ %d and %d bytes to the device", st, bound, size)
	}
}

// A pair silent for IdleTimeout is closed.
func TestConnectorIdleTimeout(t *testing.T) {
	noLeaks(t)
	up := startServer(t, "tcp", "127.0.0.1:0", echo)
	c := startConnector(t, link.ConnectorConfig{Name: "idle", Upstream: up.Addr(), IdleTimeout: 200 * time.Millisecond})
	dev := dial(t, c.Addr())
	if _, err := dev.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(dev, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	waitStats(t, c, "idle pair closed", func(s link.ConnectorStats) bool { return s.IdleClosed == 1 && s.Open == 0 })
	expectClosed(t, dev)
}

// The collectors read the connector's counters, labelled with its name; two connectors'
// collectors share a registry.
func TestConnectorCollectors(t *testing.T) {
	noLeaks(t)
	up := startServer(t, "tcp", "127.0.0.1:0", echo)
	a := startConnector(t, link.ConnectorConfig{Name: "a", Upstream: up.Addr()})
	b := startConnector(t, link.ConnectorConfig{Name: "b", Upstream: freePort(t)})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collectors()...)
	reg.MustRegister(b.Collectors()...)
	if err := echoOnce(a.Addr(), 7); err != nil {
		t.Fatal(err)
	}
	bdev := dial(t, b.Addr())
	waitStats(t, b, "refused", func(s link.ConnectorStats) bool { return s.UpstreamRefused == 1 && s.Open == 0 })
	expectClosed(t, bdev)
	waitStats(t, a, "bytes", func(s link.ConnectorStats) bool { return s.ToDevice == 16 })
	f := func(name string, labels map[string]string, want float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metric:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue metric
					}
				}
				got := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				if got != want {
					t.Errorf("%s%v = %v, want %v", name, labels, got, want)
				}
				return
			}
		}
		t.Errorf("%s%v not gathered", name, labels)
	}
	f("fleetrelay_connector_accepted_total", map[string]string{"connector": "a"}, 1)
	f("fleetrelay_connector_bytes_total", map[string]string{"connector": "a", "direction": "to_upstream"}, 16)
	f("fleetrelay_connector_bytes_total", map[string]string{"connector": "a", "direction": "to_device"}, 16)
	f("fleetrelay_connector_upstream_failures_total", map[string]string{"connector": "b", "reason": "refused"}, 1)
	f("fleetrelay_connector_upstream_failures_total", map[string]string{"connector": "a", "reason": "refused"}, 0)
	f("fleetrelay_connector_connections", map[string]string{"connector": "b"}, 0)
}

func TestNewConnectorChecksConfig(t *testing.T) {
	for _, cfg := range []link.ConnectorConfig{
		{Upstream: "127.0.0.1:1"},
		{Listen: "127.0.0.1:0"},
		{Listen: "127.0.0.1:0", Upstream: "no port"},
	} {
		if _, err := link.NewConnector(cfg); err == nil {
			t.Errorf("NewConnector(%+v) = nil error, want one", cfg)
		}
	}
}

// BenchmarkConnectorThroughput sends 64 KiB writes one way to a sink: directly over loopback
// and through a minimal io.Copy proxy (the floors of the same run), and through the connector.
func BenchmarkConnectorThroughput(b *testing.B) {
	var got atomic.Int64
	sink := startServer(b, "tcp", "127.0.0.1:0", func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		got.Add(n)
	})
	c := startConnector(b, link.ConnectorConfig{Name: "bench", Upstream: sink.Addr()})
	chunk := randomBytes(64<<10, 5)
	run := func(b *testing.B, addr string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		start := got.Load()
		b.SetBytes(int64(len(chunk)))
		b.ResetTimer()
		for range b.N {
			if _, err := conn.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		_ = conn.Close()
		want := start + int64(b.N)*int64(len(chunk))
		for got.Load() < want { // the sink counts once its connection ends
			time.Sleep(50 * time.Microsecond)
		}
		b.StopTimer()
	}
	proxy := startServer(b, "tcp", "127.0.0.1:0", func(dev net.Conn) {
		up, err := net.Dial("tcp", sink.Addr())
		if err != nil {
			return
		}
		defer up.Close()
		_, _ = io.Copy(up, dev)
	})
	b.Run("direct", func(b *testing.B) { run(b, sink.Addr()) })
	b.Run("io.Copy-proxy", func(b *testing.B) { run(b, proxy.Addr()) })
	b.Run("connector", func(b *testing.B) { run(b, c.Addr().String()) })
}

// BenchmarkConnectorRoundTrip times 64-byte request/response exchanges with an echo server,
// directly over loopback (the floor of the same run) and through the connector; it reports the
// median and the 99th percentile of one exchange.
func BenchmarkConnectorRoundTrip(b *testing.B) {
	up := startServer(b, "tcp", "127.0.0.1:0", echo)
	c := startConnector(b, link.ConnectorConfig{Name: "rtt", Upstream: up.Addr()})
	run := func(b *testing.B, addr string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		req, resp := randomBytes(64, 7), make([]byte, 64)
		took := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := conn.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(conn, resp); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2])/1e3, "p50-µs")
		b.ReportMetric(float64(took[len(took)*99/100])/1e3, "p99-µs")
	}
	b.Run("direct", func(b *testing.B) { run(b, up.Addr()) })
	b.Run("connector", func(b *testing.B) { run(b, c.Addr().String()) })
}

// MaxConnections: a device connection beyond it is closed at accept, before any dial, and
// counted, while the ones held keep working; once one of them leaves, a new one is admitted.
func TestConnectorMaxConnections(t *testing.T) {
	noLeaks(t)
	var upstreams atomic.Int64
	up := startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { upstreams.Add(1); echo(c) })
	c := startConnector(t, link.ConnectorConfig{Name: "capped", Upstream: up.Addr(), MaxConnections: 5})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c.Collectors()...)
	roundTrip := func(dev net.Conn, i int) {
		t.Helper()
		_ = dev.SetDeadline(time.Now().Add(time.Minute)) // against a hang, not a speed check
		msg := fmt.Appendf(nil, "device %d\n", i)
		if _, err := dev.Write(msg); err != nil {
			t.Fatalf("device %d write: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(dev, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("device %d echo %q, %v; want %q", i, got, err, msg)
		}
	}
	devs := make([]net.Conn, 5)
	for i := range devs {
		devs[i] = dial(t, c.Addr())
		roundTrip(devs[i], i)
	}
	sixth := dial(t, c.Addr())
	_, _ = sixth.Write([]byte("one too many"))
	expectClosed(t, sixth)
	st := waitStats(t, c, "refusal counted", func(s link.ConnectorStats) bool { return s.RefusedMaxConnections == 1 })
	if st.Accepted != 5 || st.Pairs != 5 || st.UpstreamRefused+st.UpstreamTimeout+st.UpstreamOther != 0 {
		t.Fatalf("stats %+v, want 5 accepted and held, no upstream failure", st)
	}
	if n := upstreams.Load(); n != 5 {
		t.Fatalf("upstream got %d connections, want 5: the refused device must not be dialled for", n)
	}
	for i, dev := range devs { // the five held still work
		roundTrip(dev, 10+i)
	}
	var mf *dto.MetricFamily
	if mfs, err := reg.Gather(); err != nil {
		t.Fatal(err)
	} else {
		for _, m := range mfs {
			if m.GetName() == "fleetrelay_connector_refused_total" {
				mf = m
			}
		}
	}
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetCounter().GetValue() != 1 ||
		!slices.ContainsFunc(mf.GetMetric()[0].GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == "reason" && l.GetValue() == "max_connections"
		}) {
		t.Fatalf("fleetrelay_connector_refused_total = %v, want 1 with reason max_connections", mf)
	}

	// One leaves: once its pair ended, a new device is admitted and works.
	_ = devs[0].Close()
	waitStats(t, c, "a pair ended", func(s link.ConnectorStats) bool { return s.Pairs == 4 })
	again := dial(t, c.Addr())
	roundTrip(again, 20)
	st = c.Stats()
	if st.Accepted != 6 || st.Pairs != 5 || st.RefusedMaxConnections != 1 {
		t.Fatalf("stats %+v, want 6 accepted, 5 held, 1 refused", st)
	}
	for i, dev := range devs[1:] {
		roundTrip(dev, 30+i)
	}
}
