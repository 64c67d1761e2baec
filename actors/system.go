// Package actors owns the relay's moving parts between the sockets and the store: one
// protoactor-go actor per connected device identity (sequence dedupe across reconnects, seqs for
// NDJSON lines, the store append, acknowledgements) and one per route (lanes by destination, batching, delivery,
// marking what was delivered). It defines the Journal and Sender it needs; the composition root
// supplies them.
package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Journal is what the actors need from the durable store.
type Journal interface {
	Append(f *store.Frame, done func(err error))
	LastSeq(device string) uint64
	DeliveredSeq(device string) uint64
	MarkDelivered(route uint16, refs []store.Ref)
	Pending(route uint16, after uint64, fn func(seg *store.Segment, pos []uint32) bool) error
}

// Sender delivers one batch until it succeeds or ctx ends (see deliver.Deliver).
type Sender func(ctx context.Context, p *deliver.Policy, req *deliver.Request,
	build func(attempt int, req *deliver.Request) error, onResult func(attempt int, res deliver.Result)) (int, error)

// Ack modes.
const (
	AckPersist  = "persist"
	AckDelivery = "delivery"
)

// Options configure the actor system.
type Options struct {
	AckMode  string // AckPersist or AckDelivery
	MaxFrame int    // announced in WELCOME
	Routes   []*Route
	Journal  Journal
	Send     Sender
	Logger   *slog.Logger
	Metrics  *Metrics // may be nil
	// DeviceIdle stops an idle device actor with no connection after this long (default 1m).
	DeviceIdle time.Duration
	// MaxQueued caps the records a route keeps in memory; beyond it the route pages from the
	// store (default 262144).
	MaxQueued int
}

// System runs the device and route actors. It implements netio.Dispatcher; its methods are
// safe for concurrent use and never block.
type System struct {
	opts   Options
	log    *slog.Logger
	as     *actor.ActorSystem
	root   *actor.RootContext
	disp   *workerDispatcher
	routes []*routeRef // indexed like opts.Routes
	byID   map[uint16]*routeRef
	allIDs []uint16 // IDs of enabled routes: every frame goes to all of them

	mu      sync.RWMutex // guards devices
	devices map[string]*deviceEntry

	ctx    context.Context // cancelled by Stop: ends deliveries
	cancel context.CancelFunc
	wg     sync.WaitGroup // delivery goroutines

	linesLost    atomic.Int64 // NDJSON lines the store refused
	linesRefused atomic.Int64 // NDJSON lines refused: their identity was connected natively
	lostLog      throttle.Throttle
}

type routeRef struct {
	r   *Route
	pid *actor.PID
}

var _ netio.Dispatcher = (*System)(nil)

// New starts the actor system and one actor per route; each route actor first recovers what the
// store holds for it.
func New(opts Options) *System {
	if opts.DeviceIdle <= 0 {
		opts.DeviceIdle = time.Minute
	}
	if opts.MaxQueued <= 0 {
		opts.MaxQueued = 1 << 18
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger.With("component", "actors")
	as := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return log.With("lib", "protoactor")
	}))
	s := &System{
		opts:    opts,
		log:     log,
		as:      as,
		root:    as.Root,
		disp:    newWorkerDispatcher(256, 300),
		byID:    make(map[uint16]*routeRef),
		devices: make(map[string]*deviceEntry),
		lostLog: throttle.Throttle{Period: 10 * time.Second},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, r := range opts.Routes {
		ref := &routeRef{r: r}
		s.routes = append(s.routes, ref)
		s.byID[r.ID] = ref
		s.allIDs = append(s.allIDs, r.ID)
		ra := newRouteActor(s, r)
		ref.pid = s.root.Spawn(actor.PropsFromProducer(func() actor.Actor { return ra }, actor.WithDispatcher(s.disp)))
	}
	return s
}

// OnCommit is the store's commit hook: it wakes every route the segment has records for.
func (s *System) OnCommit(seg *store.Segment) {
	if seg == nil || len(seg.Frames) == 0 {
		return
	}
	var seen [4]uint64 // route IDs < 256 tracked in a bitmap; larger ones always sent
	for _, f := range seg.Frames {
		for _, id := range f.Routes {
			if id < 256 {
				if seen[id/64]&(1<<(id%64)) != 0 {
					continue
				}
				seen[id/64] |= 1 << (id % 64)
			}
			if ref := s.byID[id]; ref != nil {
				s.root.Send(ref.pid, &segmentMsg{seg: seg})
			}
		}
	}
}

// OnDelivered is the store's delivered-watermark hook (ack mode delivery).
func (s *System) OnDelivered(device string, seq uint64) {
	if s.opts.AckMode != AckDelivery {
		return
	}
	if e := s.lookup(device, false); e != nil {
		s.send(e, &deliveredMsg{seq: seq})
	}
}

