package loadgen_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/loadgen"
	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
	"go.uber.org/goleak"
)

func linkCipher(t *testing.T) *linkcrypt.Cipher {
	t.Helper()
	key, iv := make([]byte, 32), make([]byte, 16)
	_, _ = rand.Read(key)
	_, _ = rand.Read(iv)
	c, err := linkcrypt.New(key, iv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startEcho(t *testing.T, proto string, c *linkcrypt.Cipher) *loadgen.LinkEcho {
	t.Helper()
	e, err := loadgen.StartLinkEcho(loadgen.LinkEchoOptions{Protocol: proto, Addr: "127.0.0.1:0", Cipher: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func dialLink(t *testing.T, o loadgen.LinkOptions) *loadgen.LinkClient {
	t.Helper()
	c, err := loadgen.DialLink(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A link client measures a TCP link's throughput through a device that echoes, plain and
// encrypted (the echo then plays the relay's end with the same key), every byte checked.
func TestLinkThroughput(t *testing.T) {
	for _, enc := range []bool{false, true} {
		var c *linkcrypt.Cipher
		if enc {
			c = linkCipher(t)
		}
		e := startEcho(t, loadgen.LinkTCP, c)
		cl := dialLink(t, loadgen.LinkOptions{Addr: e.Addr(), Cipher: c})
		const size = 3<<20 + 12345
		got, err := cl.Throughput(context.Background(), size)
		if err != nil {
			t.Fatalf("encrypted %v: Throughput = %v", enc, err)
		}
		if got.Bytes != size || got.Sent <= 0 || got.Echoed < got.Sent || got.SentPerSec() <= 0 || got.EchoedPerSec() <= 0 {
			t.Errorf("encrypted %v: Throughput = %+v", enc, got)
		}
		// The end of the stream reaches the echo, and its end comes back.
		if err := cl.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if n, err := cl.Read(make([]byte, 10)); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("encrypted %v: Read after half-close = %d, %v; want EOF", enc, n, err)
		}
	}
}

// Throughput notices an echo that is not byte-exact: a device that changes one byte, and an
// encrypted client whose link does not decrypt (the echo sends its ciphertext back, which the
// client's other keystream turns into garbage: the two directions differ).
func TestLinkThroughputChecksBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		for off := 0; ; {
			n, err := c.Read(buf)
			if off <= 100_000 && 100_000 < off+n {
				buf[100_000-off] ^= 1
			}
			off += n
			if _, werr := c.Write(buf[:n]); err != nil || werr != nil {
				return
			}
		}
	})
	cl := dialLink(t, loadgen.LinkOptions{Addr: ln.Addr().String()})
	if _, err := cl.Throughput(context.Background(), 1<<20); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("Throughput through a device that flips a byte = %v, want the echo differs", err)
	}

	e := startEcho(t, loadgen.LinkTCP, nil)
	enc := dialLink(t, loadgen.LinkOptions{Addr: e.Addr(), Cipher: linkCipher(t)})
	if _, err := enc.Throughput(context.Background(), 1<<20); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("encrypted Throughput through a plain echo = %v, want the echo differs", err)
	}
}

// What an encrypted TCP client sends is the documented construction: the relay's end
// (linkcrypt's Streams, in a plain server here) decrypts it, and the client decrypts what that
// end encrypts.
func TestLinkClientTCPWire(t *testing.T) {
	c := linkCipher(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		b, _ := io.ReadAll(conn)
		in, out := c.Streams()
		in.XORKeyStream(b, b)
		got <- bytes.Clone(b)
		out.XORKeyStream(b, b)
		_, _ = conn.Write(b)
	})
	cl := dialLink(t, loadgen.LinkOptions{Addr: ln.Addr().String(), Cipher: c})
	msg := bytes.Repeat([]byte("over the link, "), 10_000)
	if _, err := cl.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = cl.CloseWrite()
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("the relay's end decrypted %.40q…, want %.40q…", b, msg)
	}
	back, err := io.ReadAll(cl)
	if err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("the client read back %.40q…, %v", back, err)
	}
}

// Round trips of 64-byte requests, both protocols, plain and encrypted: every request is
// answered on loopback, except what UDP loses (counted).
func TestLinkRoundTrips(t *testing.T) {
	for _, proto := range []string{loadgen.LinkTCP, loadgen.LinkUDP} {
		for _, enc := range []bool{false, true} {
			var c *linkcrypt.Cipher
			if enc {
				c = linkCipher(t)
			}
			e := startEcho(t, proto, c)
			cl := dialLink(t, loadgen.LinkOptions{Protocol: proto, Addr: e.Addr(), Cipher: c})
			r, err := cl.RoundTrips(context.Background(), 300, 64, 2*time.Second)
			if err != nil {
				t.Fatalf("%s encrypted %v: %v", proto, enc, err)
			}
			if len(r.Samples)+r.Lost != 300 || len(r.Samples) == 0 || (proto == loadgen.LinkTCP && r.Lost != 0) {
				t.Errorf("%s encrypted %v: %d samples, %d lost; want 300 in all", proto, enc, len(r.Samples), r.Lost)
			}
			if q := r.Quantile(0.99); q <= 0 || q < r.Quantile(0.5) {
				t.Errorf("%s encrypted %v: p99 %v, p50 %v", proto, enc, q, r.Quantile(0.5))
			}
		}
	}
}

