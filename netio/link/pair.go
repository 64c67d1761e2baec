package link

import (
	"context"
	"crypto/cipher"
	"errors"
	"io"
	"slices"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// A pair is two sockets and the bytes between them: a TCP link's client and device, or a raw
// TCP connector's device and upstream (connector.go). The client leg is the accepted
// connection (a connector's device), the device leg the one dialled and enrolled into the
// client's loop (a connector's upstream). What the pair reports — bytes moved and held,
// pauses, its end — goes to its host (pairHost). Everything in it is owned by the event loop
// both sockets live on: gnet callbacks, and tasks run with loop.Execute.
//
// How bytes move, and why not through gnet's own write path:
//
//   - A leg's socket is written with write(2) directly; what the kernel does not take waits in
//     the leg's out (at most Buffer bytes, plus one read after a peer's FIN), and the watcher
//     (watcher_linux.go) wakes the pair when the socket can take more. gnet's Conn.Write keeps
//     the rest in an outbound buffer and re-enables reading the socket (EPOLLIN) each time it
//     starts or finishes flushing it, and it says nothing when it drained: reading could not be
//     held back, nor resumed on time.
//   - Backpressure: bytes are read from one leg only as far as the other leg's out has room.
//     gnet reads a readable socket whatever the handler does (what the handler leaves stays in
//     the connection's inbound buffer, which grows without bound), so a leg whose peer is full
//     is paused: its descriptor's interest in gnet's epoll set is cleared (EPOLL_CTL_MOD with
//     no events) until the peer drains. gnet does not expose that, so the loop's epoll
//     descriptor is read from gnet's event loop (loopPollFD). The relay thus holds at most
//     Buffer bytes plus one read (gnet's read size: readChunk for links, 64 KiB for
//     connectors) per direction of a pair.
//   - Half-close: gnet closes a socket as soon as it reads EOF, and has no shutdown. When a
//     leg's remote ends its side (FIN), the pair keeps a duplicate of its descriptor (taken in
//     OnClose, before gnet closes its own), passes the FIN on to the other leg with
//     shutdown(SHUT_WR) on its descriptor once every byte before it was delivered, and goes on
//     carrying the other direction into the duplicate until that side ends too; then the link
//     is closed. An error or reset on either leg, Close or Stop ends both at once.
//   - gnet also closes a socket, with io.EOF, when epoll reports a hang-up on it without
//     readable data (EPOLLHUP alone), and it does so without reading what the kernel still
//     holds. A paused leg waits for no events, yet epoll always reports a hang-up, and a
//     socket is hung up once its remote sent FIN and its own write side is shut: a leg paused
//     with the remote's last bytes and FIN in its receive buffer is closed by gnet the moment
//     the pair passes the other side's FIN on to it. So OnClose with io.EOF does not mean
//     every byte was read: the pair reads the duplicate itself (drain) until read(2) returns
//     EOF, as far as the peer's out has room (its wake-up resumes the reading); only then is
//     the leg's FIN passed on. Only an error (a reset shows here) drops bytes.
type pair struct {
	h      pairHost
	w      *watcher
	buffer int // the most bytes a leg's out holds before its peer is paused
	loop   gnet.EventLoop
	epfd   int // the loop's epoll descriptor

	client, device leg
	scratch        []byte      // cipher output, shared by the loop's pairs (encrypted links only)
	busy           *busyPoller // the loop's, nil when off (and for connectors)
	ended          bool
}

// leg is one socket of a pair.
type leg struct {
	p      *pair
	peer   *leg
	device bool

	c      gnet.Conn // nil before the dialled connection is enrolled and once gnet closed it
	fd     int       // the socket (-1: none); after the remote's FIN, a duplicate the pair owns
	dup    bool
	out    []byte        // bytes for this socket the kernel has not taken yet
	xor    cipher.Stream // applied to the bytes read from this leg (nil: none)
	paused bool          // reading it is paused in gnet's epoll set
	eof    bool          // its remote sent FIN and every byte before it was read
	shut   bool          // its write side is shut (the peer's FIN passed on)
	watch  bool          // its descriptor is in the watcher's set
}

// readChunk is what gnet reads from a socket at once (its read buffer, one per loop), and
// bounds what one step moves from a leg to the other. Reads of 256 KiB carried twice the bytes
// per second of 64 KiB ones in BenchmarkLinkThroughput.
const readChunk = 256 << 10

// pairHost is what a pair reports to; its methods are called on the pair's event loop.
type pairHost interface {
	// moved: n bytes read from src went to its peer.
	moved(src *leg, n int)
	// held: the relay holds n bytes of src's direction (read from src, not yet taken by its
	// peer's socket).
	held(src *leg, n int)
	// paused: l stopped being read, its peer being full.
	paused(l *leg)
	// warn logs a problem of the pair (args are slog's, the pair's own attributes added).
	warn(msg string, args ...any)
	// ended: the pair ended and closed its sockets (once).
	ended(p *pair)
}

// newPair pairs the accepted connection client with a dialled leg enrolled later
// (deviceOpened); w wakes it when a socket can take more, buffer bounds each leg's out, epfd
// is client's loop's epoll descriptor.
func newPair(h pairHost, w *watcher, buffer int, client gnet.Conn, epfd int) *pair {
	p := &pair{h: h, w: w, buffer: buffer, loop: client.EventLoop(), epfd: epfd}
	p.client = leg{p: p, peer: &p.device, c: client, fd: client.Fd()}
	p.device = leg{p: p, peer: &p.client, device: true, fd: -1}
	return p
}

// deviceOpened attaches the enrolled (dialled) connection, writes what waits for it in its out,
// and moves what the client sent so far.
func (p *pair) deviceOpened(c gnet.Conn) gnet.Action {
	if p.ended {
		return gnet.Close
	}
	p.device.c, p.device.fd = c, c.Fd()
	p.flush(&p.device)
	p.step()
	return gnet.None
}

// traffic handles bytes gnet read from l.
func (p *pair) traffic(l *leg) {
	if p.ended {
		return
	}
	p.move(l)
	p.settle()
	p.busy.touch()
}

// Run is the watcher's wake-up: a leg's socket can take more.
func (p *pair) Run(context.Context) error {
	if !p.ended {
		p.flush(&p.client)
		p.flush(&p.device)
		p.step()
	}
	return nil
}

// step moves what each leg holds as far as the other can take and settles the pair.
func (p *pair) step() {
	if !p.ended {
		p.move(&p.client)
	}
	if !p.ended {
		p.move(&p.device)
	}
	p.settle()
}

// move sends what gnet holds of src's input to its peer, as far as the peer's out has room,
// and pauses src while anything is left.
func (p *pair) move(src *leg) {
	if src.c == nil {
		if src.dup && !src.eof {
			p.drain(src)
		}
		return
	}
	dst := src.peer
	// Before the dialled leg is enrolled (fd -1), what the client sends waits in its out: the
	// client is read, and its FIN seen (a paused socket reports none), until that is full.
	for !p.ended && !dst.shut {
		n := min(src.c.InboundBuffered(), p.buffer-len(dst.out), readChunk)
		if n <= 0 {
			break
		}
		b, _ := src.c.Peek(n)
		if src.xor != nil {
			s := p.scratch[:n]
			src.xor.XORKeyStream(s, b)
			b = s
		}
		ok := p.write(dst, b)
		_, _ = src.c.Discard(n)
		p.h.moved(src, n)
		if !ok {
			return
		}
	}
	held := src.c.InboundBuffered()
	p.h.held(src, held+len(dst.out))
	switch {
	case held > 0 && !src.paused:
		p.interest(src, 0)
	case held == 0 && src.paused:
		p.interest(src, unix.EPOLLIN|unix.EPOLLPRI)
	}
}

// drain reads src's duplicate descriptor once gnet let src go after an io.EOF (closed): what
// the kernel still holds of src's input goes to the peer's out, as far as it has room, until
// read(2) returns EOF. When the peer is full, its wake-up (it is armed) calls drain again.
//
// It never waits for the network: gnet closes with io.EOF when read(2) returned 0, or on a
// hang-up without an error, which for TCP means the remote's FIN arrived (and the socket's
// write side is shut); the kernel takes a FIN in sequence, after every byte before it. So the
// rest of src's input is in the kernel, and read(2) finds bytes, EOF, or the error of a reset.
func (p *pair) drain(src *leg) {
	dst := src.peer
	defer func() {
		if len(dst.out) == 0 {
			dst.out = nil // an idle link holds no buffer (the read below grew it)
		}
	}()
	for !p.ended && !src.eof {
		room := min(p.buffer-len(dst.out), readChunk)
		if room <= 0 {
			break
		}
		start := len(dst.out)
		dst.out = slices.Grow(dst.out, room)
		b := dst.out[start : start+room]
		n, err := unix.Read(src.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN: // no FIN after all (see above): nothing would wake the pair
			p.h.warn("socket closed by gnet without its remote's FIN; the pair ends")
			p.end()
			return
		case err != nil: // a reset: the link ends, and what it held with it
			p.end()
			return
		case n == 0:
			src.eof = true
			continue
		}
		if src.xor != nil {
			src.xor.XORKeyStream(b[:n], b[:n])
		}
		dst.out = dst.out[:start+n]
		p.h.moved(src, n)
		p.h.held(src, len(dst.out))
		if start == 0 {
			p.flush(dst)
		}
	}
}

// interest sets which events of src's socket gnet's loop waits for: reading (resumed) or none
// (paused; gnet still sees errors and hang-ups).
func (p *pair) interest(src *leg, events uint32) {
	err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, src.fd, &unix.EpollEvent{Events: events, Fd: int32(src.fd)})
	if err != nil {
		p.h.warn("pausing or resuming a socket", "err", err)
		p.end()
		return
	}
	src.paused = events == 0
	if src.paused {
		p.h.paused(src)
	}
}

