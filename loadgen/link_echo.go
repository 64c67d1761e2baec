package loadgen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

// LinkEchoOptions configures a LinkEcho.
type LinkEchoOptions struct {
	Protocol string // LinkTCP (default) or LinkUDP
	Addr     string // listen address, e.g. "127.0.0.1:0"
	// Cipher makes the echo play the relay's end of an encrypted link: it decrypts what
	// arrives (linkcrypt's Streams and Open) and encrypts what it returns (Streams, and Seal
	// numbered from 0), so that a client's encryption can be tested, and an encrypted link's
	// floor measured, without a relay. Every TCP connection starts the streams again: give
	// each a key of its own, as a relay's links have. nil: bytes go back as they came, the
	// device of a link.
	Cipher *linkcrypt.Cipher
}

// LinkEcho is a device (or, with a cipher, a relay's link end) that sends back every byte it
// receives: over TCP on a goroutine per connection, half-close propagated; over UDP each
// datagram to its sender. Close stops it and waits for its goroutines.
type LinkEcho struct {
	o    LinkEchoOptions
	ln   net.Listener
	pc   net.PacketConn
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
	done bool
}

// StartLinkEcho listens and echoes until Close.
func StartLinkEcho(o LinkEchoOptions) (*LinkEcho, error) {
	if o.Protocol == "" {
		o.Protocol = LinkTCP
	}
	e := &LinkEcho{o: o, conn: make(map[net.Conn]struct{})}
	var err error
	switch o.Protocol {
	case LinkTCP:
		if e.ln, err = net.Listen("tcp", o.Addr); err == nil {
			e.wg.Go(e.accept)
		}
	case LinkUDP:
		if e.pc, err = net.ListenPacket("udp", o.Addr); err == nil {
			e.wg.Go(e.echoDatagrams)
		}
	default:
		return nil, fmt.Errorf("link echo protocol %q: want %q or %q", o.Protocol, LinkTCP, LinkUDP)
	}
	if err != nil {
		return nil, fmt.Errorf("link echo: %w", err)
	}
	return e, nil
}

// Addr is the echo's host:port.
func (e *LinkEcho) Addr() string {
	if e.ln != nil {
		return e.ln.Addr().String()
	}
	return e.pc.LocalAddr().String()
}

// Close stops listening, closes every connection and waits for the goroutines.
func (e *LinkEcho) Close() error {
	e.mu.Lock()
	e.done = true
	for c := range e.conn {
		_ = c.Close()
	}
	e.mu.Unlock()
	var err error
	if e.ln != nil {
		err = e.ln.Close()
	} else {
		err = e.pc.Close()
	}
	e.wg.Wait()
	return err
}

func (e *LinkEcho) accept() {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.done {
			e.mu.Unlock()
			_ = c.Close()
			return
		}
		e.conn[c] = struct{}{}
		e.wg.Go(func() { e.echoStream(c) })
		e.mu.Unlock()
	}
}

func (e *LinkEcho) echoStream(c net.Conn) {
	defer func() {
		e.mu.Lock()
		delete(e.conn, c)
		e.mu.Unlock()
		_ = c.Close()
	}()
	var err error
	if e.o.Cipher == nil {
		// By read and write: io.Copy(c, c) would splice through a pipe, two more open files
		// for every connection, which thousands of idle links cannot afford.
		_, err = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10))
	} else {
		in, out := e.o.Cipher.Streams()
		buf := make([]byte, 64<<10)
		for {
			n, rerr := c.Read(buf)
			in.XORKeyStream(buf[:n], buf[:n])
			out.XORKeyStream(buf[:n], buf[:n])
			if _, werr := c.Write(buf[:n]); werr != nil {
				err = werr
				break
			}
			if rerr != nil {
				if !errors.Is(rerr, io.EOF) {
					err = rerr
				}
				break
			}
		}
	}
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		_ = tc.CloseWrite() // the client's end of stream, passed on
		_, _ = io.Copy(io.Discard, c)
	}
}

func (e *LinkEcho) echoDatagrams() {
	buf := make([]byte, 64<<10+linkcrypt.NumberSize)
	var plain, out []byte
	var n uint64
	for {
		size, from, err := e.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := buf[:size]
		if c := e.o.Cipher; c != nil {
			if plain, err = c.Open(plain[:0], reply); err != nil {
				continue
			}
			out = c.Seal(out[:0], n, plain)
			n++
			reply = out
		}
		_, _ = e.pc.WriteTo(reply, from)
	}
}