// lossyEcho echoes UDP datagrams except every drop-th one, which it loses.
func lossyEcho(t *testing.T, drop int) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 65536)
		for i := 1; ; i++ {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if i%drop != 0 {
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}
	})
	return pc.LocalAddr().String()
}

// Over UDP a request whose echo never comes is counted lost and the next one goes on.
func TestLinkRoundTripsLoss(t *testing.T) {
	cl := dialLink(t, loadgen.LinkOptions{Protocol: loadgen.LinkUDP, Addr: lossyEcho(t, 5)})
	r, err := cl.RoundTrips(context.Background(), 50, 64, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost < 10 || len(r.Samples)+r.Lost != 50 {
		t.Errorf("%d samples, %d lost; want 50 in all, 10 or more lost", len(r.Samples), r.Lost)
	}
}

// A flood of datagrams through the echo, plain, encrypted and lossy: what comes back is
// checked and counted once.
func TestLinkFlood(t *testing.T) {
	c := linkCipher(t)
	for _, tc := range []struct {
		name   string
		addr   string
		cipher *linkcrypt.Cipher
		count  int
	}{
		{"plain", startEcho(t, loadgen.LinkUDP, nil).Addr(), nil, 2000},
		{"encrypted", startEcho(t, loadgen.LinkUDP, c).Addr(), c, 2000},
		{"lossy", lossyEcho(t, 4), nil, 200},
	} {
		cl := dialLink(t, loadgen.LinkOptions{Protocol: loadgen.LinkUDP, Addr: tc.addr, Cipher: tc.cipher})
		f, err := cl.Flood(context.Background(), tc.count, 512, 16, 100*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		lossy := tc.name == "lossy"
		if f.Sent != tc.count || f.Echoed == 0 || f.Echoed > f.Sent || (lossy && f.Echoed > 150) || f.EchoedBytesPerSec() <= 0 {
			t.Errorf("%s: Flood = %+v", tc.name, f)
		}
	}
}

// The client binds the address a link pins as its source.
func TestLinkClientLocal(t *testing.T) {
	e := startEcho(t, loadgen.LinkUDP, nil)
	cl := dialLink(t, loadgen.LinkOptions{Protocol: loadgen.LinkUDP, Addr: e.Addr(), Local: "127.0.0.2:0"})
	if a := cl.LocalAddr().Addr().String(); a != "127.0.0.2" {
		t.Errorf("LocalAddr = %v, want 127.0.0.2", cl.LocalAddr())
	}
	if _, err := loadgen.DialLink(context.Background(), loadgen.LinkOptions{Protocol: "sctp", Addr: e.Addr()}); err == nil {
		t.Error("DialLink(sctp) succeeded")
	}
}

// loadgen link, as a command: an encrypted echo (the relay's end) and a client through it.
func TestLinkCommand(t *testing.T) {
	key, iv := strings.Repeat("5a", 32), strings.Repeat("a5", 16)
	c, err := linkcrypt.NewHex(key, iv)
	if err != nil {
		t.Fatal(err)
	}
	e := startEcho(t, loadgen.LinkTCP, c)
	var out, errOut bytes.Buffer
	code := loadgen.Main(context.Background(), []string{"link", "-addr", e.Addr(), "-key", key, "-iv", iv,
		"-bytes", "1000000", "-roundtrips", "20"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "throughput: 1000000 bytes each way") || !strings.Contains(out.String(), "round trips: 20 of 64 bytes") {
		t.Errorf("loadgen link = %d\n%s%s", code, out.String(), errOut.String())
	}
	if code := loadgen.Main(context.Background(), []string{"link", "-key", "00"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "key is 1 bytes") {
		t.Errorf("loadgen link -key 00 = %d, %s", code, errOut.String())
	}
}

// Close ends the echo's connections and waits for every goroutine it started.
func TestLinkEchoClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	for _, proto := range []string{loadgen.LinkTCP, loadgen.LinkUDP} {
		e, err := loadgen.StartLinkEcho(loadgen.LinkEchoOptions{Protocol: proto, Addr: "127.0.0.1:0", Cipher: linkCipher(t)})
		if err != nil {
			t.Fatal(err)
		}
		var clients []*loadgen.LinkClient
		for range 3 {
			cl := dialLink(t, loadgen.LinkOptions{Protocol: proto, Addr: e.Addr()})
			if _, err := cl.Write([]byte("0123456789")); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, cl)
		}
		// Every byte clients[1] sent was read by the echo once its answer is back, so Close ends
		// that connection with a FIN (unread bytes would make it a reset).
		for _, cl := range clients[:2] {
			_ = cl.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(cl, make([]byte, 10)); err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
		}
		if err := e.Close(); err != nil {
			t.Errorf("%s: Close = %v", proto, err)
		}
		if proto == loadgen.LinkTCP {
			_ = clients[1].SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(clients[1]); err != nil {
				t.Errorf("after Close, the echo's connection did not end: %v", err)
			}
		}
	}
	goleak.VerifyNone(t, ignore)
}

// The io.Copy proxy floor carries a link client's traffic to an echo byte-exact, passes the
// half-close on both ways, and Close ends its connections and goroutines.
func TestLinkProxy(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	e := startEcho(t, loadgen.LinkTCP, nil)
	p, err := loadgen.StartLinkProxy(loadgen.LinkProxyOptions{Addr: "127.0.0.1:0", Upstream: e.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	cl := dialLink(t, loadgen.LinkOptions{Addr: p.Addr()})
	const size = 2<<20 + 777
	got, err := cl.Throughput(context.Background(), size)
	if err != nil || got.Bytes != size {
		t.Fatalf("Throughput through the proxy = %+v, %v", got, err)
	}
	r, err := cl.RoundTrips(context.Background(), 20, 64, time.Second)
	if err != nil || len(r.Samples) != 20 {
		t.Fatalf("RoundTrips through the proxy = %d samples, %v", len(r.Samples), err)
	}
	if err := cl.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := cl.Read(make([]byte, 10)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("Read after half-close = %d, %v; want EOF (the echo's end passed back)", n, err)
	}

	held := dialLink(t, loadgen.LinkOptions{Addr: p.Addr()})
	if _, err := held.RoundTrips(context.Background(), 1, 64, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	_ = held.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(held); err != nil {
		t.Errorf("after Close, the proxy's connection did not end: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("echo Close = %v", err)
	}
	goleak.VerifyNone(t, ignore)

	if _, err := loadgen.StartLinkProxy(loadgen.LinkProxyOptions{Addr: "127.0.0.1:0"}); err == nil {
		t.Error("StartLinkProxy without an upstream succeeded")
	}
}

// A one-way device checks every byte it is sent and sends what it is asked for, plain and as an
// encrypted link's relay end; ToDevice and FromDevice measure each direction alone, and a
// device that received other bytes says so.
func TestLinkOneWay(t *testing.T) {
	for _, enc := range []bool{false, true} {
		var c *linkcrypt.Cipher
		if enc {
			c = linkCipher(t)
		}
		e, err := loadgen.StartLinkEcho(loadgen.LinkEchoOptions{Addr: "127.0.0.1:0", Cipher: c, OneWay: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Close() })
		cl := dialLink(t, loadgen.LinkOptions{Addr: e.Addr(), Cipher: c})
		const size = 3<<20 + 999
		for range 2 { // requests follow each other on one connection
			up, err := cl.ToDevice(context.Background(), size)
			if err != nil || up.Bytes != size || up.Took <= 0 || up.PerSec() <= 0 {
				t.Fatalf("encrypted %v: ToDevice = %+v, %v", enc, up, err)
			}
			down, err := cl.FromDevice(context.Background(), size)
			if err != nil || down.Bytes != size || down.Took <= 0 {
				t.Fatalf("encrypted %v: FromDevice = %+v, %v", enc, down, err)
			}
		}
	}

	// Other bytes than the pattern: the device answers 1, ToDevice's check.
	e, err := loadgen.StartLinkEcho(loadgen.LinkEchoOptions{Addr: "127.0.0.1:0", OneWay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	raw, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(append([]byte{'S', 0, 0, 0, 0, 0, 0, 0, 4}, "abcd"...)); err != nil {
		t.Fatal(err)
	}
	verdict := make([]byte, 1)
	if _, err := io.ReadFull(raw, verdict); err != nil || verdict[0] != 1 {
		t.Errorf("verdict on wrong bytes = %v, %v; want 1", verdict, err)
	}
	if _, err := loadgen.StartLinkEcho(loadgen.LinkEchoOptions{Protocol: loadgen.LinkUDP, Addr: "127.0.0.1:0", OneWay: true}); err == nil {
		t.Error("a UDP one-way device started")
	}
}
