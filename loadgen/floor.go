package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/codec/ndjson"
	"github.com/fleetrelay/fleetrelay/internal/udpport"
)

// FloorOptions configure a floor: the least a server can do for the same fleet, so that the
// relay's figures can be read against what the machine allows on the same day.
//
// The ACK floor (Pipeline false) answers HELLO with WELCOME and each DATA frame (UDATA datagram)
// with its ACK on receipt, and stores nothing. The pipeline floor does the same and also
// forwards every record to SinkURL as the relay's default route would: envelopes in JSON-array
// batches of up to MaxMessages, sent after Linger at the latest, Concurrency requests in flight
// (one per lane; a device's records stay in one lane, in order), without durability. A lane holds
// at most 8 batches in memory: beyond that the floor withholds the ACKs of its connections (and
// stops reading its NDJSON connections) until delivery catches up, so the fleet's window holds
// it back and the floor's acknowledged rate cannot run ahead of its delivery for long.
type FloorOptions struct {
	Addr       string // native TCP listen address ("" : none)
	UDPAddr    string // native UDP listen address ("" : none)
	NDJSONAddr string // NDJSON listen address ("" : none); lines are read and, in the pipeline, forwarded
	// TeltonikaAddr and TeltonikaUDPAddr are Teltonika listen addresses ("": none): the IMEI
	// handshake answered 01, each AVL packet answered with its record count on receipt; the
	// pipeline floor renders each record as the relay does (teltonika_floor.go).
	TeltonikaAddr    string
	TeltonikaUDPAddr string
	Pipeline         bool
	// SinkURL is where the pipeline floor POSTs its batches (the full URL, path included).
	SinkURL     string
	MaxMessages int           // batch size (default 500)
	Linger      time.Duration // batch linger (default 20ms)
	Concurrency int           // lanes, each with one request in flight (default 4)
	EventLoops  int           // gnet event loops (default: one per CPU)
	Logger      *slog.Logger  // default: discarded
}

// FloorStats counts what a floor did.
type FloorStats struct {
	Frames    int64 `json:"frames"`    // DATA frames, UDATA datagrams and NDJSON lines taken
	Records   int64 `json:"records"`   // records in them
	Delivered int64 `json:"delivered"` // records the sink accepted (pipeline)
	Posts     int64 `json:"posts"`     // requests the sink accepted (pipeline)
	Failed    int64 `json:"failed"`    // requests that failed and were sent again (pipeline)
}

// Floor is a running floor server. Its methods are safe for concurrent use.
type Floor struct {
	o     FloorOptions
	log   *slog.Logger
	lanes []*floorLane
	next  atomic.Uint64 // lane of the next connection
	st    struct{ frames, records, delivered, posts, failed atomic.Int64 }

	tcp, udp       *floorEngine
	telTCP, telUDP *floorEngine
	ndjson         net.Listener
	ndConns        sync.Map // net.Conn → struct{}
	client         *fasthttp.Client
	warnAt         atomic.Int64 // Unix ns before which failed deliveries are not logged again
	quit           chan struct{}
	wg             sync.WaitGroup
}

var _ gnet.EventHandler = (*floorEngine)(nil)

// floorEngine is one gnet engine of the floor (TCP or UDP). Its callbacks run on event loops.
type floorEngine struct {
	gnet.BuiltinEventEngine
	f       *Floor
	network string
	tel     bool // a Teltonika listener
	eng     gnet.Engine
	addr    net.Addr
	booted  chan struct{}
	done    chan error
}

// floorConn is a TCP connection's state, touched only by its event loop.
type floorConn struct {
	hello native.Hello
	lane  *floorLane
	recs  [][]byte
	out   []byte // answers of this read, after held ones
}

