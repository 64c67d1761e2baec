package loadgen

import (
	"bytes"
	"context"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

// Protocols of a device link, as the API names them.
const (
	LinkTCP = "tcp"
	LinkUDP = "udp"
)

// LinkOptions says how a client reaches a device link.
type LinkOptions struct {
	Protocol string // LinkTCP (default) or LinkUDP
	Addr     string // the link's host:port: the relay's links address and the link's port
	// Local is the client's own address ("": any), e.g. the host:port a link pins as its
	// source.
	Local string
	// Cipher is the link's encryption (its key and IV); nil: a plain link.
	Cipher *linkcrypt.Cipher
}

// LinkClient is the client of one device link, the way a client program uses it: over TCP a
// byte stream, over UDP one datagram per Write and per Read. With a cipher it encrypts as
// netio/link/ENCRYPTION.md specifies: over TCP with linkcrypt's client streams, over UDP each
// datagram numbered from 0 (ClientSeal, ClientOpen).
//
// One goroutine may write while another reads; it is not safe for several writers, or several
// readers, at once. The measuring methods (Throughput, RoundTrips, Flood) use both sides: call
// them alone.
type LinkClient struct {
	o    LinkOptions
	conn net.Conn
	udp  bool

	in, out cipher.Stream // TCP with a cipher
	next    uint64        // UDP with a cipher: the next datagram's number
	wbuf    []byte        // the writer's: what goes on the wire
	rbuf    []byte        // the reader's (UDP with a cipher): a datagram as received
}

// DialLink connects to a link (TCP) or opens a socket that sends to it (UDP).
func DialLink(ctx context.Context, o LinkOptions) (*LinkClient, error) {
	if o.Protocol == "" {
		o.Protocol = LinkTCP
	}
	if o.Protocol != LinkTCP && o.Protocol != LinkUDP {
		return nil, fmt.Errorf("link protocol %q: want %q or %q", o.Protocol, LinkTCP, LinkUDP)
	}
	var d net.Dialer
	if o.Local != "" {
		var err error
		if o.Protocol == LinkTCP {
			d.LocalAddr, err = net.ResolveTCPAddr("tcp", o.Local)
		} else {
			d.LocalAddr, err = net.ResolveUDPAddr("udp", o.Local)
		}
		if err != nil {
			return nil, fmt.Errorf("link client address %q: %w", o.Local, err)
		}
	}
	conn, err := d.DialContext(ctx, o.Protocol, o.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial link %s %s: %w", o.Protocol, o.Addr, err)
	}
	c := &LinkClient{o: o, conn: conn, udp: o.Protocol == LinkUDP}
	if o.Cipher != nil && !c.udp {
		c.in, c.out = o.Cipher.ClientStreams()
	}
	if o.Cipher != nil && c.udp {
		c.rbuf = make([]byte, linkcrypt.NumberSize+linkcrypt.MaxPlain+1)
	}
	return c, nil
}

// LocalAddr is the client's address, as the relay sees it on loopback.
func (c *LinkClient) LocalAddr() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(c.conn.LocalAddr().String())
	return ap
}

