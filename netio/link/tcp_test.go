package link

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// startManager starts a Manager on n ports of a random range of loopback, trying other ranges
// while a port is taken.
func startManager(t testing.TB, n int, buffer int) *Manager {
	t.Helper()
	return startManagerWith(t, n, func(c *Config) { c.Buffer = buffer })
}

// device is a device stand-in: it listens on loopback and hands over the connections it accepts.
type device struct {
	ln    net.Listener
	conns chan net.Conn
	wg    sync.WaitGroup
}

func newDevice(t testing.TB) *device {
	t.Helper()
	return newDeviceOn(t, &net.ListenConfig{})
}

// newDeviceOn is newDevice listening with lc.
func newDeviceOn(t testing.TB, lc *net.ListenConfig) *device {
	t.Helper()
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &device{ln: ln, conns: make(chan net.Conn, 16)}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		d.wg.Wait()
		close(d.conns)
		for c := range d.conns {
			_ = c.Close()
		}
	})
	return d
}

func (d *device) addr() netip.AddrPort { return d.ln.Addr().(*net.TCPAddr).AddrPort() }

func (d *device) accept(t testing.TB) net.Conn {
	t.Helper()
	select {
	case c := <-d.conns:
		t.Cleanup(func() { _ = c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not connect to the device")
		return nil
	}
}

func openLink(t testing.TB, m *Manager, s Spec) Info {
	t.Helper()
	s.Device, s.Protocol = "DEV-1", TCP
	in, err := m.Open(context.Background(), s)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if in.State != StateWaiting || len(in.Token) < 22 || in.Port == 0 {
		t.Fatalf("Open = %+v, want a waiting link with a port and a token of 128 bits or more", in)
	}
	return in
}

func dialLink(t testing.TB, in Info, d *net.Dialer) net.Conn {
	t.Helper()
	if d == nil {
		d = &net.Dialer{}
	}
	c, err := d.Dial("tcp", netip.AddrPortFrom(loopback, in.Port).String())
	if err != nil {
		t.Fatalf("dial link port %d: %v", in.Port, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// checkFor polls fn until it returns nil, failing with its last error after timeout.
func checkFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	checkfor.Check(t, timeout, 5*time.Millisecond, fn)
}

// pairLink opens a link to d, dials it (with dialer; nil for a plain one) and returns the link
// with both ends: the client's connection and the device's.
func pairLink(t testing.TB, m *Manager, d *device, dialer *net.Dialer) (in Info, client, dev net.Conn) {
	t.Helper()
	in = openLink(t, m, Spec{DeviceAddr: d.addr()})
	client = dialLink(t, in, dialer)
	return in, client, d.accept(t)
}

// waitClosed waits until the links of tokens are all closed; why says when, in the failure.
func waitClosed(t testing.TB, m *Manager, why string, tokens ...string) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		for _, tok := range tokens {
			if s := linkState(m, tok).State; s != StateClosed {
				return fmt.Errorf("%s: link %s, want closed", why, s)
			}
		}
		return nil
	})
}

func linkState(m *Manager, token string) Info {
	for _, in := range m.List() {
		if in.Token == token {
			return in
		}
	}
	return Info{}
}

// stream writes size pseudo-random bytes (seeded) to w, returning their SHA-256.
func stream(w io.Writer, seed uint64, size int) ([32]byte, error) {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	src := rand.NewChaCha8(key)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for size > 0 {
		b := buf[:min(size, len(buf))]
		_, _ = src.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return [32]byte{}, err
		}
		size -= len(b)
	}
	return [32]byte(h.Sum(nil)), nil
}

// drain reads r to its end, returning the SHA-256 and count of what it read.
func drain(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return [32]byte(h.Sum(nil)), n, err
}

type sum struct {
	hash [32]byte
	n    int64
	err  error
}

// exchange sends size bytes each way at once between client and dev (each closes its write
// side when done) and checks both arrive byte-exact.
func exchange(t *testing.T, client, dev net.Conn, size int, clientW io.Writer, clientR io.Reader) {
	t.Helper()
	var wg sync.WaitGroup
	var up, down [32]byte
	var upErr, downErr error
	atDev, atCli := make(chan sum, 1), make(chan sum, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		up, upErr = stream(clientW, 1, size)
		_ = client.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		down, downErr = stream(dev, 2, size)
		_ = dev.(*net.TCPConn).CloseWrite()
	}()
	go func() { h, n, err := drain(dev); atDev <- sum{h, n, err} }()
	go func() { h, n, err := drain(clientR); atCli <- sum{h, n, err} }()
	atDevice, atClient := <-atDev, <-atCli
	wg.Wait()
	if upErr != nil || downErr != nil {
		t.Fatalf("writing: client %v, device %v", upErr, downErr)
	}
	if atDevice.err != nil || atDevice.n != int64(size) || atDevice.hash != up {
		t.Errorf("device got %d bytes (err %v), hash match %v; want %d bytes as sent", atDevice.n, atDevice.err, atDevice.hash == up, size)
	}
	if atClient.err != nil || atClient.n != int64(size) || atClient.hash != down {
		t.Errorf("client got %d bytes (err %v), hash match %v; want %d bytes as sent", atClient.n, atClient.err, atClient.hash == down, size)
	}
}

