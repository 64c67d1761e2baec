package link

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// tcpFinWait2 is tcp_info's state of a socket whose FIN its peer's kernel acknowledged: every
// byte it wrote before it is in the peer's kernel (or read from it).
const tcpFinWait2 = 5

// sockInfo runs fn on c's descriptor.
func sockInfo(t *testing.T, c net.Conn, fn func(fd int) error) error {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// heldBack reports whether the relay paused reading its socket of in's client (or device), and
// how many bytes the relay's kernel holds of that socket's input, unread. It asks on the
// pair's event loop.
func heldBack(t *testing.T, m *Manager, in Info, device bool) (bool, int) {
	t.Helper()
	m.mu.Lock()
	e := m.links[in.Token]
	m.mu.Unlock()
	m.tcp.mu.Lock()
	p := m.tcp.pairs[e]
	m.tcp.mu.Unlock()
	if p == nil {
		t.Fatal("the link has no pair")
	}
	type answer struct {
		paused bool
		unread int
		err    error
	}
	got := make(chan answer, 1)
	err := p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		l := &p.client
		if device {
			l = &p.device
		}
		a := answer{paused: l.paused}
		if l.fd < 0 {
			a.err = errors.New("the leg has no socket")
		} else {
			a.unread, a.err = unix.IoctlGetInt(l.fd, unix.SIOCINQ)
		}
		got <- a
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a.paused, a.unread
}

// fillAndEnd writes to sender (in's client, or its device), 64 KiB at a time, until the relay
// paused reading it with bytes still unread in the relay's kernel, then ends sender's side and
// waits until the relay's kernel acknowledged that FIN: the FIN sits behind bytes the relay
// has not read. It returns the SHA-256 and count of what it wrote.
func fillAndEnd(t *testing.T, m *Manager, in Info, sender net.Conn, device bool, seed uint64) ([32]byte, int) {
	t.Helper()
	src := rand.NewChaCha8([32]byte{byte(seed)})
	h := sha256.New()
	chunk := make([]byte, 64<<10)
	n := 0
	for {
		if paused, unread := heldBack(t, m, in, device); paused && unread > 0 {
			break
		}
		_, _ = src.Read(chunk)
		h.Write(chunk)
		if _, err := sender.Write(chunk); err != nil {
			t.Fatal(err)
		}
		n += len(chunk)
		// Every byte written so far is in the relay's kernel before the next chunk.
		checkFor(t, 20*time.Second, func() error {
			return sockInfo(t, sender, func(fd int) error {
				q, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
				if err == nil && q > 0 {
					err = fmt.Errorf("%d bytes not taken by the relay's kernel after %d written: it is full before the relay held the sender back", q, n)
				}
				return err
			})
		})
	}
	if err := sender.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, func() error {
		return sockInfo(t, sender, func(fd int) error {
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil && info.State != tcpFinWait2 {
				err = fmt.Errorf("TCP state %d, want FIN_WAIT2 (%d): the relay's kernel has not acknowledged the FIN", info.State, tcpFinWait2)
			}
			return err
		})
	})
	return [32]byte(h.Sum(nil)), n
}

// smallRcvBuf fixes a socket's receive buffer at 16 KiB: the client's and the device's kernels
// take little (a fixed receive buffer is not autotuned), so the relay soon holds back a sender
// whose reader does not read.
func smallRcvBuf(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10) })
	return errors.Join(err, serr)
}

