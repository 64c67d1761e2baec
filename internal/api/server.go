package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Server is the admin HTTP server.
//
// Concurrency: [Server.Handle] must be called before [Server.Start] and not concurrently with anything
// else. Start and [Server.Close] are safe for concurrent use; each takes effect once. Handlers run
// concurrently on fasthttp's goroutines and must not keep the RequestCtx, nor anything borrowed from it,
// after they return.
type Server struct {
	addr   string
	log    *slog.Logger
	srv    *fasthttp.Server
	routes []route

	mu      sync.Mutex
	started bool
	closed  bool
	done    chan struct{} // closed when the serving goroutine has returned
}

type route struct {
	method  string
	pattern string
	segs    []string // pattern split at '/'; ":name" matches any one segment
	handler fasthttp.RequestHandler
}

// Timeouts of the admin server's connections.
const (
	readTimeout  = 10 * time.Second
	writeTimeout = 30 * time.Second
	idleTimeout  = 60 * time.Second
)

// New returns a server that will listen on addr (host:port; port 0 picks a free port) and serve:
//
//	GET /healthz  200 "ok" while health returns nil, else 503 with the error's text (nil health: always ok)
//	GET /metrics  reg in the Prometheus text exposition format (not served if reg is nil)
//
// Any other path answers 404, a known path with another method 405. Add endpoints with [Server.Handle]
// before [Server.Start]. A nil log discards the server's log.
func New(addr string, reg *prometheus.Registry, health func() error, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "api")
	s := &Server{addr: addr, log: log}
	s.srv = &fasthttp.Server{
		Handler:            s.serve,
		Name:               "fleetrelay",
		ReadTimeout:        readTimeout,
		WriteTimeout:       writeTimeout,
		IdleTimeout:        idleTimeout,
		MaxRequestBodySize: 1 << 20,
		CloseOnShutdown:    true,
		// The worker pool's cleaner goroutine sleeps this long between rounds and only then notices
		// that the server stopped: keep it short so it is gone soon after Close.
		MaxIdleWorkerDuration: time.Second,
		Logger:                fasthttpLogger{log},
	}

	s.Handle(fasthttp.MethodGet, "/healthz", func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "no-store")
		ctx.SetContentType("text/plain; charset=utf-8")
		if health != nil {
			if err := health(); err != nil {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
				ctx.SetBodyString(err.Error())
				return
			}
		}
		ctx.SetBodyString("ok")
	})
	if reg != nil {
		metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:      promLogger{log},
			ErrorHandling: promhttp.ContinueOnError,
		})
		s.Handle(fasthttp.MethodGet, "/metrics", fasthttpadaptor.NewFastHTTPHandler(metrics))
	}
	return s
}

// Handle adds an endpoint: requests with method and a path matching pattern go to h. A pattern is an
// absolute path whose segments may be ":name" to match any one segment; h reads it with [Param]. A GET
// endpoint also answers HEAD. Handle panics if called after Start, or if the endpoint exists already:
// both are programming errors.
func (s *Server) Handle(method, pattern string, h fasthttp.RequestHandler) {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		panic("api: Handle called after Start")
	}
	if method == "" || !strings.HasPrefix(pattern, "/") || h == nil {
		panic(fmt.Sprintf("api: Handle(%q, %q): want a method, an absolute path and a handler", method, pattern))
	}
	for _, r := range s.routes {
		if r.method == method && r.pattern == pattern {
			panic(fmt.Sprintf("api: Handle(%q, %q) called twice", method, pattern))
		}
	}
	s.routes = append(s.routes, route{
		method:  method,
		pattern: pattern,
		segs:    strings.Split(pattern, "/"),
		handler: h,
	})
}

// Param returns the path segment matched by ":name" in the pattern of the endpoint serving ctx, or "".
func Param(ctx *fasthttp.RequestCtx, name string) string {
	v, _ := ctx.UserValue(paramKey(name)).(string)
	return v
}

// paramKey keeps path parameters apart from other user values.
type paramKey string

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
	s.started = true
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil {
			s.log.Error("admin server stopped", "err", err)
		}
	}()
	s.log.Info("admin server listening", "addr", ln.Addr().String())
	return ln.Addr(), nil
}

// Close stops accepting connections, closes idle ones, waits for requests in progress to finish or for
// ctx to end, and waits for the serving goroutine. It returns ctx's error if ctx ended first; requests
// still running then finish on their own. Closing a server that was never started, or again, does
// nothing.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || !s.started {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	err := s.srv.ShutdownWithContext(ctx)
	<-s.done // Serve returns as soon as the listener is closed
	if err != nil {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}

// serve routes one request. Routes are read-only once the server has started.
func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("admin handler panicked", "path", string(ctx.Path()), "panic", p, "stack", string(debug.Stack()))
			ctx.Error("internal server error", fasthttp.StatusInternalServerError)
		}
	}()

	path := string(ctx.Path())
	method := string(ctx.Method())
	var allowed []string
	for i := range s.routes {
		r := &s.routes[i]
		params, ok := r.match(path)
		if !ok {
			continue
		}
		if r.method != method && (method != fasthttp.MethodHead || r.method != fasthttp.MethodGet) {
			allowed = append(allowed, r.method)
			if r.method == fasthttp.MethodGet {
				allowed = append(allowed, fasthttp.MethodHead)
			}
			continue
		}
		for j := 0; j+1 < len(params); j += 2 {
			ctx.SetUserValue(paramKey(params[j]), params[j+1])
		}
		r.handler(ctx)
		return
	}
	if len(allowed) > 0 {
		sort.Strings(allowed)
		ctx.Error(http.StatusText(http.StatusMethodNotAllowed), fasthttp.StatusMethodNotAllowed)
		ctx.Response.Header.Set("Allow", strings.Join(allowed, ", ")) // after Error, which resets headers
		return
	}
	ctx.Error(http.StatusText(http.StatusNotFound), fasthttp.StatusNotFound)
}

// match reports whether path matches the route's pattern and returns the ":name" parameters as
// name, value pairs.
func (r *route) match(path string) (params []string, ok bool) {
	if !strings.Contains(r.pattern, "/:") {
		return nil, path == r.pattern
	}
	rest := path
	for i, seg := range r.segs {
		part := rest
		if i < len(r.segs)-1 {
			var found bool
			if part, rest, found = strings.Cut(rest, "/"); !found {
				return nil, false
			}
		} else if strings.Contains(part, "/") {
			return nil, false
		}
		switch {
		case strings.HasPrefix(seg, ":"):
			if part == "" {
				return nil, false
			}
			params = append(params, seg[1:], part)
		case part != seg:
			return nil, false
		}
	}
	return params, true
}

// fasthttpLogger routes fasthttp's log through slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...))
}

// promLogger routes promhttp's errors through slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("metrics: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

var (
	_ fasthttp.Logger = fasthttpLogger{}
	_ promhttp.Logger = promLogger{}
)