// busyPolls are the devicelink.busy_poll settings the data-path tests run with: off, and on.
var busyPolls = []time.Duration{0, 100 * time.Microsecond}

// TestLinkCarries100MBEachWay: 100 MB each way at once, byte-exact, busy polling off and on.
func TestLinkCarries100MBEachWay(t *testing.T) {
	for _, busy := range busyPolls {
		t.Run(fmt.Sprintf("busy_poll=%v", busy), func(t *testing.T) { testLinkCarries(t, busy) })
	}
}

func testLinkCarries(t *testing.T, busy time.Duration) {
	size := 100 << 20
	if testing.Short() {
		size = 8 << 20
	}
	m := startManagerWith(t, 4, func(c *Config) { c.BusyPoll = busy })
	d := newDevice(t)
	in := openLink(t, m, Spec{DeviceAddr: d.addr()})
	client := dialLink(t, in, nil)
	// The device leg is dialed when the client connects: the client's first bytes wait for it.
	dev := d.accept(t)
	exchange(t, client, dev, size, client, client)
	checkFor(t, 10*time.Second, func() error {
		got := linkState(m, in.Token)
		if got.State != StateClosed || got.ToDevice != uint64(size) || got.ToClient != uint64(size) {
			return fmt.Errorf("after both sides ended: link %s, %d bytes to device, %d to client; want closed, %d each way", got.State, got.ToDevice, got.ToClient, size)
		}
		return nil
	})
	if got := m.tcp.st.toDevice.Load(); got != uint64(size) {
		t.Errorf("bytes to device counted %d, want %d", got, size)
	}
	if peak := linkState(m, in.Token).Spec; peak.Device != "DEV-1" {
		t.Errorf("link device = %q", peak.Device)
	}
}

// testCipher is AES-256-CTR with the IV's top bit flipped for relay → client: a real stream
// cipher standing in for linkcrypt's construction.
type testCipher struct{ key, iv []byte }

func (c testCipher) streams(flip bool) cipher.Stream {
	b, err := aes.NewCipher(c.key)
	if err != nil {
		panic(err)
	}
	iv := bytes.Clone(c.iv)
	if flip {
		iv[0] ^= 0x80
	}
	return cipher.NewCTR(b, iv)
}

func (c testCipher) Streams() (in, out cipher.Stream) { return c.streams(false), c.streams(true) }
func (testCipher) Seal([]byte, uint64, []byte) []byte {
	panic("TCP links do not seal datagrams")
}
func (testCipher) Open([]byte, []byte) ([]byte, error) {
	panic("TCP links do not open datagrams")
}

// TestLinkEncryptsClientLeg: the client leg is AES-256-CTR as ENCRYPTION.md specifies (the
// client's side here is the test's own, from crypto/aes and crypto/cipher), with the relay's
// end either the test's stand-in or linkcrypt's; the device leg carries plaintext.
func TestLinkEncryptsClientLeg(t *testing.T) {
	key, iv := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{0xff}, 16) // the IV's counter wraps at once
	own := testCipher{key: key, iv: iv}
	lc, err := linkcrypt.New(key, iv)
	if err != nil {
		t.Fatal(err)
	}
	m := startManager(t, 4, 0)
	d := newDevice(t)
	for name, relayEnd := range map[string]Cipher{"stand-in": own, "linkcrypt": lc} {
		t.Run(name, func(t *testing.T) {
			in := openLink(t, m, Spec{DeviceAddr: d.addr(), Cipher: relayEnd})
			if in.Cipher != nil {
				t.Error("Info shows the link's cipher")
			}
			client := dialLink(t, in, nil)
			dev := d.accept(t)

			// The same plaintext each way: what the client leg carries differs from it and
			// from the other direction (no keystream used twice).
			plain := bytes.Repeat([]byte("equal plaintexts"), 4)
			up := make([]byte, len(plain))
			own.streams(false).XORKeyStream(up, plain)
			if _, err := client.Write(up); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(plain))
			if _, err := io.ReadFull(dev, got); err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("device got %q, %v; want the plaintext", got, err)
			}
			if _, err := dev.Write(plain); err != nil {
				t.Fatal(err)
			}
			down := make([]byte, len(plain))
			if _, err := io.ReadFull(client, down); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, len(plain))
			own.streams(true).XORKeyStream(want, plain)
			if !bytes.Equal(down, want) {
				t.Fatalf("client leg carried %x, want %x (AES-256-CTR from the IV with its top bit flipped)", down, want)
			}
			for i := range up {
				if up[i]^down[i] == 0 {
					t.Fatalf("byte %d: the two directions' ciphertexts of equal plaintexts are equal: keystream reused", i)
				}
			}

			// And 4 MiB each way at once, through the client's own streams.
			enc := cipher.StreamWriter{S: own.streams(false), W: client}
			dec := cipher.StreamReader{S: own.streams(true), R: client}
			// The streams continue where the first exchange left them.
			skip := make([]byte, len(plain))
			enc.S.XORKeyStream(skip, skip)
			dec.S.XORKeyStream(skip, skip)
			exchange(t, client, dev, 4<<20, enc, dec)
		})
	}
}