// Stop gives in-flight deliveries until ctx ends, then cancels them and stops every actor.
func (s *System) Stop(ctx context.Context) error {
	done := make(chan struct{})
	for _, ref := range s.routes {
		s.root.Send(ref.pid, drainMsg{})
	}
	go func() {
		for _, ref := range s.routes {
			_ = s.root.RequestFuture(ref.pid, idleQuery{}, time.Hour).Wait()
		}
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("deliveries still in flight at shutdown: %w", ctx.Err())
	}
	s.cancel()
	s.wg.Wait()
	for _, ref := range s.routes {
		_ = s.root.StopFuture(ref.pid).Wait()
	}
	s.mu.Lock()
	for _, e := range s.devices {
		s.root.Stop(e.pid)
	}
	s.devices = map[string]*deviceEntry{}
	s.mu.Unlock()
	s.as.Shutdown()
	s.disp.close()
	return err
}

// deviceEntry links an identity to its actor. pending counts messages sent but not yet
// processed, so an actor retires only when nothing is on its way to it.
type deviceEntry struct {
	id       string
	pid      *actor.PID
	pending  atomic.Int64
	inflight atomic.Int64  // frames appended but not yet committed
	stored   atomic.Uint64 // highest seq committed (persist acks read it)
	ackDue   atomic.Bool   // an ackMsg is on its way
}

// lookup finds (and with spawn, creates) the entry for id and counts one message to it.
func (s *System) lookup(id string, spawn bool) *deviceEntry {
	s.mu.RLock()
	e := s.devices[id]
	if e != nil {
		e.pending.Add(1)
	}
	s.mu.RUnlock()
	if e != nil || !spawn {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.devices[id]; e == nil {
		e = &deviceEntry{id: id}
		e.stored.Store(s.opts.Journal.LastSeq(id))
		da := &deviceActor{sys: s, e: e}
		e.pid = s.root.Spawn(actor.PropsFromProducer(func() actor.Actor { return da }, actor.WithDispatcher(s.disp)))
		s.devices[id] = e
	}
	e.pending.Add(1)
	return e
}

// send delivers a message counted by lookup.
func (s *System) send(e *deviceEntry, msg any) { s.root.Send(e.pid, msg) }

// retire removes e if nothing is on its way to it; the caller then stops the actor.
func (s *System) retire(e *deviceEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.pending.Load() != 0 || e.inflight.Load() != 0 || s.devices[e.id] != e {
		return false
	}
	delete(s.devices, e.id)
	return true
}

// Open implements netio.Dispatcher.
func (s *System) Open(c netio.Conn, h *native.Hello) (netio.Session, error) {
	e := s.lookup(h.Identity(), true)
	s.send(e, &helloMsg{conn: c, hello: *h})
	return &session{sys: s, e: e, conn: c}, nil
}

// UData implements netio.Dispatcher.
func (s *System) UData(c netio.Conn, u *native.UData, frame []byte) {
	id := string(u.Identity)
	e := s.lookup(id, true)
	s.send(e, &dataMsg{conn: c, seq: u.Seq, records: u.Records, udpIdentity: id})
}

// Lines implements netio.Dispatcher: one message per identity and read, however many lines.
func (s *System) Lines(identity string, imei bool, records [][]byte) {
	e := s.lookup(identity, true)
	s.send(e, &linesMsg{identity: identity, imei: imei, records: records})
}

// LinesLost is how many NDJSON lines the store refused. With no acknowledgements in NDJSON they
// are lost: the gateway never learns of it. Safe for concurrent use.
func (s *System) LinesLost() int64 { return s.linesLost.Load() }

// LinesRefused is how many NDJSON lines were refused because their identity had a native
// connection at the time (see the device actor). Safe for concurrent use.
func (s *System) LinesRefused() int64 { return s.linesRefused.Load() }

// session is the netio.Session of one TCP connection.
type session struct {
	sys  *System
	e    *deviceEntry
	conn netio.Conn
}

func (ss *session) Data(seq uint64, records [][]byte, _ []byte) {
	ss.e.pending.Add(1)
	ss.sys.send(ss.e, &dataMsg{conn: ss.conn, seq: seq, records: records})
}

func (ss *session) Result(r *native.Result, _ []byte) {
	ss.sys.log.Debug("command result", "device", ss.e.id, "task", r.Task, "code", r.Code)
}

func (ss *session) Closed() {
	ss.e.pending.Add(1)
	ss.sys.send(ss.e, &closedMsg{conn: ss.conn})
}

// Quiesce waits until every frame handed to the journal was committed (or refused) and its
// acknowledgement handed to the connection, so closing sockets afterwards loses no ACK.
func (s *System) Quiesce(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		busy := false
		s.mu.RLock()
		for _, e := range s.devices {
			if e.inflight.Load() != 0 || e.pending.Load() != 0 {
				busy = true
				break
			}
		}
		s.mu.RUnlock()
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devices still busy at shutdown: %w", ctx.Err())
		case <-t.C:
		}
	}
}
