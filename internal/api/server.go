package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// Server is the admin HTTP server.
//
// Concurrency: [Server.Handle] and [Server.HandleAPI] must be called before [Server.Start] and
// not concurrently with anything else. Start and [Server.Close] are safe for concurrent use;
// each takes effect once. Handlers run concurrently on net/http's goroutines.
type Server struct {
	addr  string
	log   *slog.Logger
	mux   *http.ServeMux
	srv   *http.Server
	opts  options
	auth  *authMetrics
	known map[string]bool // patterns added, to refuse duplicates with a clear panic
	// bodyLimits are the endpoints whose bodies may be larger than maxBodyBytes, by pattern.
	bodyLimits map[string]int64

	loopback bool // the listener is on a loopback address (set by Start)

	mu      sync.Mutex
	started bool
	closed  bool
	done    chan struct{} // closed when the serving goroutine has returned
}

// KeyLookup finds an API key by its hash: *registry.Registry implements it.
type KeyLookup interface {
	KeyByHash(h [32]byte) (registry.Key, bool)
}

// Option configures a [Server] in [New].
type Option func(*options)

type options struct {
	keys         KeyLookup
	bootstrap    [32]byte
	hasBootstrap bool
	hosts        []string
	openMetrics  bool
	limiter      *access.Limiter
	now          func() time.Time
}

// WithKeys authenticates the API's requests with the keys keys holds and the bootstrap super
// key whose hash is given (zero: none). Without it every authenticated endpoint answers 401.
func WithKeys(keys KeyLookup, bootstrap [32]byte) Option {
	return func(o *options) {
		o.keys, o.bootstrap = keys, bootstrap
		o.hasBootstrap = bootstrap != [32]byte{}
	}
}

// WithHosts accepts requests whose Host is one of hosts (names or addresses, without port),
// besides the loopback names and addresses that are always accepted.
func WithHosts(hosts []string) Option {
	return func(o *options) {
		for _, h := range hosts {
			o.hosts = append(o.hosts, strings.ToLower(strings.Trim(h, "[]")))
		}
	}
}

// WithOpenMetrics serves /metrics without a key on any address (admin.open_metrics).
func WithOpenMetrics(open bool) Option { return func(o *options) { o.openMetrics = open } }

// WithLimiter replaces the limiter of failed authentications (default: 20 at once, then one a
// second, per client address).
func WithLimiter(l *access.Limiter) Option { return func(o *options) { o.limiter = l } }

// WithClock replaces time.Now for key expiry and the limiter (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Timeouts and limits of the admin server's connections.
const (
	readTimeout    = 10 * time.Second
	writeTimeout   = 30 * time.Second
	idleTimeout    = 60 * time.Second
	maxHeaderBytes = 64 << 10
	maxBodyBytes   = 1 << 20
)

// New returns a server that will listen on addr (host:port; port 0 picks a free port) and serve:
//
//	GET /healthz  200 "ok" while health returns nil, else 503 with the error's text (nil health: always ok)
//	GET /metrics  reg in the Prometheus text exposition format (not served if reg is nil)
//
// /healthz is open. /metrics is open when the server listens on a loopback address or with
// [WithOpenMetrics]; elsewhere it needs a key holding "*:read". Every other request must name
// a loopback host or one of [WithHosts] in its Host header (421 otherwise: a DNS-rebound name
// never reaches a handler). Any other path answers 404, a known path with another method 405,
// both as problems. Add endpoints with [Server.Handle] and [Server.HandleAPI] before
// [Server.Start]. A nil log discards the server's log.
func New(addr string, reg *prometheus.Registry, health func() error, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "api")
	s := &Server{addr: addr, log: log, mux: http.NewServeMux(), known: map[string]bool{}}
	for _, o := range opts {
		o(&s.opts)
	}
	if s.opts.limiter == nil {
		s.opts.limiter = access.NewLimiter(time.Second, 20)
	}
	if s.opts.now == nil {
		s.opts.now = time.Now
	}
	s.auth = newAuthMetrics(reg)
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	s.Handle("GET", "/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if health != nil {
			if err := health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(err.Error()))
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
	if reg != nil {
		metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:      promLogger{log},
			ErrorHandling: promhttp.ContinueOnError,
		})
		s.add("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
			if !s.loopback && !s.opts.openMetrics {
				p, ok := s.authenticate(w, r)
				if !ok {
					return
				}
				if !p.Can("*", "read") {
					WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "/metrics on this address needs a key holding *:read"})
					return
				}
			}
			metrics.ServeHTTP(w, r)
		})
	}
	s.HandleAPI("GET /api/v1/openapi.json", "", serveOpenAPI) // any valid key
	return s
}

