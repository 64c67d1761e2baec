package netio

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetrelay/fleetrelay/codec/ndjson"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

var _ gnet.EventHandler = (*ndjsonServer)(nil)

// ndjsonServer is the gnet handler of NDJSON ingest: newline-delimited JSON objects over TCP, each
// naming its device in a configured field, with nothing ever sent back. Invalid lines are dropped
// and counted; a line longer than MaxLine closes the connection. The connection cap and idle
// timeout are the native listener's, and the cap counts both listeners' connections.
type ndjsonServer struct {
	gnet.BuiltinEventEngine
	engineHolder
	srv  *Server
	imei bool // the identity field is "imei": identities are IMEIs, not serials
	warn throttle.Throttle

	mu    sync.Mutex // guards conns; taken on open/close and once per tick, never on the data path
	conns map[*ndjsonConn]struct{}
}

// ndjsonConn is one NDJSON connection. scanned is owned by the connection's event loop; last is
// read by the ticker.
type ndjsonConn struct {
	c       gnet.Conn
	remote  netip.AddrPort
	scanned int          // bytes at the start of the unread input known to hold no '\n'
	last    atomic.Int64 // unix nanos of the last read
}

func newNDJSONServer(srv *Server) *ndjsonServer {
	return &ndjsonServer{
		srv:   srv,
		imei:  srv.opts.IdentityField == "imei",
		warn:  throttle.Throttle{Period: 10 * time.Second},
		conns: make(map[*ndjsonConn]struct{}),
	}
}

func (s *ndjsonServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.boot(eng, "tcp")
	return gnet.None
}

func (s *ndjsonServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if !s.srv.admit() {
		return nil, gnet.Close // NDJSON has no way to say why
	}
	nc := &ndjsonConn{c: c, remote: addrPort(c.RemoteAddr())}
	nc.last.Store(time.Now().UnixNano())
	c.SetContext(nc)
	s.mu.Lock()
	s.conns[nc] = struct{}{}
	s.mu.Unlock()
	return nil, gnet.None
}

func (s *ndjsonServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	nc, ok := c.Context().(*ndjsonConn)
	if !ok {
		return gnet.None
	}
	s.srv.st.conns.Add(-1)
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
	return gnet.None
}

// OnTraffic splits what arrived into lines, checks each and hands the valid ones to the
// dispatcher: one call per identity, their bytes copied out of gnet's buffer in one allocation.
// A partial line stays in gnet's buffer until the rest arrives.
func (s *ndjsonServer) OnTraffic(c gnet.Conn) gnet.Action {
	nc := c.Context().(*ndjsonConn)
	srv := s.srv
	st := &srv.st
	maxLine := srv.opts.MaxLine
	buf, _ := c.Peek(-1)
	nc.last.Store(time.Now().UnixNano())
	if srv.draining.Load() {
		// Nothing read now could be stored before shutdown: count the lines, leave them unread.
		for rest := buf; ; {
			line, n, err := ndjson.Next(rest, maxLine, 0)
			if err != nil {
				break
			}
			if len(line) > 0 {
				st.ndjsonShutdown.Add(1)
			}
			rest = rest[n:]
		}
		return gnet.Close
	}

	b := batches.Get().(*lineBatch)
	done, scanned := 0, nc.scanned
	action := gnet.None
	for {
		line, n, err := ndjson.Next(buf[done:], maxLine, scanned)
		if errors.Is(err, ndjson.ErrShort) {
			nc.scanned = len(buf) - done
			break
		}
		scanned = 0
		if err != nil { // ErrTooLong: nothing more of this connection can be trusted to line up
			st.ndjsonTooLong.Add(1)
			s.dropped(nc, err)
			action = gnet.Close
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
			s.dropped(nc, err)
		default:
			st.ndjsonIdentity.Add(1)
			s.dropped(nc, err)
		}
	}
	if len(b.lines) > 0 {
		st.ndjsonLines.Add(int64(len(b.lines)))
		b.dispatch(buf, srv.d, s.imei)
	}
	batches.Put(b.reset())
	if done > 0 {
		st.bytes.Add(int64(done))
		_, _ = c.Discard(done)
	}
	return action
}

// dropped logs a dropped line, at most once per period per listener.
func (s *ndjsonServer) dropped(nc *ndjsonConn, err error) {
	if held, ok := s.warn.Allow(); ok {
		s.srv.log.Warn("ndjson line dropped", "remote", nc.remote, "err", err, "dropped_since_last_log", held)
	}
}

func (s *ndjsonServer) OnTick() (time.Duration, gnet.Action) {
	idle := s.srv.opts.IdleTimeout
	if idle <= 0 {
		return time.Second, gnet.None
	}
	now := time.Now().UnixNano()
	s.mu.Lock()
	for nc := range s.conns {
		if now-nc.last.Load() > idle.Nanoseconds() {
			_ = nc.c.Close()
		}
	}
	s.mu.Unlock()
	return max(min(idle/4, time.Second), 10*time.Millisecond), gnet.None
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

// dispatch copies every line out of buf into one allocation and hands each identity its lines.
func (b *lineBatch) dispatch(buf []byte, d Dispatcher, imei bool) {
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
	for i := range b.groups {
		g := &b.groups[i]
		d.Lines(g.id, imei, recs[g.first:g.first+g.lines:g.first+g.lines])
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