// StartFloor starts the listeners o names and, for the pipeline, its lanes.
func StartFloor(o FloorOptions) (*Floor, error) {
	if o.MaxMessages <= 0 {
		o.MaxMessages = 500
	}
	if o.Linger <= 0 {
		o.Linger = 20 * time.Millisecond
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Pipeline && o.SinkURL == "" {
		return nil, errors.New("floor: the pipeline needs a sink URL")
	}
	f := &Floor{o: o, log: o.Logger.With("component", "floor"), quit: make(chan struct{})}
	if o.Pipeline {
		f.client = &fasthttp.Client{MaxConnsPerHost: o.Concurrency * 2, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
		for range o.Concurrency {
			l := &floorLane{f: f, kick: make(chan struct{}, 1)}
			f.lanes = append(f.lanes, l)
			f.wg.Add(1)
			go l.run()
		}
	}
	var err error
	if o.Addr != "" {
		if f.tcp, err = f.startEngine("tcp", o.Addr, gnet.WithTCPNoDelay(gnet.TCPNoDelay)); err != nil {
			f.Close(context.Background())
			return nil, fmt.Errorf("floor tcp %s: %w", o.Addr, err)
		}
	}
	if o.UDPAddr != "" {
		// As the relay's UDP listener does: a port no other socket shares (see internal/udpport),
		// so that a floor never answers a relay's devices, nor a relay the floor's.
		addr, release, err := udpport.Claim(o.UDPAddr)
		if err == nil {
			f.udp, err = f.startEngine("udp", addr)
			release()
		}
		if err != nil {
			f.Close(context.Background())
			return nil, fmt.Errorf("floor udp %s: %w", o.UDPAddr, err)
		}
	}
	if err := f.startTeltonika(); err != nil {
		f.Close(context.Background())
		return nil, err
	}
	if o.NDJSONAddr != "" {
		if f.ndjson, err = net.Listen("tcp", o.NDJSONAddr); err != nil {
			f.Close(context.Background())
			return nil, fmt.Errorf("floor ndjson %s: %w", o.NDJSONAddr, err)
		}
		f.wg.Add(1)
		go f.acceptNDJSON()
	}
	return f, nil
}

func (f *Floor) startEngine(network, addr string, extra ...gnet.Option) (*floorEngine, error) {
	return f.startEngineOf(&floorEngine{network: network}, addr, extra...)
}

func (f *Floor) startEngineOf(e *floorEngine, addr string, extra ...gnet.Option) (*floorEngine, error) {
	network := e.network
	e.f, e.booted, e.done = f, make(chan struct{}), make(chan error, 1)
	opts := append([]gnet.Option{gnet.WithMulticore(true), gnet.WithReuseAddr(true), gnet.WithLogger(floorGnetLogger{f.log})}, extra...)
	if f.o.EventLoops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(f.o.EventLoops))
	}
	go func() { e.done <- gnet.Run(e, network+"://"+addr, opts...) }()
	select {
	case <-e.booted:
		return e, nil
	case err := <-e.done:
		if err == nil {
			err = errors.New("engine stopped before it started")
		}
		return nil, err
	}
}

// Addr, UDPAddr and NDJSONAddr are the bound addresses (nil when not listening).
func (f *Floor) Addr() net.Addr    { return engineAddr(f.tcp) }
func (f *Floor) UDPAddr() net.Addr { return engineAddr(f.udp) }

// TeltonikaAddr and TeltonikaUDPAddr are the Teltonika listeners' bound addresses (nil when
// not listening).
func (f *Floor) TeltonikaAddr() net.Addr    { return engineAddr(f.telTCP) }
func (f *Floor) TeltonikaUDPAddr() net.Addr { return engineAddr(f.telUDP) }
func (f *Floor) NDJSONAddr() net.Addr {
	if f.ndjson == nil {
		return nil
	}
	return f.ndjson.Addr()
}

func engineAddr(e *floorEngine) net.Addr {
	if e == nil {
		return nil
	}
	return e.addr
}

// Stats returns the floor's counters.
func (f *Floor) Stats() FloorStats {
	return FloorStats{Frames: f.st.frames.Load(), Records: f.st.records.Load(), Delivered: f.st.delivered.Load(),
		Posts: f.st.posts.Load(), Failed: f.st.failed.Load()}
}