func TestCloseEndsBothSockets(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	in, client, dev := pairLink(t, m, d, nil)
	roundTrip(t, client, dev)
	if err := m.Close(in.Token); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, c := range map[string]net.Conn{"client": client, "device": dev} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s Read after Close = %d, %v; want EOF", name, n, err)
		}
	}
	if got := linkState(m, in.Token); got.State != StateClosed || got.ToDevice != 5 || got.ToClient != 5 {
		t.Errorf("after Close: %+v, want closed with 5 bytes each way", got)
	}
	if err := m.Close(in.Token); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := m.Close("no-such-token"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Close(unknown) = %v, want ErrNotFound", err)
	}
	// The port does not bring the deleted link back.
	again := dialLink(t, in, nil)
	expectRefused(t, again)
	if got := m.tcp.st.noLink.Load(); got != 1 {
		t.Errorf("refused for no link: %d, want 1", got)
	}
}

// roundTrip checks a few bytes each way.
func roundTrip(t *testing.T, client, dev net.Conn) {
	t.Helper()
	for _, dir := range []struct {
		from, to net.Conn
		msg      string
	}{{client, dev, "hello"}, {dev, client, "world"}} {
		if _, err := dir.from.Write([]byte(dir.msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(dir.msg))
		_ = dir.to.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(dir.to, got); err != nil || string(got) != dir.msg {
			t.Fatalf("read %q, %v; want %q", got, err, dir.msg)
		}
		_ = dir.to.SetReadDeadline(time.Time{})
	}
}

// expectRefused checks the relay closes c without a byte.
func expectRefused(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("refused connection: Read = %d, %v; want EOF or reset", n, err)
	}
}

func TestSecondClientRefused(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	in, client, dev := pairLink(t, m, d, nil)
	roundTrip(t, client, dev)
	second := dialLink(t, in, nil)
	expectRefused(t, second)
	if got := m.tcp.st.second.Load(); got != 1 {
		t.Errorf("second clients refused: %d, want 1", got)
	}
	roundTrip(t, client, dev) // the first client keeps the link
	if got := linkState(m, in.Token); got.State != StateOpen || got.Client != client.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Errorf("link = %+v, want open, held by %v", got, client.LocalAddr())
	}
}

func TestPinnedSourceOnly(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	// A port of loopback for the pinned client: bind it, note it, free it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pinned := l.Addr().(*net.TCPAddr).AddrPort()
	_ = l.Close()
	in := openLink(t, m, Spec{DeviceAddr: d.addr(), Source: pinned})
	other := dialLink(t, in, nil)
	expectRefused(t, other)
	if got := m.tcp.st.source.Load(); got != 1 {
		t.Errorf("refused for source: %d, want 1", got)
	}
	if got := linkState(m, in.Token).State; got != StateWaiting {
		t.Errorf("after an unpinned client: link %s, want waiting", got)
	}
	client := dialLink(t, in, &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(pinned)})
	dev := d.accept(t)
	roundTrip(t, client, dev)
}