// write sends b to dst's socket, keeping what the kernel does not take in dst.out (b is not
// kept). It reports false if the pair ended: the socket failed.
func (p *pair) write(dst *leg, b []byte) bool {
	if len(dst.out) == 0 && dst.fd >= 0 {
		k, err := writeFD(dst.fd, b)
		if err != nil {
			p.end()
			return false
		}
		b = b[k:]
	}
	if len(b) > 0 {
		dst.out = append(dst.out, b...)
		p.arm(dst)
	}
	return !p.ended
}

// flush writes what waits in l.out.
func (p *pair) flush(l *leg) {
	if p.ended || len(l.out) == 0 || l.fd < 0 {
		return
	}
	k, err := writeFD(l.fd, l.out)
	if err != nil {
		p.end()
		return
	}
	l.out = l.out[k:]
	if len(l.out) == 0 {
		l.out = nil // an idle link holds no buffer
		return
	}
	p.arm(l)
}

// arm asks the watcher for a wake-up once l's socket can take more.
func (p *pair) arm(l *leg) {
	if l.fd < 0 {
		return
	}
	if err := p.w.arm(l, p); err != nil {
		p.h.warn("watching a socket", "err", err)
		p.end()
	}
}

// settle passes a FIN on once every byte before it was delivered, and ends the pair when both
// directions are done.
func (p *pair) settle() {
	if p.ended {
		return
	}
	for _, l := range []*leg{&p.client, &p.device} {
		dst := l.peer
		if l.eof && !dst.shut && dst.fd >= 0 && len(dst.out) == 0 && (l.c == nil || l.c.InboundBuffered() == 0) {
			if err := unix.Shutdown(dst.fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
				p.end()
				return
			}
			dst.shut = true
		}
	}
	if p.client.eof && p.device.eof && p.client.shut && p.device.shut {
		p.end()
	}
}

