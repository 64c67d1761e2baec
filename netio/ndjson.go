package netio

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/ndjson"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

// ndjsonServer is NDJSON ingest: newline-delimited JSON objects over TCP, each naming its device
// in a configured field, with nothing ever sent back. Invalid lines are dropped and counted; a
// line longer than MaxLine closes the connection. The connection cap and idle timeout are the
// native listener's, and the cap counts both listeners' connections.
//
// Unlike the native listener it runs a goroutine per connection rather than on gnet. NDJSON has
// no acknowledgements, so the only way to slow a gateway down is to stop reading its socket: when
// the lines read but not yet stored reach NDJSONInflight bytes, every NDJSON reader waits, the
// kernel's receive buffers fill and TCP flow control holds the gateways back. gnet reads every
// readable socket, so lines would pile up in memory instead. Gateways are few connections with a
// lot of data each, which is what a goroutine per connection suits. The same gate holds every
// reader while the store refuses new data (Server.PauseNDJSON), so lines wait in the gateways
// rather than being read only to be refused.
type ndjsonServer struct {
	srv    *Server
	ln     net.Listener
	addr   net.Addr
	imei   bool // the identity field is "imei": identities are IMEIs, not serials
	warn   throttle.Throttle
	budget budget

	connTable[net.Conn]
}

func newNDJSONServer(srv *Server) *ndjsonServer {
	s := &ndjsonServer{
		srv:  srv,
		imei: srv.opts.IdentityField == "imei",
		warn: throttle.Throttle{Period: 10 * time.Second},
	}
	s.budget.init(int64(srv.opts.NDJSONInflight))
	return s
}

// start listens on addr and accepts in a goroutine.
func (s *ndjsonServer) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln, s.addr = ln, ln.Addr()
	s.wg.Add(1)
	go s.accept()
	return nil
}

func (s *ndjsonServer) accept() {
	defer s.wg.Done()
	s.srv.acceptAdmitted(s.ln, "ndjson", &s.warn, func(c net.Conn, remote netip.AddrPort) {
		if !s.enroll(c) {
			c.Close()
			s.srv.release(remote)
			return
		}
		go s.serve(c)
	})
}

// Read buffer sizes: a connection starts small and doubles its buffer whenever a read fills it,
// up to ndjsonMaxRead (plus room for one whole line), so an idle or slow gateway holds little and
// a busy one reads in large chunks.
const (
	ndjsonMinRead = 4 << 10
	ndjsonMaxRead = 64 << 10
)

// serve reads one connection until it ends, is idle too long, sends an over-long line, or the
// server drains or stops.
func (s *ndjsonServer) serve(c net.Conn) {
	defer s.wg.Done()
	srv := s.srv
	remote := addrPort(c.RemoteAddr())
	defer func() {
		c.Close()
		s.drop(c)
		srv.release(remote)
	}()
	idle := srv.opts.IdleTimeout
	buf := make([]byte, 0, ndjsonMinRead)
	grow := func() {
		nb := make([]byte, len(buf), 2*cap(buf))
		copy(nb, buf)
		buf = nb
	}
	scanned := 0 // bytes at the start of buf known to hold no '\n'
	for {
		if !s.budget.wait() || srv.draining.Load() {
			return
		}
		if len(buf) == cap(buf) { // a partial line fills the buffer (MaxLine bounds it)
			grow()
		}
		if idle > 0 {
			_ = c.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		if n > 0 {
			end := len(buf) + n
			if srv.draining.Load() {
				// Nothing read now could be stored before shutdown: count the lines, keep none.
				s.countShutdown(buf[:end])
				return
			}
			keep, sc, ok := s.lines(buf[:end], scanned, remote)
			if !ok {
				return
			}
			scanned = sc
			// The complete lines were copied out: move the partial one to the front.
			buf = buf[:copy(buf[:cap(buf)], buf[end-keep:end])]
			if end == cap(buf) && cap(buf) < ndjsonMaxRead { // busy: read in larger chunks
				grow()
			}
		}
		if err != nil {
			return // EOF, idle timeout, or the server closed the connection
		}
	}
}

// lines handles the complete lines at the start of buf: the valid ones go to the dispatcher,
// one call per identity, copied out in one allocation. It returns how many bytes at the end of
// buf are a partial line, how many of those are known to hold no '\n', and false if the
// connection must close (a line over MaxLine).
func (s *ndjsonServer) lines(buf []byte, scanned int, remote netip.AddrPort) (keep, keptScanned int, ok bool) {
	srv := s.srv
	st := &srv.st
	b := batches.Get().(*lineBatch)
	defer func() { batches.Put(b.reset()) }()
	done := 0
	ok = true
	for {
		line, n, err := ndjson.Next(buf[done:], srv.opts.MaxLine, scanned)
		if errors.Is(err, ndjson.ErrShort) {
			keptScanned = len(buf) - done
			break
		}
		scanned = 0
		if err != nil { // ErrTooLong: nothing more of this connection can be trusted to line up
			st.ndjsonTooLong.Add(1)
			s.dropped(remote, err)
			ok = false
			break
		}
		start := done
		done += n
		id, err := ndjson.Identity(line, srv.opts.IdentityField, b.idbuf[:0])
		switch {
		case err == nil:
			b.add(id, start, start+len(line))
		case errors.Is(err, ndjson.ErrBlank):
		case errors.Is(err, ndjson.ErrMalformed), errors.Is(err, ndjson.ErrNotObject):
			st.ndjsonMalformed.Add(1)
			s.dropped(remote, err)
		default:
			st.ndjsonIdentity.Add(1)
			s.dropped(remote, err)
		}
	}
	if len(b.lines) > 0 {
		st.ndjsonLines.Add(int64(len(b.lines)))
		b.dispatch(buf, srv.d, s.imei, remote, &s.budget)
	}
	st.bytes.Add(int64(done))
	return len(buf) - done, keptScanned, ok
}

// countShutdown counts the complete lines in buf as arrived after Drain.
func (s *ndjsonServer) countShutdown(buf []byte) {
	for rest := buf; ; {
		line, n, err := ndjson.Next(rest, s.srv.opts.MaxLine, 0)
		if err != nil {
			return
		}
		if len(line) > 0 {
			s.srv.st.ndjsonShutdown.Add(1)
		}
		rest = rest[n:]
	}
}

// dropped logs a dropped line, at most once per period per listener.
func (s *ndjsonServer) dropped(remote netip.AddrPort, err error) {
	if held, ok := s.warn.Allow(); ok {
		s.srv.log.Warn("ndjson line dropped", "remote", remote, "err", err, "dropped_since_last_log", held)
	}
}

// drain wakes readers waiting for the budget so they see the drain and close.
func (s *ndjsonServer) drain() { s.budget.wake() }

// stop closes the listener and every connection and waits for their goroutines.
func (s *ndjsonServer) stop() {
	s.closing(func(c net.Conn) { c.Close() })
	_ = s.ln.Close()
	s.budget.close()
	s.wg.Wait()
}

// budget bounds the bytes of NDJSON lines handed to the dispatcher and not yet stored (or
// refused): readers wait while it is spent, and while it is paused (the store refuses new data).
type budget struct {
	mu       sync.Mutex
	cond     sync.Cond
	used     int64
	limit    int64
	closed   bool
	paused   bool
	draining bool // a paused reader wakes to see the drain
}

func (b *budget) init(limit int64) {
	b.cond.L = &b.mu
	b.limit = limit
}

// wait blocks while the budget is spent or paused; false once it is closed.
func (b *budget) wait() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for (b.used >= b.limit || (b.paused && !b.draining)) && !b.closed {
		b.cond.Wait()
	}
	return !b.closed
}

