package loadgen

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

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
	// OneWay makes a TCP echo a one-way device instead, for LinkClient.ToDevice and FromDevice:
	// each request on a connection is a byte, 'S' or 'G', and a count n (8 bytes, big-endian).
	// 'S': the device reads n bytes, checks them against the measurements' pattern, and answers
	// one byte, 0 if every byte was right, 1 if not. 'G': the device sends n bytes of the pattern.
	OneWay bool
}

// One-way requests (LinkEchoOptions.OneWay).
const (
	oneWaySink     = 'S'
	oneWayGenerate = 'G'
	oneWayHeader   = 9
)

// LinkEcho is a device (or, with a cipher, a relay's link end) that sends back every byte it
// receives: over TCP on a goroutine per connection, half-close propagated; over UDP each
// datagram to its sender. Close stops it and waits for its goroutines.
type LinkEcho struct {
	o  LinkEchoOptions
	ln net.Listener
	pc net.PacketConn
	connSet
}

// StartLinkEcho listens and echoes until Close.
func StartLinkEcho(o LinkEchoOptions) (*LinkEcho, error) {
	if o.Protocol == "" {
		o.Protocol = LinkTCP
	}
	if o.OneWay && o.Protocol != LinkTCP {
		return nil, errors.New("link echo: a one-way device is a TCP one")
	}
	e := &LinkEcho{o: o}
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
	e.closeAll()
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
		if !e.track(c) {
			return
		}
		e.wg.Go(func() { e.echoStream(c) })
	}
}

func (e *LinkEcho) echoStream(c net.Conn) {
	defer e.forget(c)
	var err error
	switch {
	case e.o.OneWay:
		err = e.oneWay(c)
	case e.o.Cipher == nil:
		// By read and write: io.Copy(c, c) would splice through a pipe, two more open files
		// for every connection, which thousands of idle links cannot afford.
		_, err = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10))
	default:
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

// oneWay serves a one-way device's requests on c until the client's end of stream (nil) or an
// error.
func (e *LinkEcho) oneWay(c net.Conn) error {
	var in, out cipher.Stream // with a cipher: the relay's end of an encrypted link
	if e.o.Cipher != nil {
		in, out = e.o.Cipher.Streams()
	}
	read := func(p []byte) error {
		if _, err := io.ReadFull(c, p); err != nil {
			return err
		}
		if in != nil {
			in.XORKeyStream(p, p)
		}
		return nil
	}
	write := func(p []byte) error {
		if out != nil {
			out.XORKeyStream(p, p)
		}
		_, err := c.Write(p)
		return err
	}
	buf := make([]byte, patternLen)
	for {
		h := buf[:oneWayHeader]
		if err := read(h); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := int64(binary.BigEndian.Uint64(h[1:]))
		switch h[0] {
		case oneWaySink:
			bad := byte(0)
			for off := int64(0); off < n; {
				k := int(min(n-off, patternLen))
				if err := read(buf[:k]); err != nil {
					return err
				}
				if !bytes.Equal(buf[:k], patternAt(off, k)) {
					bad = 1
				}
				off += int64(k)
			}
			if err := write([]byte{bad}); err != nil {
				return err
			}
		case oneWayGenerate:
			for off := int64(0); off < n; {
				k := int(min(n-off, patternLen))
				copy(buf, patternAt(off, k))
				if err := write(buf[:k]); err != nil {
					return err
				}
				off += int64(k)
			}
		default:
			return fmt.Errorf("one-way device: request %q", h[0])
		}
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