// closed handles gnet closing l's socket: after io.EOF (the remote's FIN, or a hang-up), the
// pair keeps a duplicate of it for the other direction and for what the kernel still holds of
// l's input (drain); otherwise (an error, the engine stopping, or the pair's own close) the
// link ends.
func (p *pair) closed(l *leg, err error) {
	c := l.c
	l.c = nil
	p.w.forget(l)
	if p.ended {
		return
	}
	if !errors.Is(err, io.EOF) || l.eof {
		p.end()
		return
	}
	// What the pair held of l's input goes to the peer now: nothing more is read from l.
	if dst := l.peer; c.InboundBuffered() > 0 {
		b, _ := c.Peek(-1)
		if l.xor != nil {
			b = append([]byte(nil), b...)
			l.xor.XORKeyStream(b, b)
		}
		n := len(b)
		if !p.write(dst, b) {
			return
		}
		_, _ = c.Discard(n)
		p.h.moved(l, n)
	}
	fd, derr := c.Dup()
	if derr != nil {
		p.end()
		return
	}
	l.fd, l.dup, l.paused = fd, true, false
	if len(l.out) > 0 {
		p.arm(l)
	}
	p.drain(l)
	p.settle()
}

// end closes both sockets of the pair (once) and marks its link closed.
func (p *pair) end() {
	if p.ended {
		return
	}
	p.ended = true
	for _, l := range []*leg{&p.client, &p.device} {
		p.w.forget(l)
		if l.c != nil {
			_ = l.c.Close()
		}
		if l.dup {
			_ = unix.Close(l.fd)
			l.dup = false
		}
		l.fd, l.out = -1, nil
	}
	p.h.ended(p)
}

// writeFD writes b to the non-blocking socket fd as far as it takes it now.
func writeFD(fd int, b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Write(fd, b[done:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return done, nil
		case err != nil:
			return done, err
		}
		done += n
		if done < len(b) { // a short write: the socket's buffer is full, the next would be EAGAIN
			return done, nil
		}
	}
	return done, nil
}