func TestHalfClosePropagates(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	for _, first := range []string{"client", "device"} {
		t.Run(first+" ends first", func(t *testing.T) {
			in, client, dev := pairLink(t, m, d, nil)
			a, b := client, dev
			if first == "device" {
				a, b = dev, client
			}
			// a sends its request and ends its side; b reads it to EOF, answers and ends too.
			if _, err := a.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := a.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(b)
			if err != nil || string(got) != "request" {
				t.Fatalf("%s read %q, %v; want \"request\" then EOF", b.LocalAddr(), got, err)
			}
			if _, err := b.Write([]byte("response after the FIN")); err != nil {
				t.Fatal(err)
			}
			if err := b.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err = io.ReadAll(a)
			if err != nil || string(got) != "response after the FIN" {
				t.Fatalf("read %q, %v; want the response then EOF", got, err)
			}
			waitClosed(t, m, "both sides ended", in.Token)
		})
	}
}

// TestSlowClientBounded: a client that stops reading leaves at most Buffer plus one read
// buffered in the relay for that direction, and gets every byte once it reads again.
func TestSlowClientBounded(t *testing.T) {
	for _, busy := range busyPolls {
		t.Run(fmt.Sprintf("busy_poll=%v", busy), func(t *testing.T) { testSlowClientBounded(t, busy) })
	}
}

func testSlowClientBounded(t *testing.T, busy time.Duration) {
	const buffer = 64 << 10
	const size = 32 << 20
	m := startManagerWith(t, 4, func(c *Config) { c.Buffer, c.BusyPoll = buffer, busy })
	d := newDevice(t)
	in, client, dev := pairLink(t, m, d, nil)
	sent := make(chan sum, 1)
	go func() {
		h, err := stream(dev, 3, size)
		sent <- sum{hash: h, err: err}
	}()
	m.mu.Lock()
	e := m.links[in.Token]
	m.mu.Unlock()
	// The relay fills the client's direction to its bound, then stops reading the device.
	checkFor(t, 20*time.Second, func() error {
		if p := e.peakHeld.Load(); p < buffer {
			return fmt.Errorf("relay holds at most %d bytes so far, want it to fill %d", p, buffer)
		}
		return nil
	})
	var last uint64
	checkFor(t, 20*time.Second, func() error {
		now := e.toClient.Load()
		if now != last {
			last = now
			time.Sleep(100 * time.Millisecond)
			return errors.New("the device's bytes still flow")
		}
		return nil
	})
	t.Logf("the relay held the device back after %d bytes (the rest in kernel buffers)", last)
	if peak := e.peakHeld.Load(); peak > buffer+readChunk {
		t.Errorf("relay held %d bytes for the slow client, want at most %d (Buffer plus one read)", peak, buffer+readChunk)
	}
	if last >= size {
		t.Fatalf("all %d bytes passed to a client that reads nothing: nothing held the device back", last)
	}
	h, n, err := drainN(client, size)
	s := <-sent
	if s.err != nil || err != nil || n != size || h != s.hash {
		t.Errorf("once the client reads: %d of %d bytes, hash match %v (errors %v, %v)", n, size, h == s.hash, s.err, err)
	}
	if peak := e.peakHeld.Load(); peak > buffer+readChunk {
		t.Errorf("relay held %d bytes, want at most %d", peak, buffer+readChunk)
	}
}

func drainN(r io.Reader, n int64) ([32]byte, int64, error) {
	return drain(io.LimitReader(r, n))
}

func TestPortsExhausted(t *testing.T) {
	m := startManager(t, 2, 0)
	d := newDevice(t)
	a := openLink(t, m, Spec{DeviceAddr: d.addr()})
	b := openLink(t, m, Spec{DeviceAddr: d.addr()})
	if a.Port == b.Port {
		t.Fatalf("two links on port %d", a.Port)
	}
	if _, err := m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: TCP, DeviceAddr: d.addr()}); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("third Open on two ports = %v, want ErrPortsExhausted", err)
	}
	if err := m.Close(a.Token); err != nil {
		t.Fatal(err)
	}
	c := openLink(t, m, Spec{DeviceAddr: d.addr()})
	if c.Port != a.Port {
		t.Errorf("after closing the link on %d, new link on %d", a.Port, c.Port)
	}
	// UDP ports are another space: a UDP link still finds one.
	u, err := m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: UDP, DeviceAddr: d.addr()})
	if err != nil || (u.Port != a.Port && u.Port != b.Port) {
		t.Errorf("UDP Open with every TCP port taken = %+v, %v; want a link on one of the range's ports", u, err)
	}
}

