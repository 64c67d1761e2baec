package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configures a Client. The zero value is usable: public networks
// only, 10s per request, 64 connections per host, no logging.
type Options struct {
	// AllowPrivateNetworks lets routes reach loopback, private (RFC 1918,
	// ULA), link-local, unspecified, CGNAT and other non-public addresses
	// (see IsPrivate). When false, every address a host resolves to is
	// checked and only a checked address is dialled, so DNS rebinding cannot
	// slip a private address in between check and connect.
	AllowPrivateNetworks bool
	// Timeout bounds one attempt: dial, TLS handshake, request and response.
	// Default 10s.
	Timeout time.Duration
	// MaxConnsPerHost caps the connections to one host. Attempts wait for a
	// free connection within their timeout. Default 64.
	MaxConnsPerHost int
	// Logger receives debug logs about refused dials and shutdown; nil
	// discards them.
	Logger *slog.Logger
	// TLS configures HTTPS to routes (see NewTLSConfig); it is copied, and
	// never accepts less than TLS 1.2. nil: the system roots, TLS 1.2.
	TLS *tls.Config
}

const (
	defaultTimeout         = 10 * time.Second
	defaultMaxConnsPerHost = 64
	// maxResponseBody caps how much of a response body is read; routes
	// only need the status. A larger body still yields its status.
	maxResponseBody = 1 << 20
)

// Client sends single HTTP attempts to route servers over pooled keep-alive
// connections.
//
// A Client is safe for concurrent use. Close it once, after its users have
// stopped; attempts made after Close fail with ErrClosed.
type Client struct {
	hc           *fasthttp.Client
	dialer       net.Dialer
	resolver     *net.Resolver
	timeout      time.Duration
	allowPrivate bool
	log          *slog.Logger

	mu     sync.Mutex // guards closed against wg.Add, and conns
	closed atomic.Bool
	wg     sync.WaitGroup // attempts running on their own goroutine
	conns  map[*trackedConn]struct{}
}

// NewClient returns a Client configured by o.
func NewClient(o Options) *Client {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.MaxConnsPerHost <= 0 {
		o.MaxConnsPerHost = defaultMaxConnsPerHost
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		resolver:     net.DefaultResolver,
		timeout:      o.Timeout,
		allowPrivate: o.AllowPrivateNetworks,
		log:          o.Logger.With("component", "deliver"),
		conns:        make(map[*trackedConn]struct{}),
	}
	c.hc = &fasthttp.Client{
		Name:                          "fleetrelay",
		DialTimeout:                   c.dial,
		TLSConfig:                     clientTLS(o.TLS),
		MaxConnsPerHost:               o.MaxConnsPerHost,
		MaxConnWaitTimeout:            o.Timeout,
		MaxResponseBodySize:           maxResponseBody,
		ReadBufferSize:                16 << 10, // room for large response headers
		DisablePathNormalizing:        true,     // send escaped paths (SN%2F1) as configured
		DisableHeaderNamesNormalizing: true,     // send header names as configured
		// One attempt is one request, except for the stale keep-alive
		// race: a pooled connection the server closed while idle fails
		// before any response byte, and the request is re-sent once on a
		// fresh connection.
		MaxIdemponentCallAttempts: 2,
		RetryIfErr:                retryStaleConn,
	}
	return c
}

func retryStaleConn(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts < 2 && (err == io.EOF || errors.Is(err, fasthttp.ErrConnectionClosed))
}

// Close aborts attempts in flight, closes all connections and waits for the
// goroutines of abandoned attempts to end. Attempts started later fail with
// ErrClosed.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed.Swap(true) {
		c.mu.Unlock()
		return
	}
	conns := make([]*trackedConn, 0, len(c.conns))
	for tc := range c.conns {
		conns = append(conns, tc)
	}
	c.mu.Unlock()

	c.hc.CloseIdleConnections()
	for _, tc := range conns {
		_ = tc.Close()
	}
	c.wg.Wait()
	c.log.Debug("closed", "connections", len(conns))
}

// Request is one HTTP request to a route server.
type Request struct {
	Method      string        // default POST
	URL         string        // absolute http or https URL, sent as is (no path normalising)
	Header      [][2]string   // extra headers, name and value
	ContentType string        // default application/json when there is a body
	Body        []byte        // copied; not retained after Do returns
	Timeout     time.Duration // per-attempt timeout; 0 = the client's
	// Slots, when set, is a concurrency limit shared by several batches: every attempt holds one
	// slot (a send into the channel) while it runs, but not the waits between attempts, so a batch
	// backing off leaves its slot to others.
	Slots chan struct{}
}

// Result describes one attempt.
type Result struct {
	Status     int           // HTTP status; 0 on transport error
	RetryAfter time.Duration // from Retry-After on 429 and 503, else 0
	Err        error         // transport error, ctx.Err(), or nil when a status was received
	Latency    time.Duration // from the start of Do until it returned
}

