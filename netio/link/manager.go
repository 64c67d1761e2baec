package link

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Config configures a Manager (the config file's devicelink section, resolved).
type Config struct {
	// Listen is the address clients reach links on (devicelink.listen): an address of the
	// relay's own, without a port, so the client network may be another interface than the
	// devices'.
	Listen netip.Addr
	// PortFirst and PortLast bound the ports links take (devicelink.ports "40000-40999"), both
	// included. Every port of the range is bound from Start, for each protocol of Protocols.
	PortFirst, PortLast uint16
	// Protocols are the protocols links may use, TCP and UDP (devicelink.protocols; nil or
	// empty: both). Only theirs are bound: TCP only holds no UDP socket, one file per port less.
	// Open refuses a link of another protocol with ErrProtocolOff.
	Protocols []string
	// Buffer bounds the bytes the relay holds per direction of a link (devicelink.buffer;
	// default 256 KiB): when the receiving side has this many waiting, the sending side is not
	// read until it drains. The relay holds at most Buffer plus one read (256 KiB) per direction.
	Buffer int
	// DialTimeout bounds the connection to the device of a TCP link (default 10 s): a device
	// that does not answer in time ends the link and closes its client.
	DialTimeout time.Duration
	// Device is the relay's UDP device listener, for UDP links via it (Spec.Via ViaListener).
	Device DeviceListener
	// EventLoops is the number of gnet event loops (0: one per CPU).
	EventLoops int
	// BusyPoll keeps a TCP links' event loop polling instead of sleeping for this long after it
	// carried link traffic (devicelink.busy_poll; 0: off), so that the next bytes either way
	// do not wait for the loop's thread to wake up (busypoll.go). While a window is open the
	// loop's thread takes the CPU time that no other thread wants; idle links cost nothing.
	BusyPoll time.Duration
	Logger   *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// DefaultBuffer is Config.Buffer's default.
const DefaultBuffer = 256 << 10

// ErrProtocolOff: Open was asked for a link of a protocol that Config.Protocols leaves out.
var ErrProtocolOff = errors.New("link: protocol not enabled")

// keepClosed is how many ended links List keeps showing.
const keepClosed = 256

// Manager opens, lists and closes device links: it chooses each link's port and token and hands
// it to the engine of its protocol. Its methods are safe for concurrent use; Start must return
// before Open is called.
type Manager struct {
	cfg Config
	log *slog.Logger

	tcp      *tcpCarrier
	udp      *udpCarrier
	carriers map[string]carrier // by protocol

	mu      sync.Mutex
	started bool
	stopped bool
	links   map[string]*entry            // by token: links not yet forgotten as closed
	ports   map[string]map[uint16]*entry // by protocol and port: the link holding it (may be closed)
	cursor  map[string]uint16            // next port to try, by protocol
	closed  []*entry                     // ended links, oldest first, at most keepClosed
}

// NewManager checks cfg and builds a Manager; nothing listens until Start.
func NewManager(cfg Config) (*Manager, error) {
	if !cfg.Listen.IsValid() {
		return nil, errors.New("link: listen address missing")
	}
	if cfg.PortFirst == 0 || cfg.PortLast < cfg.PortFirst {
		return nil, fmt.Errorf("link: port range %d-%d is empty", cfg.PortFirst, cfg.PortLast)
	}
	if len(cfg.Protocols) == 0 {
		cfg.Protocols = []string{TCP, UDP}
	}
	for _, p := range cfg.Protocols {
		if p != TCP && p != UDP {
			return nil, fmt.Errorf("link: protocol %q: want tcp or udp", p)
		}
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "devicelink"),
		links:  make(map[string]*entry),
		ports:  map[string]map[uint16]*entry{TCP: {}, UDP: {}},
		cursor: map[string]uint16{TCP: cfg.PortFirst, UDP: cfg.PortFirst},
	}
	m.carriers = make(map[string]carrier, 2)
	if slices.Contains(cfg.Protocols, TCP) {
		m.tcp = newTCPCarrier(cfg, m.log)
		m.carriers[TCP] = m.tcp
	}
	if slices.Contains(cfg.Protocols, UDP) {
		m.udp = newUDP(cfg.Listen, cfg.PortFirst, cfg.PortLast, m.log)
		m.udp.dl = cfg.Device
		m.carriers[UDP] = m.udp
	}
	return m, nil
}

// Start binds every port of the range for each protocol on and starts their engines. It returns
// once they accept.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("link: manager started twice")
	}
	var started []carrier
	for _, proto := range []string{TCP, UDP} {
		c, on := m.carriers[proto]
		if !on {
			continue
		}
		if err := c.start(ctx); err != nil {
			for _, c2 := range started {
				_ = c2.stop(ctx)
			}
			return fmt.Errorf("%s links on %s ports %d-%d: %w", proto, m.cfg.Listen, m.cfg.PortFirst, m.cfg.PortLast, err)
		}
		started = append(started, c)
	}
	m.started = true
	return nil
}