// pause holds the readers (true) or lets them go on (false).
func (b *budget) pause(p bool) {
	b.mu.Lock()
	b.paused = p
	b.cond.Broadcast()
	b.mu.Unlock()
}

// take spends n bytes; it never blocks (the lines are already read).
func (b *budget) take(n int64) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

// give returns n bytes, waking the readers if that frees the budget.
func (b *budget) give(n int64) {
	b.mu.Lock()
	wasFull := b.used >= b.limit
	b.used -= n
	if wasFull && b.used < b.limit {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
}

// inUse is the bytes spent now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *budget) wake() {
	b.mu.Lock()
	b.draining = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

// lineBatch collects the valid lines of one read, grouped by identity in order of first
// appearance. It is pooled, so its slices and map keep their capacity between reads.
type lineBatch struct {
	groups []lineGroup
	index  map[string]int32 // identity → groups index
	lines  []lineRef        // in arrival order
	idbuf  []byte           // scratch for identities that need unescaping (never grown in place)
}

type lineGroup struct {
	id          string
	lines, size int // number of lines and their bytes
	first, next int // this group's records: recs[first:first+lines], next one to fill
	off         int // where the group's next line goes in the copy
}

type lineRef struct {
	group      int32
	start, end int32 // offsets in the read buffer (at most 64 KiB + MaxLine)
}

var batches = sync.Pool{New: func() any {
	return &lineBatch{index: make(map[string]int32), idbuf: make([]byte, 0, 2*ndjson.MaxIdentity)}
}}

func (b *lineBatch) add(id []byte, start, end int) {
	g, ok := b.index[string(id)]
	if !ok {
		g = int32(len(b.groups))
		key := string(id)
		b.index[key] = g
		b.groups = append(b.groups, lineGroup{id: key})
	}
	b.groups[g].lines++
	b.groups[g].size += end - start
	b.lines = append(b.lines, lineRef{group: g, start: int32(start), end: int32(end)})
}

// dispatch copies every line out of buf into one allocation and hands each identity its lines,
// spending their bytes from bud until the dispatcher says they are stored (bud may be nil).
func (b *lineBatch) dispatch(buf []byte, d Dispatcher, imei bool, remote netip.AddrPort, bud *budget) {
	total, first := 0, 0
	for i := range b.groups {
		g := &b.groups[i]
		g.off, g.first, g.next = total, first, first
		total += g.size
		first += g.lines
	}
	data := make([]byte, total)
	recs := make([][]byte, len(b.lines))
	for _, l := range b.lines {
		g := &b.groups[l.group]
		n := copy(data[g.off:], buf[l.start:l.end])
		recs[g.next] = data[g.off : g.off+n : g.off+n]
		g.off += n
		g.next++
	}
	if bud != nil {
		bud.take(int64(total))
	}
	for i := range b.groups {
		g := &b.groups[i]
		var done func()
		if bud != nil {
			size := int64(g.size)
			done = func() { bud.give(size) }
		}
		d.Lines(g.id, imei, remote, recs[g.first:g.first+g.lines:g.first+g.lines], done)
	}
}

// reset empties b for the next read; a map grown by an unusual read is dropped rather than
// cleared on every later read.
func (b *lineBatch) reset() *lineBatch {
	clear(b.groups) // drop the identity strings
	if len(b.groups) > 1024 {
		b.index = make(map[string]int32)
	} else {
		clear(b.index)
	}
	b.groups, b.lines = b.groups[:0], b.lines[:0]
	return b
}