// Do makes one attempt of r. Redirects are not followed: a 3xx is just its
// status. The attempt ends at the earlier of ctx's deadline and the client's
// timeout; if ctx is done first, Do returns ctx.Err() at once and the
// abandoned request ends in the background (within the timeout, or at
// Close).
func (c *Client) Do(ctx context.Context, r *Request) Result {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return Result{Err: err}
	}
	timeout := c.timeout
	if r.Timeout > 0 {
		timeout = r.Timeout
	}
	deadline := start.Add(timeout)
	ctxDeadline := false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}

	a := attemptPool.Get().(*attempt)
	a.c = c
	a.deadline = deadline
	a.req = fasthttp.AcquireRequest()
	a.resp = fasthttp.AcquireResponse()
	fill(a.req, r)

	done := ctx.Done()
	if done == nil {
		if c.closed.Load() {
			a.res = Result{Err: ErrClosed}
			a.release()
		} else {
			a.run()
		}
		res := a.res
		a.res = Result{}
		attemptPool.Put(a)
		res.Err = ctxErr(ctx, res.Err, ctxDeadline)
		res.Latency = time.Since(start)
		return res
	}

	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		a.release()
		attemptPool.Put(a)
		return Result{Err: ErrClosed, Latency: time.Since(start)}
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go a.runAsync()

	select {
	case <-a.done:
		res := a.res
		a.res = Result{}
		attemptPool.Put(a)
		res.Err = ctxErr(ctx, res.Err, ctxDeadline)
		res.Latency = time.Since(start)
		return res
	case <-done:
		// a now belongs to its goroutine, which releases the fasthttp
		// request and response and then drops it.
		return Result{Err: ctx.Err(), Latency: time.Since(start)}
	}
}

// ctxErr reports a failed attempt that ctx ended as ctx's error. When the
// attempt ran into ctx's deadline, fasthttp's deadline may fire a moment
// before ctx's own timer does.
func ctxErr(ctx context.Context, err error, ctxDeadline bool) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if ctxDeadline && errors.Is(err, ErrTimeout) {
		return context.DeadlineExceeded
	}
	return err
}

// fill copies r into req.
func fill(req *fasthttp.Request, r *Request) {
	req.SetRequestURI(r.URL)
	if r.Method == "" {
		req.Header.SetMethod(fasthttp.MethodPost)
	} else {
		req.Header.SetMethod(r.Method)
	}
	switch {
	case r.ContentType != "":
		req.Header.SetContentType(r.ContentType)
	case len(r.Body) > 0:
		req.Header.SetContentType("application/json")
	}
	for _, h := range r.Header {
		req.Header.Set(h[0], h[1])
	}
	req.SetBody(r.Body)
}

// attempt is one request in flight. It is pooled; when Do abandons it on
// ctx cancellation, its goroutine releases the fasthttp objects and the
// attempt is left to the garbage collector instead.
type attempt struct {
	c        *Client
	req      *fasthttp.Request
	resp     *fasthttp.Response
	deadline time.Time
	res      Result
	done     chan struct{} // buffered; signalled once per async run
}

var attemptPool = sync.Pool{New: func() any { return &attempt{done: make(chan struct{}, 1)} }}

func (a *attempt) runAsync() {
	c := a.c // run clears a.c
	a.run()
	a.done <- struct{}{}
	c.wg.Done()
}

// run performs the request, stores the result in a.res and releases the
// fasthttp request and response.
func (a *attempt) run() {
	err := a.c.hc.DoDeadline(a.req, a.resp, a.deadline)
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		err = nil // the status line and headers were read
	}
	if err != nil {
		a.res = Result{Err: a.wrapErr(err)}
	} else {
		status := a.resp.StatusCode()
		a.res = Result{Status: status}
		if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable {
			if v := a.resp.Header.Peek("Retry-After"); len(v) > 0 {
				a.res.RetryAfter, _ = parseRetryAfter(v, time.Now())
			}
		}
	}
	a.release()
}

func (a *attempt) release() {
	fasthttp.ReleaseRequest(a.req)
	fasthttp.ReleaseResponse(a.resp)
	a.req, a.resp, a.c = nil, nil, nil
}

func (a *attempt) wrapErr(err error) error {
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.As(err, &ne) && ne.Timeout() {
		err = fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return fmt.Errorf("%s %s: %w", a.req.Header.Method(), a.req.URI().Host(), err)
}

// dial is the client's fasthttp dial function: it resolves addr, refuses
// private addresses unless allowed, and dials the checked IPs in order.
func (c *Client) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if timeout <= 0 {
		timeout = c.timeout
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: bad port: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = c.resolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, err
	}
	var firstErr error
	refused := 0
	for _, ip := range ips {
		if !c.allowPrivate && IsPrivate(ip) {
			refused++
			continue
		}
		conn, err := c.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, uint16(port)).String())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return c.track(conn)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if refused > 0 {
		c.log.Debug("refused private address", "addr", addr, "ips", ips)
		return nil, fmt.Errorf("%w: %s resolves to %v", ErrPrivateAddress, addr, ips)
	}
	return nil, fmt.Errorf("dial %s: no addresses", addr)
}

func (c *Client) track(conn net.Conn) (net.Conn, error) {
	tc := &trackedConn{Conn: conn, c: c}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		_ = conn.Close()
		return nil, ErrClosed
	}
	c.conns[tc] = struct{}{}
	return tc, nil
}

// trackedConn lets Close abort connections that are in use.
type trackedConn struct {
	net.Conn
	c    *Client
	once sync.Once
}

func (tc *trackedConn) Close() error {
	tc.once.Do(func() {
		tc.c.mu.Lock()
		delete(tc.c.conns, tc)
		tc.c.mu.Unlock()
	})
	return tc.Conn.Close()
}
