// Package actors owns the relay's moving parts between the sockets and the store: one
// protoactor-go actor per active device identity (sequence dedupe across reconnects, seqs for
// NDJSON lines, the store append, acknowledgements; a connected device that sends nothing holds
// only a small registry entry, and its actor is spawned when it sends data) and one per route
// (lanes by destination, batching, scheduling batches, marking what was delivered or
// dead-lettered), and the live changes of both: routes added, updated, paused and removed, and
// device metadata set, while frames flow (live.go), and the writing of commands to connected
// devices (native COMMANDs, Teltonika Codec 12), and the Teltonika trackers' per-packet answers
// and resend dedupe (teltonika.go). It defines the Journal, the Deliverer and the Commands it
// needs (the delivery pipeline that renders, signs and sends a batch, and the durable tasks, live
// elsewhere); the composition root supplies them.
package actors

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Journal is what the actors need from the durable store.
type Journal interface {
	Append(f *store.Frame, done func(err error))
	LastSeq(device string) uint64
	DeliveredSeq(device string) uint64
	// WindowSeq tells whether seq of device is stored (or counts as stored) and delivered, for
	// the dedupe of UDP datagrams (see store.Store.WindowSeq).
	WindowSeq(device string, seq uint64) (stored, delivered bool)
	MarkDelivered(route uint16, refs []store.Ref)
	Pending(route uint16, after uint64, fn func(seg *store.Segment, pos []uint32) bool) error
	// Spilled says the route holds no records of segments above upTo in memory: it reads them
	// back with Pending.
	Spilled(route uint16, upTo uint64)
	// Dead letters (see store.DeadLetter).
	DeadLetter(d *store.DeadLetter, finished []uint64) error
	Replaying(route uint16, fn func(*store.DeadLetter) bool) error
	ReplayDone(route uint16, ids []uint64) error
	Replay(route uint16) (letters, records int, err error)
	// What a route holds, for removing it (see store.Store).
	Backlog(route uint16) int
	DeadLetterCount(route uint16) int
	ReplayRecords(route uint16) (int, error)
	// DiscardRoute and ReviveRoute: see store.Store.DiscardRoute.
	DiscardRoute(route uint16, late func(records int)) (records, deadLetters int, err error)
	ReviveRoute(route uint16)
	// Forget drops the state of a device with nothing pending (see store.Store.Forget): called
	// for an identity the registry does not know once MaxUnknown others retired after it, with
	// none of its frames on their way.
	Forget(device string) bool
}

// SeqLoader is implemented by a Journal whose devices' lastSeq may be held elsewhere: the
// cluster's journal, where a device may have sent through another node. For an identity it does
// not know, the device actor loads the lastSeq before it answers a HELLO or decides a frame's
// seq (device.go, "loading"). store.Store does not implement it: one node knows every device.
type SeqLoader interface {
	// Known reports whether the Journal's LastSeq of device is authoritative. It must not
	// block (it is called under System.mu).
	Known(device string) bool
	// LoadLastSeq returns device's lastSeq from where the Journal keeps it, which LastSeq then
	// answers; it fails within a few seconds when that cannot be read.
	LoadLastSeq(ctx context.Context, device string) (uint64, error)
}

// Commands is what the device actors need of the relay's commands to devices. Its methods must
// not block (no disk): they are called from actor turns, under System.mu, and from the store's
// commit callbacks.
type Commands interface {
	// Due calls write with each command to write to device's connection, which got its
	// WELCOME, and marks them sent: with resend (a new connection) every unfinished one,
	// otherwise only those not sent yet. payload is valid only during the call.
	Due(device string, resend bool, write func(task uint64, payload []byte))
	// Result completes a task with the device's RESULT, once that RESULT is stored.
	Result(device string, task uint64, code uint8, data []byte)
}

// Ack modes.
const (
	AckPersist  = "persist"
	AckDelivery = "delivery"
)