// Handle adds an open endpoint (no key needed): requests with method and a path matching
// pattern (a net/http ServeMux path: "{name}" matches one segment, read with r.PathValue) go to
// h. A GET endpoint also answers HEAD. Handle panics if called after Start, or if the endpoint
// exists already: both are programming errors.
func (s *Server) Handle(method, pattern string, h http.HandlerFunc) {
	if method == "" || !strings.HasPrefix(pattern, "/") || h == nil {
		panic(fmt.Sprintf("api: Handle(%q, %q): want a method, an absolute path and a handler", method, pattern))
	}
	s.add(method+" "+pattern, h)
}

// add registers pattern on the mux, once, before Start.
func (s *Server) add(pattern string, h http.HandlerFunc) {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		panic("api: Handle called after Start")
	}
	if s.known[pattern] {
		panic(fmt.Sprintf("api: %q added twice", pattern))
	}
	s.known[pattern] = true
	s.mux.HandleFunc(pattern, h)
}

// Start listens on the server's address and serves in a goroutine that [Server.Close] waits for. It
// returns the address listened on, which tells the port when the configured port was 0.
func (s *Server) Start() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.started {
		return nil, ErrStarted
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
		s.loopback = tcp.IP.IsLoopback()
	}
	s.started = true
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", "err", err)
		}
	}()
	s.log.Info("admin server listening", "addr", ln.Addr().String())
	return ln.Addr(), nil
}

// Close stops accepting connections, closes idle ones, waits for requests in progress to finish or for
// ctx to end, and waits for the serving goroutine. It returns ctx's error if ctx ended first; requests
// still running then finish on their own (their connections close after them). Closing a server that
// was never started, or again, does nothing.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || !s.started {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	err := s.srv.Shutdown(ctx)
	<-s.done // Serve returns as soon as the listener is closed
	if err != nil {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}

// serve checks the Host, limits the body and routes one request; 404 and 405 answer problems.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("admin handler panicked", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: "internal server error"})
		}
	}()
	// /healthz answers any Host: balancers probe it by address, and it tells nothing.
	if r.URL.Path != "/healthz" && !s.hostAllowed(r.Host) {
		WriteProblem(w, Problem{Status: http.StatusMisdirectedRequest,
			Detail: "this host name is not served here: use a loopback address or one of admin.hosts"})
		return
	}
	h, pattern := s.mux.Handler(r)
	limit := int64(maxBodyBytes)
	if l, ok := s.bodyLimits[pattern]; ok {
		limit = l
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if pattern == "" { // not found, or another method: answer ServeMux's status as a problem
		c := &captureWriter{header: http.Header{}}
		h.ServeHTTP(c, r)
		if allow := c.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		WriteProblem(w, Problem{Status: c.status})
		return
	}
	s.mux.ServeHTTP(w, r) // routes again, setting the path values
}

// hostAllowed reports whether host (the Host header, maybe with a port) is a loopback name or
// address, or one of admin.hosts. Refusing other names defeats DNS rebinding: a page whose
// name was rebound to the relay's address sends its own name.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	return host != "" && slices.Contains(s.opts.hosts, host)
}

// captureWriter keeps the status and headers a handler writes, dropping its body.
type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return len(b), nil
}

// promLogger routes promhttp's errors through slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("metrics: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

var _ promhttp.Logger = promLogger{}

// Patterns lists the endpoints added so far ("METHOD /path"), sorted.
func (s *Server) Patterns() []string {
	out := make([]string, 0, len(s.known))
	for p := range s.known {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