// Close stops the listeners, sends what the lanes hold (bounded by ctx) and waits for every
// goroutine of the floor.
func (f *Floor) Close(ctx context.Context) error {
	var errs []error
	for _, e := range []*floorEngine{f.tcp, f.udp, f.telTCP, f.telUDP} {
		if e != nil {
			if err := e.eng.Stop(ctx); err != nil {
				errs = append(errs, err)
			}
			<-e.done
		}
	}
	if f.ndjson != nil {
		_ = f.ndjson.Close()
		f.ndConns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
	}
	close(f.quit)
	stop := context.AfterFunc(ctx, func() {
		for _, l := range f.lanes {
			l.abandon.Store(true)
		}
	})
	f.wg.Wait()
	stop()
	return errors.Join(errs...)
}

func (e *floorEngine) OnBoot(eng gnet.Engine) gnet.Action {
	e.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			var ap netip.AddrPort
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				ap = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
			case *unix.SockaddrInet6:
				ap = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
			}
			if e.network == "udp" {
				e.addr = net.UDPAddrFromAddrPort(ap)
			} else {
				e.addr = net.TCPAddrFromAddrPort(ap)
			}
		}
		_ = unix.Close(fd)
	}
	close(e.booted)
	return gnet.None
}

func (e *floorEngine) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	var lane *floorLane
	if l := e.f.lanes; len(l) > 0 {
		lane = l[e.f.next.Add(1)%uint64(len(l))]
	}
	if e.tel {
		c.SetContext(&floorTelConn{lane: lane})
	} else {
		c.SetContext(&floorConn{lane: lane})
	}
	return nil, gnet.None
}

// OnTraffic answers every complete frame at once: WELCOME for HELLO, an ACK per DATA frame (all
// of one read in one write); the pipeline floor renders each record into its lane's batch.
func (e *floorEngine) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Peek(-1)
	switch fc := c.Context().(type) {
	case *floorConn:
		return e.f.tcpTraffic(c, fc, buf)
	case *floorTelConn:
		return e.f.telTraffic(c, fc, buf)
	}
	if e.tel {
		return e.f.telDatagram(c, buf)
	}
	// UDP: one UDATA per datagram, answered with its ACK to the source.
	typ, body, n, err := native.Next(buf, native.MaxFrameLimit)
	if err != nil || n != len(buf) || typ != native.TypeUData {
		return gnet.None
	}
	u, err := native.ParseUData(body, nil)
	if err != nil {
		return gnet.None
	}
	e.f.took(1, len(u.Records))
	if l := e.f.laneOf(u.Identity); l != nil {
		id := string(u.Identity)
		l.add(time.Now().UnixMilli(), id, id, "", u.Seq, u.Records)
	}
	_, _ = c.Write(native.AppendAck(nil, u.Seq))
	return gnet.None
}

func (f *Floor) tcpTraffic(c gnet.Conn, fc *floorConn, buf []byte) gnet.Action {
	done := 0
	now := int64(0)
	for {
		typ, body, n, err := native.Next(buf[done:], native.MaxFrameLimit)
		if errors.Is(err, native.ErrShort) {
			break
		}
		if err != nil {
			return gnet.Close
		}
		done += n
		switch typ {
		case native.TypeHello:
			if fc.hello, err = native.ParseHello(body); err != nil {
				return gnet.Close
			}
			fc.out = native.AppendWelcome(fc.out, &native.Welcome{Ack: "persist", MaxFrame: native.DefaultMaxFrame})
		case native.TypeData:
			seq, recs, err := native.ParseData(body, fc.recs[:0])
			if err != nil {
				return gnet.Close
			}
			f.took(1, len(recs))
			if fc.lane != nil {
				if now == 0 {
					now = time.Now().UnixMilli()
				}
				fc.lane.add(now, fc.hello.Identity(), fc.hello.Serial, fc.hello.IMEI, seq, recs)
			}
			clear(recs) // keep no reference into gnet's buffer past the callback
			fc.recs = recs[:0]
			fc.out = native.AppendAck(fc.out, seq)
		case native.TypePing:
			fc.out = native.AppendFrame(fc.out, native.TypePong, body)
		}
	}
	if done > 0 {
		_, _ = c.Discard(done)
	}
	if len(fc.out) > 0 && (fc.lane == nil || !fc.lane.hold(c)) {
		_, _ = c.Write(fc.out)
		fc.out = fc.out[:0]
	}
	return gnet.None
}

func (f *Floor) took(frames, records int) {
	f.st.frames.Add(int64(frames))
	f.st.records.Add(int64(records))
}