// Options configure the actor system.
type Options struct {
	AckMode  string                 // AckPersist or AckDelivery
	MaxFrame int                    // announced in WELCOME
	Routes   []*Route               // the routes at start; PutRoute and RemoveRoute change them
	Fleet    map[string]*DeviceMeta // device metadata by identity at start (may be nil); see SetDevice
	Journal  Journal
	Logger   *slog.Logger
	Metrics  *Metrics // may be nil
	// DeviceIdle retires a device actor that received nothing for this long, up to 2.5 times
	// that (default 1m): a device with a TCP connection keeps only its registry entry until it
	// sends again, one without is forgotten.
	DeviceIdle time.Duration
	// MaxUnknown caps the device entries of identities without metadata (neither in the
	// config's fleet nor set by SetDevice: the registry does not know them), which any client can
	// make up. At the cap a new such identity is refused until one retires: its HELLO gets ERROR
	// 503, its datagrams no answer, its NDJSON lines are dropped. Once MaxUnknown others retired
	// after one, the store forgets it (Journal.Forget). 0: no cap, nothing forgotten.
	MaxUnknown int
	// MaxQueued caps the records a route keeps in memory; beyond it the route pages from the
	// store (default 262144).
	MaxQueued int
	// Auth says which devices Open and UData admit: AuthOpen (""), AuthKnown or AuthToken (see
	// auth.go). AuthLimit, if not nil, limits failed token checks per source address.
	Auth      string
	AuthLimit AuthLimiter
	// Commands are the durable commands to devices (internal/tasks); nil: none are sent.
	Commands Commands
	// Clock is what the route actors read the time from and arm their timers with (linger,
	// retention, retries of dead-letter writes); nil: the wall clock. It must be safe for
	// concurrent use.
	Clock Clock
	// AddressChanged, if set, is told a device's identity when its last known address or
	// transport (Device's Remote and Transport) changed: in cluster mode the relay records
	// which node holds the device. It is called on the goroutine that saw the change — an
	// event loop, an actor, an NDJSON connection's — so it must not block; read the new address
	// with Device.
	AddressChanged func(identity string)
}

// System runs the device and route actors. It implements netio.Dispatcher; its methods are
// safe for concurrent use and never block.
type System struct {
	opts   Options
	loader SeqLoader // the Journal, if it is one; nil: LastSeq is always authoritative
	log    *slog.Logger
	clock  Clock
	as     *actor.ActorSystem
	root   *actor.RootContext
	disp   *workerDispatcher

	// table is the routing table, replaced whole by PutRoute and RemoveRoute (under routesMu):
	// the per-frame path reads it without a lock.
	table    atomic.Pointer[routeTable]
	routesMu sync.Mutex // serialises changes of table; stopped
	stopped  bool       // Stop ran: routes are no longer added

	// fleet is the device metadata by upper-cased identity (*DeviceMeta): Options.Fleet, then
	// SetDevice.
	fleet sync.Map
	// secrets are the custom fields that are secrets (format.Secrets, SetSecrets): set on every
	// message rendered, so that the formats leave them out of the bodies.
	secrets atomic.Uint32

	mu      sync.RWMutex // guards devices, folded, gone, dormant entries' state and every entry's wake and retirement
	devices map[string]*deviceEntry
	folded  map[string]*deviceEntry // devices by upper-cased identity (Device's lookup)
	gone    map[string]goneDevice   // what Device shows of retired entries, by upper-cased identity
	actors  atomic.Int64            // device actors alive
	unknown int                     // entries of identities without metadata (MaxUnknown), under mu

	unknownRefused atomic.Int64 // new unknown identities refused at MaxUnknown
	// retired are the unknown identities retired since, oldest first from retiredHead (under
	// mu): the store keeps their state (last seq, window) for the dedupe of a return until
	// MaxUnknown later ones retired (see rememberLocked).
	retired     []string
	retiredHead int
	retiredN    map[string]int32 // how many times each identity is in retired[retiredHead:]

	ctx    context.Context // cancelled by Stop: ends deliveries
	cancel context.CancelFunc
	wg     sync.WaitGroup // delivery goroutines

	linesLost    atomic.Int64 // NDJSON lines the store refused
	linesRefused atomic.Int64 // NDJSON lines refused: their identity was connected natively
	lostLog      throttle.Throttle
	refusedLog   throttle.Throttle // datagrams the store refused
	authLog      throttle.Throttle // devices refused admission

	tel telShared // Teltonika dedupe windows and counters (teltonika.go)
}