// TestGracefulEndDeliversEveryByte: a side that writes its last bytes and ends its side (FIN)
// while the relay holds its reading back (the other side does not read) gets every byte to
// the other side, and the link ends only after that; whether the other side ends after, or
// both read late at once.
//
// The bytes the relay had not read wait in its kernel's socket buffer behind the FIN. Once the
// relay passes the other side's FIN on to that socket (shutdown), it is shut both ways, and
// epoll reports a hang-up on it even though its reading is paused: gnet closes it at once,
// with io.EOF, without reading. Before the relay read the rest itself, those bytes were lost
// and the link ended short.
func TestGracefulEndDeliversEveryByte(t *testing.T) {
	const buffer = 16 << 10
	m := startManager(t, 4, buffer)
	d := newDeviceOn(t, &net.ListenConfig{Control: smallRcvBuf})
	open := func(t *testing.T) (Info, net.Conn, net.Conn) {
		in, client, dev := pairLink(t, m, d, &net.Dialer{Control: smallRcvBuf})
		roundTrip(t, client, dev) // 5 bytes each way
		return in, client, dev
	}
	// readAll reads c to EOF, with room to read fast.
	readAll := func(c net.Conn) sum {
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 20)
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		h, n, err := drain(c)
		return sum{h, n, err}
	}
	ended := func(t *testing.T, in Info, toClient, toDevice int) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			s := linkState(m, in.Token)
			if s.State != StateClosed || s.ToClient != uint64(5+toClient) || s.ToDevice != uint64(5+toDevice) {
				return fmt.Errorf("link %s, %d bytes to client, %d to device; want closed, %d and %d", s.State, s.ToClient, s.ToDevice, 5+toClient, 5+toDevice)
			}
			return nil
		})
	}

	for _, quiet := range []string{"client", "device"} {
		t.Run(quiet+" reads after both ended", func(t *testing.T) {
			in, client, dev := open(t)
			sender, reader := dev, client
			if quiet == "device" {
				sender, reader = client, dev
			}
			sent, size := fillAndEnd(t, m, in, sender, quiet == "client", 4)
			// The reader ends its side; the relay passes that on to the sender, who sees EOF.
			if err := reader.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = sender.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := sender.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("sender's Read after the reader's FIN = %d, %v; want EOF", n, err)
			}
			if s := linkState(m, in.Token); s.State != StateOpen {
				t.Errorf("link %s with bytes undelivered (%d to client, %d to device), want open", s.State, s.ToClient, s.ToDevice)
			}
			got := readAll(reader)
			if got.err != nil || got.n != int64(size) || got.hash != sent {
				t.Errorf("%s read %d bytes (err %v), hash match %v; want %d bytes as sent", quiet, got.n, got.err, got.hash == sent, size)
			}
			if quiet == "client" {
				ended(t, in, size, 0)
			} else {
				ended(t, in, 0, size)
			}
		})
	}

	// Both sides write until held back and end; then they read: one after the other (the
	// first to read gets its FIN passed on to the other's socket while the relay holds that
	// one's bytes), or both at once.
	for _, order := range []string{"client first", "device first", "at once"} {
		t.Run("both ended, "+order+" reads", func(t *testing.T) {
			in, client, dev := open(t)
			up, upN := fillAndEnd(t, m, in, client, false, 5)
			down, downN := fillAndEnd(t, m, in, dev, true, 6)
			atCli, atDev := make(chan sum, 1), make(chan sum, 1)
			switch order {
			case "client first":
				atCli <- readAll(client)
				go func() { atDev <- readAll(dev) }()
			case "device first":
				atDev <- readAll(dev)
				go func() { atCli <- readAll(client) }()
			default:
				go func() { atCli <- readAll(client) }()
				go func() { atDev <- readAll(dev) }()
			}
			if s := <-atCli; s.err != nil || s.n != int64(downN) || s.hash != down {
				t.Errorf("client read %d bytes (err %v), hash match %v; want %d bytes as sent", s.n, s.err, s.hash == down, downN)
			}
			if s := <-atDev; s.err != nil || s.n != int64(upN) || s.hash != up {
				t.Errorf("device read %d bytes (err %v), hash match %v; want %d bytes as sent", s.n, s.err, s.hash == up, upN)
			}
			ended(t, in, downN, upN)
		})
	}
}

// TestStopEndsLinkGnetLetGo: a link whose two sockets gnet already closed (both remotes sent
// FIN; the pair holds their duplicates, with bytes for a client that does not read) is ended
// by Stop too: its sockets are closed, not leaked.
func TestStopEndsLinkGnetLetGo(t *testing.T) {
	const buffer = 16 << 10
	m := startManager(t, 4, buffer)
	d := newDeviceOn(t, &net.ListenConfig{Control: smallRcvBuf})
	in, client, dev := pairLink(t, m, d, &net.Dialer{Control: smallRcvBuf})
	roundTrip(t, client, dev)
	fillAndEnd(t, m, in, dev, true, 7)
	if err := client.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := dev.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("device Read after the client's FIN = %d, %v; want EOF", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if s := linkState(m, in.Token).State; s != StateClosed {
		t.Errorf("link %s after Stop, want closed", s)
	}
	// The client reads what reached it, then the relay's end of its socket is gone.
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, client); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client after Stop: %v, want EOF or reset (the relay's socket closed)", err)
	}
}