// laneOf picks a datagram's or an NDJSON identity's lane (nil without a pipeline).
func (f *Floor) laneOf(id []byte) *floorLane {
	if len(f.lanes) == 0 {
		return nil
	}
	h := uint32(2166136261)
	for _, b := range id {
		h = (h ^ uint32(b)) * 16777619
	}
	return f.lanes[h%uint32(len(f.lanes))]
}

// acceptNDJSON reads each NDJSON connection in a goroutine of its own, as the relay does.
func (f *Floor) acceptNDJSON() {
	defer f.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := f.ndjson.Accept()
		if err != nil {
			return
		}
		f.ndConns.Store(c, struct{}{})
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer f.ndConns.Delete(c)
			defer c.Close()
			f.readNDJSON(c)
		}()
	}
}

// readNDJSON takes the lines of one connection: each line is its identity's next seq (index 0).
func (f *Floor) readNDJSON(c net.Conn) {
	const maxLine = 64 << 10
	r := bufio.NewReaderSize(c, 256<<10)
	seqs := map[string]uint64{}
	var pending []byte
	var id []byte
	one := make([][]byte, 1)
	for {
		for l := range f.lanes { // delivery behind: stop reading, as the relay does (TCP flow control)
			for f.lanes[l].full() {
				select {
				case <-f.quit:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
		chunk, err := readChunk(r, pending)
		if len(chunk) == 0 && err != nil {
			return
		}
		now := time.Now().UnixMilli()
		rest := chunk
		for {
			line, n, lerr := ndjson.Next(rest, maxLine, 0)
			if errors.Is(lerr, ndjson.ErrTooLong) {
				return // as the relay does: a line over the limit closes the connection
			}
			if lerr != nil {
				break
			}
			rest = rest[n:]
			ident, ierr := ndjson.Identity(line, "serial", id[:0])
			if ierr != nil {
				continue
			}
			f.took(1, 1)
			if l := f.laneOf(ident); l != nil {
				key := string(ident)
				seqs[key]++
				one[0] = line
				l.add(now, key, key, "", seqs[key], one)
			}
		}
		pending = append(pending[:0], rest...)
		if err != nil {
			return
		}
	}
}

// readChunk returns pending followed by what r has buffered (at least one read).
func readChunk(r *bufio.Reader, pending []byte) ([]byte, error) {
	if _, err := r.Peek(1); err != nil {
		return pending, err
	}
	b, _ := r.Peek(r.Buffered())
	out := append(pending, b...)
	_, _ = r.Discard(len(b))
	return out, nil
}

// floorLane batches the envelopes of its devices and sends one batch at a time.
type floorLane struct {
	f       *Floor
	kick    chan struct{}
	abandon atomic.Bool

	mu      sync.Mutex
	body    []byte // the open batch: "[" and its envelopes
	n       int    // messages in body
	first   time.Time
	ready   []floorBatch // full batches, closed with "]"
	spare   [][]byte
	waiters map[gnet.Conn]struct{} // connections whose ACKs are held: woken when the lane drains
}

// floorLaneBatches is how many full batches a lane holds before it holds ACKs back.
const floorLaneBatches = 8

// overLocked reports whether the lane holds its maximum.
func (l *floorLane) overLocked() bool { return len(l.ready) >= floorLaneBatches }

// hold reports whether c's answers must wait because the lane is full; c is then woken (its
// OnTraffic runs) once the lane has room again.
func (l *floorLane) hold(c gnet.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.overLocked() {
		return false
	}
	if l.waiters == nil {
		l.waiters = map[gnet.Conn]struct{}{}
	}
	l.waiters[c] = struct{}{}
	return true
}

// full reports whether the lane holds its maximum (NDJSON readers wait while it does).
func (l *floorLane) full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.overLocked()
}

// release wakes the connections waiting for room, if there is room.
func (l *floorLane) release() {
	l.mu.Lock()
	var ws map[gnet.Conn]struct{}
	if !l.overLocked() {
		ws, l.waiters = l.waiters, nil
	}
	l.mu.Unlock()
	for c := range ws {
		_ = c.Wake(nil) // a closed connection has nothing to answer
	}
}

// add renders records as envelopes into the open batch; it never blocks on the network.
func (l *floorLane) add(receivedAt int64, device, serial, imei string, seq uint64, recs [][]byte) {
	m := envelope.Message{Device: device, Serial: serial, IMEI: imei, Seq: seq, ReceivedAt: receivedAt}
	kick := false
	l.mu.Lock()
	for i, r := range recs {
		if l.n == 0 {
			if k := len(l.spare); k > 0 {
				l.body, l.spare = l.spare[k-1][:0], l.spare[:k-1]
			}
			l.body = append(l.body[:0], '[')
			l.first = time.Now()
		} else {
			l.body = append(l.body, ',')
		}
		m.Index, m.Data = i, r
		l.body = envelope.Append(l.body, &m, 0)
		if l.n++; l.n >= l.f.o.MaxMessages {
			l.ready = append(l.ready, floorBatch{append(l.body, ']'), l.n})
			l.body, l.n, kick = nil, 0, true
		}
	}
	l.mu.Unlock()
	if kick {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// take returns the next batch to send: a full one, or the open one once it lingered (or all
// of it when flush is set).
func (l *floorLane) take(flush bool) (floorBatch, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ready) > 0 {
		b := l.ready[0]
		l.ready = l.ready[1:]
		return b, true
	}
	if l.n > 0 && (flush || time.Since(l.first) >= l.f.o.Linger) {
		b := floorBatch{append(l.body, ']'), l.n}
		l.body, l.n = nil, 0
		return b, true
	}
	return floorBatch{}, false
}

// floorBatch is a batch body and the number of messages in it.
type floorBatch struct {
	body []byte
	n    int
}

func (l *floorLane) run() {
	defer l.f.wg.Done()
	tick := time.NewTicker(max(l.f.o.Linger/4, time.Millisecond))
	defer tick.Stop()
	for {
		flush := false
		select {
		case <-l.kick:
		case <-tick.C:
		case <-l.f.quit:
			flush = true
		}
		for b, ok := l.take(flush); ok; b, ok = l.take(flush) {
			l.send(b)
			l.mu.Lock()
			l.spare = append(l.spare, b.body[:0])
			l.mu.Unlock()
			l.release()
		}
		if flush {
			return
		}
	}
}

// send POSTs one batch until the sink accepts it (or Close gives up on it).
func (l *floorLane) send(b floorBatch) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(l.f.o.SinkURL)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(b.body)
	for !l.abandon.Load() {
		err := l.f.client.Do(req, resp)
		if err == nil && resp.StatusCode() >= 200 && resp.StatusCode() < 300 {
			l.f.st.posts.Add(1)
			l.f.st.delivered.Add(int64(b.n))
			return
		}
		l.f.st.failed.Add(1)
		if now, next := time.Now().UnixNano(), l.f.warnAt.Load(); now >= next && l.f.warnAt.CompareAndSwap(next, now+int64(10*time.Second)) {
			l.f.log.Warn("floor delivery failed; sending again (one line per 10 s)", "status", resp.StatusCode(), "err", err, "failures", l.f.st.failed.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RunFloor runs a floor until ctx ends (loadgen floor).
func RunFloor(ctx context.Context, o FloorOptions, stdout io.Writer) error {
	f, err := StartFloor(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "floor listening: tcp %v udp %v ndjson %v teltonika %v teltonika-udp %v pipeline %t\n",
		f.Addr(), f.UDPAddr(), f.NDJSONAddr(), f.TeltonikaAddr(), f.TeltonikaUDPAddr(), o.Pipeline)
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = f.Close(cctx)
	st := f.Stats()
	fmt.Fprintf(stdout, "frames %d, records %d, delivered %d in %d requests (%d failed)\n", st.Frames, st.Records, st.Delivered, st.Posts, st.Failed)
	return err
}

// floorGnetLogger routes gnet's logs through slog.
type floorGnetLogger struct{ l *slog.Logger }

func (g floorGnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g floorGnetLogger) Infof(f string, a ...any)  { g.l.Info(fmt.Sprintf(f, a...)) }
func (g floorGnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g floorGnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...)) }
func (g floorGnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...)) }