// SetDeadline sets the deadline of reads and writes, as net.Conn's.
func (c *LinkClient) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// Write sends p: over TCP as the next bytes of the stream, over UDP as one datagram. It does
// not change p.
func (c *LinkClient) Write(p []byte) (int, error) {
	switch {
	case c.o.Cipher == nil:
		return c.conn.Write(p)
	case c.udp:
		c.wbuf = c.o.Cipher.ClientSeal(c.wbuf[:0], c.next, p)
		c.next++
		if _, err := c.conn.Write(c.wbuf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n := 0
	for len(p) > 0 { // through a bounded buffer: the stream must not skip a byte it did not send
		chunk := p[:min(len(p), 64<<10)]
		c.wbuf = slices.Grow(c.wbuf[:0], len(chunk))[:len(chunk)]
		c.out.XORKeyStream(c.wbuf, chunk)
		w, err := c.conn.Write(c.wbuf)
		n += w
		if err != nil {
			// The keystream moved past bytes that were not sent: the stream cannot go on.
			return n, fmt.Errorf("link write: %w", err)
		}
		p = p[len(chunk):]
	}
	return n, nil
}

// Read receives into p: over TCP the next bytes of the stream, over UDP one datagram's
// payload (io.ErrShortBuffer if it does not fit; with a cipher, linkcrypt.ErrShort for a
// datagram too short to be one).
func (c *LinkClient) Read(p []byte) (int, error) {
	switch {
	case c.o.Cipher == nil:
		return c.conn.Read(p)
	case !c.udp:
		n, err := c.conn.Read(p)
		c.in.XORKeyStream(p[:n], p[:n])
		return n, err
	}
	n, err := c.conn.Read(c.rbuf)
	if err != nil {
		return 0, err
	}
	if n-linkcrypt.NumberSize > len(p) {
		return 0, io.ErrShortBuffer
	}
	plain, err := c.o.Cipher.ClientOpen(p[:0], c.rbuf[:n])
	return len(plain), err
}

// CloseWrite half-closes a TCP link: the device sees the end of the stream, and the client can
// still read.
func (c *LinkClient) CloseWrite() error {
	if tc, ok := c.conn.(*net.TCPConn); ok {
		return tc.CloseWrite()
	}
	return nil
}

// Close closes the client's socket.
func (c *LinkClient) Close() error { return c.conn.Close() }

// untilDone makes the socket's calls fail when ctx is done; the returned function stops that.
func (c *LinkClient) untilDone(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
}

// pattern is the bytes the measurements send: stream byte i is pattern[i % patternLen], a
// pseudo-random block of prime length (so it never lines up with a write or read size), held
// twice so that any window of up to patternLen bytes is contiguous.
const patternLen = 65521

var pattern = sync.OnceValue(func() []byte {
	r := rand.New(rand.NewPCG(14, 5))
	p := make([]byte, 2*patternLen)
	for i := range patternLen {
		p[i] = byte(r.Uint32())
	}
	copy(p[patternLen:], p[:patternLen])
	return p
})

// patternAt returns the n ≤ patternLen pattern bytes from stream offset off.
func patternAt(off int64, n int) []byte {
	o := int(off % patternLen)
	return pattern()[o : o+n]
}

// Throughput is one measured transfer over a link whose device echoes what it receives.
type Throughput struct {
	Bytes int64 // sent, and received back byte-exact
	// Sent is from the first write until the last one returned; Echoed until the last byte
	// came back.
	Sent, Echoed time.Duration
}

// SentPerSec is the rate client → device, bytes per second.
func (t Throughput) SentPerSec() float64 { return float64(t.Bytes) / t.Sent.Seconds() }

// EchoedPerSec is the rate device → client (the echo, measured over the whole transfer), bytes
// per second.
func (t Throughput) EchoedPerSec() float64 { return float64(t.Bytes) / t.Echoed.Seconds() }

// Throughput sends size bytes over a TCP link whose device echoes them and reads them back at
// the same time, checking every byte. It fails if a byte differs or the link ends early.
func (c *LinkClient) Throughput(ctx context.Context, size int64) (Throughput, error) {
	if c.udp {
		return Throughput{}, errors.New("link throughput: a TCP link's (Flood measures a UDP link)")
	}
	defer c.untilDone(ctx)()
	start := time.Now()
	var (
		wg   sync.WaitGroup
		werr error
		sent time.Duration
	)
	wg.Go(func() {
		for off := int64(0); off < size && werr == nil; {
			p := patternAt(off, int(min(size-off, patternLen)))
			_, werr = c.Write(p)
			off += int64(len(p))
		}
		sent = time.Since(start)
	})
	buf := make([]byte, patternLen)
	var rerr error
	for off := int64(0); off < size && rerr == nil; {
		n, err := c.Read(buf[:min(size-off, patternLen)])
		if !bytes.Equal(buf[:n], patternAt(off, n)) {
			rerr = fmt.Errorf("link throughput: the echo differs in bytes %d to %d", off, off+int64(n))
		}
		off += int64(n)
		if err != nil && rerr == nil && off < size {
			rerr = fmt.Errorf("link throughput: %d of %d bytes echoed: %w", off, size, err)
		}
	}
	echoed := time.Since(start)
	if rerr != nil {
		_ = c.conn.SetDeadline(time.Unix(1, 0)) // the writer may be stuck on a full socket
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Throughput{}, err
	}
	if rerr == nil && werr != nil {
		rerr = fmt.Errorf("link throughput: %w", werr)
	}
	return Throughput{Bytes: size, Sent: sent, Echoed: echoed}, rerr
}

// OneWay is one measured transfer in one direction over a link whose device is a one-way
// device (LinkEchoOptions.OneWay).
type OneWay struct {
	Bytes int64         // sent, and found byte-exact at the other end
	Took  time.Duration // from the request until the device's verdict (ToDevice) or the last byte (FromDevice)
}

// PerSec is the transfer's rate, bytes per second.
func (o OneWay) PerSec() float64 { return float64(o.Bytes) / o.Took.Seconds() }

// ToDevice sends size bytes over a TCP link to a one-way device, which checks every byte and
// answers once it has them all; the time runs until that answer.
func (c *LinkClient) ToDevice(ctx context.Context, size int64) (OneWay, error) {
	if c.udp {
		return OneWay{}, errors.New("link to device: a TCP link's")
	}
	defer c.untilDone(ctx)()
	start := time.Now()
	if err := c.oneWayRequest(oneWaySink, size); err != nil {
		return OneWay{}, fmt.Errorf("link to device: %w", ctxErr(ctx, err))
	}
	for off := int64(0); off < size; {
		p := patternAt(off, int(min(size-off, patternLen)))
		if _, err := c.Write(p); err != nil {
			return OneWay{}, fmt.Errorf("link to device: %d of %d bytes: %w", off, size, ctxErr(ctx, err))
		}
		off += int64(len(p))
	}
	verdict := make([]byte, 1)
	if _, err := io.ReadFull(c, verdict); err != nil {
		return OneWay{}, fmt.Errorf("link to device: the device's answer: %w", ctxErr(ctx, err))
	}
	took := time.Since(start)
	if verdict[0] != 0 {
		return OneWay{}, errors.New("link to device: the device received other bytes than were sent")
	}
	return OneWay{Bytes: size, Took: took}, nil
}

// FromDevice asks a one-way device for size bytes over a TCP link and checks every byte; the
// time runs from the request until the last byte.
func (c *LinkClient) FromDevice(ctx context.Context, size int64) (OneWay, error) {
	if c.udp {
		return OneWay{}, errors.New("link from device: a TCP link's")
	}
	defer c.untilDone(ctx)()
	start := time.Now()
	if err := c.oneWayRequest(oneWayGenerate, size); err != nil {
		return OneWay{}, fmt.Errorf("link from device: %w", ctxErr(ctx, err))
	}
	buf := make([]byte, patternLen)
	for off := int64(0); off < size; {
		n, err := c.Read(buf[:min(size-off, patternLen)])
		if !bytes.Equal(buf[:n], patternAt(off, n)) {
			return OneWay{}, fmt.Errorf("link from device: bytes %d to %d differ", off, off+int64(n))
		}
		off += int64(n)
		if err != nil && off < size {
			return OneWay{}, fmt.Errorf("link from device: %d of %d bytes: %w", off, size, ctxErr(ctx, err))
		}
	}
	return OneWay{Bytes: size, Took: time.Since(start)}, nil
}

func (c *LinkClient) oneWayRequest(op byte, size int64) error {
	h := make([]byte, oneWayHeader)
	h[0] = op
	binary.BigEndian.PutUint64(h[1:], uint64(size))
	_, err := c.Write(h)
	return err
}

// RoundTrips is the outcome of request/response exchanges over a link.
type RoundTrips struct {
	Samples []time.Duration // one per answered request, in order
	Lost    int             // UDP: requests not answered within the timeout
}

// Quantile returns the round trip at quantile q (0..1) of the samples (0 if none).
func (r RoundTrips) Quantile(q float64) time.Duration {
	if len(r.Samples) == 0 {
		return 0
	}
	s := slices.Clone(r.Samples)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// RoundTrips sends count requests of size bytes (at least 8: each starts with its index), one
// at a time, over a link whose device echoes them, and times each until its echo is back,
// checked byte for byte. Over TCP a wrong or missing echo is an error; over UDP a request
// whose echo does not come within timeout is counted lost, and a late echo of an earlier one
// is skipped.
func (c *LinkClient) RoundTrips(ctx context.Context, count, size int, timeout time.Duration) (RoundTrips, error) {
	size = max(size, 8)
	if c.udp && size > linkcrypt.MaxPlain {
		return RoundTrips{}, fmt.Errorf("link round trips: %d bytes do not fit a datagram", size)
	}
	defer c.untilDone(ctx)()
	req := make([]byte, size)
	resp := make([]byte, max(size, 64<<10))
	r := RoundTrips{Samples: make([]time.Duration, 0, count)}
	for i := range count {
		copy(req[8:], patternAt(int64(i), min(size-8, patternLen)))
		binary.BigEndian.PutUint64(req, uint64(i))
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return r, fmt.Errorf("link round trip %d: %w", i, ctxErr(ctx, err))
		}
		if !c.udp {
			if _, err := io.ReadFull(c, resp[:size]); err != nil {
				return r, fmt.Errorf("link round trip %d: %w", i, ctxErr(ctx, err))
			}
			if !bytes.Equal(resp[:size], req) {
				return r, fmt.Errorf("link round trip %d: the echo differs from the request", i)
			}
			r.Samples = append(r.Samples, time.Since(start))
			continue
		}
		_ = c.conn.SetReadDeadline(start.Add(timeout))
		for {
			n, err := c.Read(resp)
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.Lost++
				break
			}
			if err != nil && !errors.Is(err, linkcrypt.ErrShort) && !errors.Is(err, io.ErrShortBuffer) {
				return r, fmt.Errorf("link round trip %d: %w", i, err)
			}
			if err == nil && bytes.Equal(resp[:n], req) {
				r.Samples = append(r.Samples, time.Since(start))
				break
			}
			// Another request's late echo, or a datagram that is not one: wait on.
		}
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	return r, nil
}

// ctxErr prefers ctx's error to the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Flood is the outcome of datagrams sent over a UDP link whose device echoes them.
type Flood struct {
	Sent, Echoed int // datagrams sent; distinct ones echoed back, checked byte for byte
	Size         int // payload bytes per datagram
	// Elapsed is from the first send until the last echo.
	Elapsed time.Duration
}

// EchoedBytesPerSec is the payload rate that made it there and back, bytes per second.
func (f Flood) EchoedBytesPerSec() float64 {
	return float64(f.Echoed) * float64(f.Size) / f.Elapsed.Seconds()
}

// States of a flood's datagram.
const (
	floodPending = iota // sent, no echo yet
	floodExpired        // no echo within the timeout: given up, its place in the window freed
	floodEchoed
)

// Flood sends count datagrams of size bytes (at least 8: each starts with its index) over a
// UDP link whose device echoes them, keeping at most window unanswered. A datagram without its
// echo after timeout is given up and frees its place (an echo arriving later still counts).
func (c *LinkClient) Flood(ctx context.Context, count, size, window int, timeout time.Duration) (Flood, error) {
	size = max(size, 8)
	if !c.udp {
		return Flood{}, errors.New("link flood: a UDP link's (Throughput measures a TCP link)")
	}
	if size > linkcrypt.MaxPlain {
		return Flood{}, fmt.Errorf("link flood: %d bytes do not fit a datagram", size)
	}
	window = max(window, 1)
	defer c.untilDone(ctx)()
	type sent struct {
		i  int
		at time.Time
	}
	state := make([]uint8, count)
	var queue []sent // the pending datagrams, oldest first (echoed ones removed lazily)
	f := Flood{Size: size}
	req := make([]byte, size)
	resp := make([]byte, 64<<10)
	outstanding := 0
	start := time.Now()
	last := start
	for f.Sent < count || outstanding > 0 {
		for f.Sent < count && outstanding < window {
			binary.BigEndian.PutUint64(req, uint64(f.Sent))
			copy(req[8:], patternAt(int64(f.Sent), min(size-8, patternLen)))
			if _, err := c.Write(req); err != nil {
				return f, fmt.Errorf("link flood: datagram %d: %w", f.Sent, ctxErr(ctx, err))
			}
			queue = append(queue, sent{f.Sent, time.Now()})
			f.Sent++
			outstanding++
		}
		for len(queue) > 0 && state[queue[0].i] != floodPending {
			queue = queue[1:]
		}
		_ = c.conn.SetReadDeadline(queue[0].at.Add(timeout))
		n, err := c.Read(resp)
		if ctx.Err() != nil {
			return f, ctx.Err()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			for now := time.Now(); len(queue) > 0 && !now.Before(queue[0].at.Add(timeout)); queue = queue[1:] {
				if state[queue[0].i] == floodPending {
					state[queue[0].i] = floodExpired
					outstanding--
				}
			}
			continue
		}
		if err != nil && !errors.Is(err, linkcrypt.ErrShort) && !errors.Is(err, io.ErrShortBuffer) {
			return f, fmt.Errorf("link flood: %w", err)
		}
		if err != nil || n != size {
			continue
		}
		i := binary.BigEndian.Uint64(resp)
		if i >= uint64(f.Sent) || state[i] == floodEchoed || !bytes.Equal(resp[8:n], patternAt(int64(i), n-8)) {
			continue // not one of ours, or a duplicate
		}
		if state[i] == floodPending {
			outstanding--
		}
		state[i] = floodEchoed
		f.Echoed++
		last = time.Now()
	}
	f.Elapsed = last.Sub(start)
	_ = c.conn.SetReadDeadline(time.Time{})
	return f, nil
}