func TestDeviceUnreachable(t *testing.T) {
	m := startManager(t, 2, 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := l.Addr().(*net.TCPAddr).AddrPort()
	_ = l.Close()
	in := openLink(t, m, Spec{DeviceAddr: gone})
	client := dialLink(t, in, nil)
	expectRefused(t, client)
	if f, r := m.tcp.st.dialFailures.Load(), m.tcp.st.unrch.Load(); f != 1 || r != 1 {
		t.Errorf("dial failures %d, refused unreachable %d; want 1 each", f, r)
	}
	waitClosed(t, m, "device unreachable", in.Token)
}

func TestCloseDevice(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	in, client, dev := pairLink(t, m, d, nil)
	roundTrip(t, client, dev)
	waiting := openLink(t, m, Spec{DeviceAddr: d.addr()})
	m.CloseDevice("OTHER")
	if s := linkState(m, in.Token).State; s != StateOpen {
		t.Fatalf("another device's deletion: link %s, want open", s)
	}
	m.CloseDevice("DEV-1")
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client Read after the device's deletion = %v, want EOF", err)
	}
	waitClosed(t, m, "after the device's deletion", in.Token, waiting.Token)
}

func TestStopEndsLinks(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	in, client, dev := pairLink(t, m, d, nil)
	roundTrip(t, client, dev)
	waiting := openLink(t, m, Spec{DeviceAddr: d.addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for name, c := range map[string]net.Conn{"client": client, "device": dev} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s Read after Stop = %v, want EOF", name, err)
		}
	}
	for _, tok := range []string{in.Token, waiting.Token} {
		if s := linkState(m, tok).State; s != StateClosed {
			t.Errorf("link %s after Stop, want closed", s)
		}
	}
	if _, err := m.Open(ctx, Spec{Device: "DEV-1", Protocol: TCP, DeviceAddr: d.addr()}); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Stop = %v, want ErrClosed", err)
	}
}

func TestCollectors(t *testing.T) {
	m := startManager(t, 4, 0)
	d := newDevice(t)
	in, client, dev := pairLink(t, m, d, nil)
	roundTrip(t, client, dev)
	expectRefused(t, dialLink(t, in, nil))
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	want := map[string]float64{
		`fleetrelay_devicelink_tcp_links`:                                      1,
		`fleetrelay_devicelink_tcp_bytes_total{direction="to_device"}`:         5,
		`fleetrelay_devicelink_tcp_bytes_total{direction="to_client"}`:         5,
		`fleetrelay_devicelink_tcp_refused_total{reason="second_client"}`:      1,
		`fleetrelay_devicelink_tcp_refused_total{reason="no_link"}`:            0,
		`fleetrelay_devicelink_tcp_refused_total{reason="source"}`:             0,
		`fleetrelay_devicelink_tcp_refused_total{reason="device_unreachable"}`: 0,
		`fleetrelay_devicelink_tcp_dial_failures_total`:                        0,
		`fleetrelay_devicelink_tcp_busy_poll_seconds_total`:                    0, // off here
		`fleetrelay_devicelink_udp_links`:                                      0,
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			name := f.GetName()
			if l := mt.GetLabel(); len(l) > 0 {
				name += fmt.Sprintf("{%s=%q}", l[0].GetName(), l[0].GetValue())
			}
			v := mt.GetGauge().GetValue()
			if mt.Counter != nil {
				v = mt.GetCounter().GetValue()
			}
			got[name] = v
		}
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, v)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok && !strings.HasPrefix(name, "fleetrelay_devicelink_udp_") {
			t.Errorf("unexpected series %s", name)
		}
	}
}

// TestManyLinksAtOnce runs links on every loop at once, each carrying 1 MiB each way with
// half-closes, and checks that none leaves a socket behind.
func TestManyLinksAtOnce(t *testing.T) {
	const links, size = 24, 1 << 20
	m := startManager(t, links, 0)
	d := newDevice(t)
	before := openSockets(t)
	var wg sync.WaitGroup
	infos := make([]Info, links)
	for i := range links {
		infos[i] = openLink(t, m, Spec{DeviceAddr: d.addr()})
	}
	for i := range links {
		client := dialLink(t, infos[i], nil)
		dev := d.accept(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			exchange(t, client, dev, size, client, client)
			_ = client.Close()
			_ = dev.Close()
		}()
	}
	wg.Wait()
	checkFor(t, 10*time.Second, func() error {
		for _, in := range infos {
			if got := linkState(m, in.Token); got.State != StateClosed || got.ToDevice != size || got.ToClient != size {
				return fmt.Errorf("link on %d: %s, %d/%d bytes; want closed with %d each way", in.Port, got.State, got.ToDevice, got.ToClient, size)
			}
		}
		if after := openSockets(t); after > before {
			return fmt.Errorf("%d sockets open after the links ended, %d before", after, before)
		}
		return nil
	})
}

// openSockets counts the process's open sockets.
func openSockets(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, f := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + f.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}