// Open creates a link as s asks (s.Device, s.Protocol and s.DeviceAddr set; the config's
// defaults applied) on a free port of the range, with a new token. It fails with
// ErrPortsExhausted when every port holds a link, ErrProtocolOff when s.Protocol is not one of
// Config.Protocols, and ErrClosed once Stop began.
func (m *Manager) Open(_ context.Context, s Spec) (Info, error) {
	if s.Protocol != TCP && s.Protocol != UDP {
		return Info{}, fmt.Errorf("link: protocol %q: want tcp or udp", s.Protocol)
	}
	c, ok := m.carriers[s.Protocol]
	if !ok {
		return Info{}, fmt.Errorf("%s links (protocols %v): %w", s.Protocol, m.cfg.Protocols, ErrProtocolOff)
	}
	if !s.DeviceAddr.IsValid() {
		return Info{}, errors.New("link: device address missing")
	}
	token, err := newToken()
	if err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || !m.started {
		return Info{}, ErrClosed
	}
	port, ok := m.freePort(s.Protocol)
	if !ok {
		return Info{}, ErrPortsExhausted
	}
	e := newEntry(token, s, port, m.cfg.Now())
	if err := c.open(e); err != nil {
		return Info{}, fmt.Errorf("open %s link on port %d: %w", s.Protocol, port, err)
	}
	m.links[token] = e
	m.ports[s.Protocol][port] = e
	return e.info(), nil
}

// freePort finds a port of proto's range without a live link, from the cursor on, so ports are
// reused as late as possible. Links that ended since are moved to the closed list on the way.
// Called with m.mu held.
func (m *Manager) freePort(proto string) (uint16, bool) {
	n := int(m.cfg.PortLast-m.cfg.PortFirst) + 1
	port := m.cursor[proto]
	for range n {
		if port < m.cfg.PortFirst || port > m.cfg.PortLast {
			port = m.cfg.PortFirst
		}
		e := m.ports[proto][port]
		if e != nil && e.closed() {
			m.forget(e)
			e = nil
		}
		if e == nil {
			next := port + 1
			if port == m.cfg.PortLast {
				next = m.cfg.PortFirst
			}
			m.cursor[proto] = next
			return port, true
		}
		port++
	}
	return 0, false
}

// forget moves an ended link from the live maps to the closed list. Called with m.mu held.
func (m *Manager) forget(e *entry) {
	if m.ports[e.spec.Protocol][e.port] == e {
		delete(m.ports[e.spec.Protocol], e.port)
	}
	if m.links[e.token] != e {
		return
	}
	delete(m.links, e.token)
	m.closed = append(m.closed, e)
	if len(m.closed) > keepClosed {
		drop := len(m.closed) - keepClosed
		m.closed = slices.Delete(m.closed, 0, drop)
	}
}

// Close ends the link with that token: both of its sockets are closed. It fails with
// ErrNotFound when no live or recently ended link has the token; closing an ended link again
// does nothing.
func (m *Manager) Close(token string) error {
	m.mu.Lock()
	e := m.links[token]
	if e == nil {
		for _, c := range m.closed {
			if c.token == token {
				m.mu.Unlock()
				return nil
			}
		}
		m.mu.Unlock()
		return ErrNotFound
	}
	c := m.carriers[e.spec.Protocol]
	m.mu.Unlock()
	c.close(e)
	return nil
}

// List returns the current links and the recently ended ones (at most 256), newest first.
func (m *Manager) List() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.links {
		if e.closed() {
			m.forget(e)
		}
	}
	out := make([]Info, 0, len(m.links)+len(m.closed))
	for _, e := range m.links {
		out = append(out, e.info())
	}
	for _, e := range m.closed {
		out = append(out, e.info())
	}
	slices.SortStableFunc(out, func(a, b Info) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out
}

// CloseDevice ends every link to device (its identity as in Spec.Device): the device was
// deleted.
func (m *Manager) CloseDevice(device string) {
	m.mu.Lock()
	var ends []*entry
	for _, e := range m.links {
		if e.spec.Device == device && !e.closed() {
			ends = append(ends, e)
		}
	}
	m.mu.Unlock()
	for _, e := range ends {
		m.carriers[e.spec.Protocol].close(e)
	}
}

// DeviceDatagram takes a datagram that reached the relay's UDP device listener from src (IPv4
// unmapped) and is not a native frame, when a link via the listener carries src: it forwards
// it to the link's client and reports true. Otherwise it reports false (the listener drops the
// datagram). It is the listener's tap (netio.UDPTap): it must be called on the listener's event
// loop, never blocks, and does not keep b. Without UDP links it reports false.
func (m *Manager) DeviceDatagram(src netip.AddrPort, b []byte) bool {
	if m.udp == nil {
		return false
	}
	return m.udp.fromListener(src, b)
}

// Stop closes every link and stops the engines, waiting for their goroutines (bounded by ctx).
// Open fails with ErrClosed from now on.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return nil
	}
	m.stopped = true
	started := m.started
	m.mu.Unlock()
	if !started {
		return nil
	}
	var errs []error
	for proto, c := range m.carriers {
		if err := c.stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s links: %w", proto, err))
		}
	}
	m.mu.Lock()
	for _, e := range m.links { // those still waiting for a client
		e.end()
	}
	m.mu.Unlock()
	return errors.Join(errs...)
}

// newToken is a link's token: 144 random bits, URL-safe base64 (24 characters).
func newToken() (string, error) {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("link token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