// routeTable is an immutable snapshot of the routes the system runs.
type routeTable struct {
	routes   []*routeRef // in the order they were added
	byID     map[uint16]*routeRef
	byName   map[string]*routeRef
	allIDs   []uint16 // IDs of the routes that take every frame (no filter, no account, not paused)
	filtered bool     // some route that is not paused has a filter or an account
}

type routeRef struct {
	r   *Route
	pid *actor.PID
}

// newTable builds the table of routes.
func newTable(routes []*routeRef) *routeTable {
	t := &routeTable{routes: routes, byID: make(map[uint16]*routeRef, len(routes)),
		byName: make(map[string]*routeRef, len(routes))}
	for _, ref := range routes {
		t.byID[ref.r.ID] = ref
		t.byName[ref.r.Name] = ref
		if ref.r.Paused || ref.r.Notifications { // notify.go: notifications only
			continue
		}
		if ref.r.Filter != nil || ref.r.Account != "" {
			t.filtered = true
		}
		t.allIDs = append(t.allIDs, ref.r.ID)
	}
	return t
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
		opts:       opts,
		log:        log,
		as:         as,
		root:       as.Root,
		disp:       newWorkerDispatcher(256, 300),
		devices:    make(map[string]*deviceEntry),
		folded:     make(map[string]*deviceEntry),
		gone:       make(map[string]goneDevice),
		lostLog:    throttle.Throttle{Period: 10 * time.Second},
		refusedLog: throttle.Throttle{Period: 10 * time.Second},
		authLog:    throttle.Throttle{Period: 10 * time.Second},
	}
	s.tel.seed = maphash.MakeSeed()
	s.loader, _ = opts.Journal.(SeqLoader)
	s.clock = opts.Clock
	if s.clock == nil {
		s.clock = wallClock{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for id, m := range opts.Fleet {
		if m != nil {
			s.fleet.Store(strings.ToUpper(id), m)
		}
	}
	var refs []*routeRef
	for _, r := range opts.Routes {
		refs = append(refs, s.spawnRoute(r))
	}
	s.table.Store(newTable(refs))
	return s
}

// spawnRoute starts the actor of route r.
func (s *System) spawnRoute(r *Route) *routeRef {
	ra := newRouteActor(s, r)
	pid := s.root.Spawn(actor.PropsFromProducer(func() actor.Actor { return ra }, actor.WithDispatcher(s.disp)))
	return &routeRef{r: r, pid: pid}
}

// OnCommit is the store's commit hook: it wakes every route the segment has records for.
func (s *System) OnCommit(seg *store.Segment) {
	if seg == nil || len(seg.Frames) == 0 {
		return
	}
	byID := s.table.Load().byID
	var seen [4]uint64 // route IDs < 256 tracked in a bitmap; larger ones always sent
	for _, f := range seg.Frames {
		for _, id := range f.Routes {
			if id < 256 {
				if seen[id/64]&(1<<(id%64)) != 0 {
					continue
				}
				seen[id/64] |= 1 << (id % 64)
			}
			if ref := byID[id]; ref != nil {
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
	s.dispatch(device, &deliveredMsg{seq: seq}, false)
}

// OnWindowDelivered is the store's per-frame delivery hook for windowed frames (datagrams): in ack
// mode delivery their device gets the ACK of exactly that seq.
func (s *System) OnWindowDelivered(device string, seq uint64) {
	if s.opts.AckMode != AckDelivery {
		return
	}
	s.dispatch(device, &frameDeliveredMsg{seq: seq}, false)
}

// Stop gives in-flight deliveries until ctx ends, then cancels them and stops every actor.
func (s *System) Stop(ctx context.Context) error {
	s.routesMu.Lock()
	s.stopped = true // no route is added or removed from now on
	routes := s.table.Load().routes
	s.routesMu.Unlock()
	// Each route answers by closing its channel once nothing of it is in flight; no goroutine
	// waits on a route that may never answer (stopped meanwhile).
	idle := make([]chan struct{}, len(routes))
	for i, ref := range routes {
		idle[i] = make(chan struct{})
		s.root.Send(ref.pid, drainMsg{})
		s.root.Send(ref.pid, idleQuery{done: idle[i]})
	}
	var err error
	for _, ch := range idle {
		select {
		case <-ch:
			continue
		case <-ctx.Done():
			err = fmt.Errorf("deliveries still in flight at shutdown: %w", ctx.Err())
		}
		break
	}
	s.cancel()
	// The route actors stop before the wait: one that still had batches in flight (ctx ended
	// first) would otherwise start another delivery while Wait runs.
	for _, ref := range routes {
		_ = s.root.StopFuture(ref.pid).Wait()
	}
	s.wg.Wait()
	s.mu.Lock()
	for _, e := range s.devices {
		if pid := e.pid.Load(); pid != nil {
			s.root.Stop(pid)
		}
	}
	s.devices = map[string]*deviceEntry{}
	s.folded = map[string]*deviceEntry{}
	s.opts.Metrics.unknown(-s.unknown)
	s.unknown = 0
	s.mu.Unlock()
	s.as.Shutdown()
	s.disp.close()
	return err
}

// deviceEntry is the registry entry of one device identity. An entry is awake, with an actor
// that owns the connection state below, or dormant: the identity has a TCP connection that has
// sent nothing for DeviceIdle (or only its HELLO), and no actor. System.mu guards a dormant
// entry's state, and every change between awake, dormant and retired (removed from devices).
//
// pending counts messages sent but not yet processed, so an actor goes dormant or retires only
// when nothing is on its way to it. While the entry is dormant or retired, pending holds asleep
// plus the senders that found it so; such a sender takes System.mu and handles its message
// without an actor, wakes the entry, or (retired) looks the identity up again.
type deviceEntry struct {
	id       string
	pid      atomic.Pointer[actor.PID] // nil unless awake
	pending  atomic.Int64
	inflight atomic.Int64  // frames appended but not yet committed
	stored   atomic.Uint64 // highest seq committed (persist acks read it)
	loaded   atomic.Bool   // stored is authoritative (see SeqLoader); set once
	ackDue   atomic.Bool   // an ackMsg is on its way
	unknown  bool          // counted in System.unknown (no metadata when created); fixed
	moved    func(string)  // Options.AddressChanged (nil: none); fixed

	// Connection state: owned by the actor while awake, guarded by System.mu while dormant.
	conn                netio.Conn
	serial, imei, iccid string
	acked               uint64    // highest seq the actor acknowledged on conn
	tel                 *telState // a Teltonika device's answers and commands (teltonika.go); nil otherwise
	// ackTo is conn once it got its WELCOME (nil otherwise, and for UDP sources): in ack mode
	// persist, commits acknowledge on it directly (see deviceActor.append).
	ackTo atomic.Pointer[netio.Conn]

	// What Device reads from any goroutine: whether conn is set, the last remote address (the
	// TCP peer, the last UDP source or the NDJSON connection's peer) with its transport, and
	// when the last frame arrived (Unix ns).
	connected atomic.Bool
	remote    atomic.Pointer[where]
	lastSeen  atomic.Int64
}

// goneDevice is what Device shows of an identity whose entry was retired.
type goneDevice struct {
	id       string // the identity as the device sent it
	remote   where
	lastSeen int64
}

// Transports a device's address was last seen on (DeviceState.Transport).
const (
	TransportTCP    = "tcp"    // a native TCP connection's peer
	TransportUDP    = "udp"    // the source of a native UDP datagram
	TransportNDJSON = "ndjson" // an NDJSON connection's peer (a gateway, or the device itself)
)

// where is a device's last known address and the transport it was seen on.
type where struct {
	addr      netip.AddrPort
	transport string
}

// seen notes a frame's arrival.
func (e *deviceEntry) seen(at time.Time) { e.lastSeen.Store(at.UnixNano()) }

// setRemote notes the device's address and the transport it came over; it allocates only when
// either changes, never per frame (the record is made in the branch that stores it: a local
// whose address is stored would escape, and be allocated, on every call).
func (e *deviceEntry) setRemote(a netip.AddrPort, transport string) {
	if p := e.remote.Load(); p != nil && p.addr == a && p.transport == transport {
		return
	}
	e.remote.Store(&where{addr: a, transport: transport})
	if e.moved != nil {
		e.moved(e.id)
	}
}

// asleep is pending's base while an entry has no actor: any sender then sees a count <= 0.
const asleep = math.MinInt64 / 2

// entry finds the entry for id or, with create, makes a dormant one; it returns nil if there is
// none and create is false, or if id is unknown and MaxUnknown entries of such identities exist.
func (s *System) entry(id string, create bool) *deviceEntry {
	s.mu.RLock()
	e := s.devices[id]
	s.mu.RUnlock()
	if e != nil || !create {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.devices[id]; e == nil {
		unknown := s.meta(id) == nil
		if unknown && s.opts.MaxUnknown > 0 && s.unknown >= s.opts.MaxUnknown {
			s.unknownRefused.Add(1)
			s.opts.Metrics.unknownRefused()
			return nil
		}
		e = &deviceEntry{id: id, unknown: unknown, moved: s.opts.AddressChanged}
		if unknown {
			s.unknown++
			s.opts.Metrics.unknown(1)
		}
		e.pending.Store(asleep)
		e.stored.Store(s.opts.Journal.LastSeq(id))
		e.loaded.Store(s.loader == nil || s.loader.Known(id))
		s.devices[id] = e
		up := strings.ToUpper(id)
		if g, ok := s.gone[up]; ok {
			e.lastSeen.Store(g.lastSeen)
			if g.remote.addr.IsValid() {
				e.setRemote(g.remote.addr, g.remote.transport)
			}
			delete(s.gone, up)
		}
		s.folded[up] = e
	}
	return e
}

// forgetLocked removes e from the registry, under s.mu. For a device with metadata (the config's
// fleet or the registry), Device keeps showing its last remote address and when it was last
// seen; others are forgotten whole, so identities nobody registered (a spray of random ones)
// leave nothing behind.
func (s *System) forgetLocked(e *deviceEntry) {
	delete(s.devices, e.id)
	up := strings.ToUpper(e.id)
	if s.folded[up] == e {
		delete(s.folded, up)
	}
	if e.unknown {
		s.unknown--
		s.opts.Metrics.unknown(-1)
		s.rememberLocked(e.id)
	}
	if s.meta(e.id) == nil {
		return
	}
	g := goneDevice{id: e.id, lastSeen: e.lastSeen.Load()}
	if p := e.remote.Load(); p != nil {
		g.remote = *p
	}
	s.gone[up] = g
}

// rememberLocked notes that unknown identity id retired, under s.mu, and has the store forget
// the oldest retired ones beyond MaxUnknown, so that what made-up identities leave behind is
// bounded while a device that merely reconnects keeps its last seq. An identity that is live
// again is skipped (it is noted again when it retires); one with frames still to deliver goes
// back to the end of the line. A forgotten identity that comes back starts from last seq 0.
func (s *System) rememberLocked(id string) {
	if s.opts.MaxUnknown <= 0 {
		return // no cap: the store keeps every identity, as it does the registry's
	}
	if s.retiredN == nil {
		s.retiredN = make(map[string]int32)
	}
	s.retired = append(s.retired, id)
	s.retiredN[id]++
	for tries := 0; len(s.retired)-s.retiredHead > s.opts.MaxUnknown && tries < 4; tries++ {
		old := s.retired[s.retiredHead]
		s.retired[s.retiredHead] = ""
		s.retiredHead++
		if n := s.retiredN[old] - 1; n > 0 {
			s.retiredN[old] = n // it retired again since: its later place counts
			continue
		}
		delete(s.retiredN, old)
		// Nothing of it is on its way while it has no entry (its last one retired with nothing
		// in flight), and a new entry, which would read its last seq, waits for s.mu.
		if s.devices[old] == nil && !s.opts.Journal.Forget(old) {
			s.retired = append(s.retired, old)
			s.retiredN[old]++
		}
	}
	if s.retiredHead > len(s.retired)/2 && s.retiredHead > 1024 { // reuse the slice's front
		n := copy(s.retired, s.retired[s.retiredHead:])
		clear(s.retired[n:])
		s.retired, s.retiredHead = s.retired[:n], 0
	}
}

// dispatch hands msg to the device id (created with create) and returns its entry (nil, msg
// not handed, if it has none and create is false, or if MaxUnknown refused it).
func (s *System) dispatch(id string, msg any, create bool) *deviceEntry {
	for {
		e := s.entry(id, create)
		if e == nil || s.deliver(e, msg) {
			return e
		}
	}
}

// deliver hands msg to e's actor, waking a dormant entry unless the message can be handled
// without an actor. It reports false, having done nothing, if e was retired.
func (s *System) deliver(e *deviceEntry, msg any) bool {
	if e.pending.Add(1) > 0 { // awake, and it stays so until the actor has this message
		s.root.Send(e.pid.Load(), msg)
		return true
	}
	s.mu.Lock()
	if s.devices[e.id] != e {
		s.mu.Unlock()
		return false
	}
	if e.pending.Load() < 0 {
		if s.handleDormant(e, msg) {
			e.pending.Add(-1)
			s.mu.Unlock()
			return true
		}
		s.wake(e)
	}
	pid := e.pid.Load()
	s.mu.Unlock()
	s.root.Send(pid, msg)
	return true
}

// send delivers a message already counted in e.pending: e is awake and stays so until its actor
// has it.
func (s *System) send(e *deviceEntry, msg any) { s.root.Send(e.pid.Load(), msg) }

// handleDormant handles msg for a dormant entry, if it needs no actor, under s.mu.
func (s *System) handleDormant(e *deviceEntry, msg any) bool {
	switch m := msg.(type) {
	case *helloMsg:
		if !e.loaded.Load() {
			return false // its lastSeq is to be loaded first: the actor does it
		}
		e.hello(m) // nothing is in flight: WELCOME at once
		s.welcome(e)
	case *closedMsg:
		if e.conn == m.conn {
			e.setConn(nil)
			s.forgetLocked(e) // nothing is in flight and nobody is connected: forget it
		}
	case *deliveredMsg:
		s.ack(e, m.seq)
	case *frameDeliveredMsg:
		s.ackDatagram(e, m.seq)
	case *commandsMsg:
		s.commands(e, false)
	case *idleMsg: // from an actor that has gone
	default:
		return false
	}
	return true
}

// wake spawns the actor of a dormant entry, under s.mu; the senders waiting on it stay counted.
func (s *System) wake(e *deviceEntry) {
	da := &deviceActor{sys: s, e: e}
	e.pid.Store(s.root.Spawn(actor.PropsFromProducer(func() actor.Actor { return da }, actor.WithDispatcher(s.disp))))
	e.pending.Add(-asleep)
	s.actors.Add(1)
	s.opts.Metrics.deviceActors(1)
}

// sleep makes e dormant if nothing is on its way to its actor; the caller, that actor, then
// stops itself and no longer touches e.
func (s *System) sleep(e *deviceEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.inflight.Load() != 0 || !e.pending.CompareAndSwap(0, asleep) {
		return false
	}
	e.pid.Store(nil)
	s.actors.Add(-1)
	s.opts.Metrics.deviceActors(-1)
	return true
}

// retire removes e if nothing is on its way to it; the caller, its actor, then stops itself.
func (s *System) retire(e *deviceEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.inflight.Load() != 0 || s.devices[e.id] != e || !e.pending.CompareAndSwap(0, asleep) {
		return false
	}
	s.forgetLocked(e)
	e.pid.Store(nil)
	s.actors.Add(-1)
	s.opts.Metrics.deviceActors(-1)
	return true
}

// Open implements netio.Dispatcher. A device that has no actor is welcomed here, without one; one
// that Options.Auth does not admit is refused (ErrRefused: netio answers ERROR 401).
func (s *System) Open(c netio.Conn, h *native.Hello) (netio.Session, error) {
	m, refused := s.admit(h.Identity(), []byte(h.Token), c.Remote())
	if refused != "" {
		return nil, ErrRefused
	}
	e := s.dispatch(h.Identity(), &helloMsg{conn: c, hello: *h}, true)
	if e == nil {
		return nil, fmt.Errorf("too many devices the relay does not know: %w", netio.ErrBusy)
	}
	// Mode token checked the HELLO's token: netio's first-DATA deadline does not apply.
	return &session{sys: s, e: e, conn: c, admitted: m, auth: s.opts.Auth == AuthToken}, nil
}

// UData implements netio.Dispatcher. A datagram that Options.Auth does not admit, or of an
// identity refused at MaxUnknown, is dropped unanswered.
func (s *System) UData(c netio.Conn, u *native.UData, frame []byte) {
	id := string(u.Identity)
	if _, refused := s.admit(id, u.Token, c.Remote()); refused != "" {
		return
	}
	at := time.Now()
	if e := s.dispatch(id, &dataMsg{conn: c, seq: u.Seq, records: u.Records, udpIdentity: id, at: at}, true); e != nil {
		e.seen(at) // the actor notes the source address (setConn)
	}
}

// Lines implements netio.Dispatcher: one message per identity and read, however many lines.
// remote becomes the device's address unless a native connection or UDP source holds it.
func (s *System) Lines(identity string, imei bool, remote netip.AddrPort, records [][]byte, done func()) {
	e := s.dispatch(identity, &linesMsg{identity: identity, imei: imei, records: records, done: done}, true)
	if e == nil {
		if done != nil { // refused at MaxUnknown (counted there): nobody can be told
			done()
		}
		return
	}
	e.seen(time.Now())
	if !e.connected.Load() {
		e.setRemote(remote, TransportNDJSON)
	}
}

// UnknownIdentities is how many device entries of identities without metadata exist, and
// UnknownRefused how many HELLOs, datagrams, NDJSON reads and results MaxUnknown refused. Safe
// for concurrent use.
func (s *System) UnknownIdentities() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.unknown
}

// UnknownRefused: see UnknownIdentities.
func (s *System) UnknownRefused() int64 { return s.unknownRefused.Load() }

// Replay moves the dead letters of the named route to its replay list and has the route
// deliver them again; it returns how many dead letters and messages it moved.
func (s *System) Replay(route string) (letters, records int, err error) {
	ref := s.table.Load().byName[route]
	if ref == nil {
		return 0, 0, fmt.Errorf("route %q: %w", route, ErrNoRoute)
	}
	letters, records, err = s.opts.Journal.Replay(ref.r.ID)
	if letters > 0 {
		s.root.Send(ref.pid, replayMsg{})
	}
	return letters, records, err
}

// CommandsReady tells the device (any case of its identity) that it has new commands: if it is
// connected and welcomed, they are written to it now; otherwise its next WELCOME sends them.
// Safe for concurrent use; it never blocks.
func (s *System) CommandsReady(device string) {
	up := strings.ToUpper(device)
	for {
		s.mu.RLock()
		e := s.folded[up]
		s.mu.RUnlock()
		if e == nil || s.deliver(e, &commandsMsg{}) {
			return
		}
	}
}

// commands writes e's due commands to its connection if it got its WELCOME: all unfinished
// ones with resend (after a WELCOME), else the new ones. Called by e's actor, or under s.mu if
// e is dormant. Commands are pipelined: every due one is written at once.
func (s *System) commands(e *deviceEntry, resend bool) {
	if s.opts.Commands == nil || e.conn == nil || e.conn.Datagram() {
		return
	}
	if e.tel != nil { // a Teltonika device: Codec 12, one command at a time (teltonika.go)
		s.telCommands(e, resend)
		return
	}
	if !resend && e.ackTo.Load() == nil {
		return
	}
	c := e.conn
	s.opts.Commands.Due(e.id, resend, func(task uint64, payload []byte) {
		c.Write(native.AppendCommand(nil, task, payload))
	})
}

// DeviceActors is how many device actors are alive (awake entries). Safe for concurrent use.
func (s *System) DeviceActors() int64 { return s.actors.Load() }

// Routes are the names of the routes the system runs, in the order they were added.
func (s *System) Routes() []string {
	t := s.table.Load()
	names := make([]string, len(t.routes))
	for i, ref := range t.routes {
		names[i] = ref.r.Name
	}
	return names
}

// RouteIDs are the IDs of the routes the system runs. Safe for concurrent use.
func (s *System) RouteIDs() []uint16 {
	t := s.table.Load()
	ids := make([]uint16, len(t.routes))
	for i, ref := range t.routes {
		ids[i] = ref.r.ID
	}
	return ids
}

// OldestPending is the age of the oldest message route i (in Routes order) has not delivered
// yet: 0 when it has none, when there is no route i, or when its actor does not answer within a
// second.
func (s *System) OldestPending(i int) time.Duration {
	t := s.table.Load()
	if i < 0 || i >= len(t.routes) {
		return 0
	}
	return s.oldestPending(t.routes[i])
}

func (s *System) oldestPending(ref *routeRef) time.Duration {
	res, err := s.root.RequestFuture(ref.pid, oldestQuery{}, time.Second).Result()
	ms, ok := res.(int64)
	if err != nil || !ok || ms == 0 {
		return 0
	}
	return max(0, time.Since(time.UnixMilli(ms)))
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

	admitted *DeviceMeta // what Options.Auth admitted it on (see stillAdmitted)
	// auth: Open checked the HELLO against a credential (devices.auth token), so
	// netio's first-DATA deadline does not apply.
	auth bool
}

var _ netio.Authenticated = (*session)(nil)

// Authenticated implements netio.Authenticated.
func (ss *session) Authenticated() bool { return ss.auth }

func (ss *session) Data(seq uint64, records [][]byte, _ []byte) {
	// A retired entry means this connection was replaced or failed, and the identity has been
	// forgotten since: the frame is dropped unacknowledged, and the device resends it.
	if !ss.stillAdmitted() {
		return
	}
	at := time.Now()
	ss.e.seen(at)
	ss.sys.deliver(ss.e, &dataMsg{conn: ss.conn, seq: seq, records: records, at: at})
}

// Result hands a command result to the device actor, which stores it (see deviceActor.result).
// r.Data aliases the frame, the session's private copy.
func (ss *session) Result(r *native.Result, _ []byte) {
	if !ss.stillAdmitted() {
		return
	}
	ss.sys.dispatch(ss.e.id, &resultMsg{task: r.Task, code: r.Code, data: r.Data, at: time.Now()}, true)
}

func (ss *session) Closed() {
	ss.sys.deliver(ss.e, &closedMsg{conn: ss.conn}) // a retired entry no longer has this connection
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
			if p := e.pending.Load(); e.inflight.Load() != 0 || (p != 0 && p != asleep) {
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
