package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

// checkNoLeaks waits until only the goroutines that ran before the test are left.
func checkNoLeaks(t *testing.T, before goleak.Option) {
	t.Helper()
	checkfor.Check(t, 5*time.Second, 50*time.Millisecond, func() error {
		return goleak.Find(before)
	})
}

type client struct {
	t    *testing.T
	base string
	tr   *http.Transport
	c    *http.Client
}

func newClient(t *testing.T, addr net.Addr) *client {
	tr := &http.Transport{}
	return &client{t: t, base: "http://" + addr.String(), tr: tr, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (c *client) do(method, path string) (int, http.Header, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func (c *client) want(method, path string, wantStatus int, wantBody string) http.Header {
	c.t.Helper()
	status, h, body := c.do(method, path)
	if status != wantStatus || !strings.Contains(body, wantBody) {
		c.t.Fatalf("%s %s = %d %q, want %d with %q", method, path, status, body, wantStatus, wantBody)
	}
	return h
}

func TestServer(t *testing.T) {
	before := goleak.IgnoreCurrent()

	reg := prometheus.NewRegistry()
	frames := prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetrelay_test_frames_total", Help: "Frames."})
	reg.MustRegister(frames)
	frames.Add(42)

	var unhealthy atomic.Pointer[error]
	health := func() error {
		if err := unhealthy.Load(); err != nil {
			return *err
		}
		return nil
	}

	s := api.New("127.0.0.1:0", reg, health, nil)
	s.Handle(http.MethodPost, "/devicelink/{device}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "link to %s", r.PathValue("device"))
	})
	s.Handle(http.MethodDelete, "/devicelink/{token}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	s.Handle(http.MethodGet, "/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })

	addr, err := s.Start()
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if tcp, ok := addr.(*net.TCPAddr); !ok || tcp.Port == 0 {
		t.Fatalf("Start() address = %v, want a TCP address with its port", addr)
	}
	c := newClient(t, addr)

	h := c.want("GET", "/healthz", 200, "ok")
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /healthz Content-Type = %q, want text/plain", ct)
	}
	if _, _, body := c.do("GET", "/healthz"); body != "ok" {
		t.Fatalf("GET /healthz body = %q, want %q", body, "ok")
	}
	c.want("HEAD", "/healthz", 200, "")
	down := errors.New("store: disk full")
	unhealthy.Store(&down)
	c.want("GET", "/healthz", 503, "store: disk full")
	unhealthy.Store(nil)
	c.want("GET", "/healthz", 200, "ok")

	h = c.want("GET", "/metrics", 200, "fleetrelay_test_frames_total 42")
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics Content-Type = %q, want the text exposition format", ct)
	}
	c.want("GET", "/metrics", 200, "# HELP fleetrelay_test_frames_total Frames.")

	c.want("POST", "/devicelink/356307042441013", 201, "link to 356307042441013")
	c.want("DELETE", "/devicelink/abc", 204, "")
	c.want("GET", "/nope", 404, "Not Found")
	c.want("GET", "/devicelink", 404, "")
	c.want("POST", "/devicelink/", 404, "")
	c.want("POST", "/devicelink/a/b", 404, "")
	h = c.want("POST", "/healthz", 405, "Method Not Allowed")
	if allow := h.Get("Allow"); allow != "GET, HEAD" {
		t.Fatalf("POST /healthz Allow = %q, want %q", allow, "GET, HEAD")
	}
	h = c.want("GET", "/devicelink/x", 405, "")
	if allow := h.Get("Allow"); allow != "DELETE, POST" {
		t.Fatalf("GET /devicelink/x Allow = %q, want %q", allow, "DELETE, POST")
	}
	c.want("GET", "/panic", 500, "internal server error")
	c.want("GET", "/healthz", 200, "ok") // still serving after a panic

	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Handle after Start did not panic")
			}
		}()
		s.Handle("GET", "/late", func(http.ResponseWriter, *http.Request) {})
	}()
	if _, err := s.Start(); !errors.Is(err, api.ErrStarted) {
		t.Fatalf("second Start() = %v, want ErrStarted", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	if _, err := s.Start(); !errors.Is(err, api.ErrClosed) {
		t.Fatalf("Start() after Close = %v, want ErrClosed", err)
	}
	c.tr.CloseIdleConnections()
	if _, err := c.c.Get(c.base + "/healthz"); err == nil {
		t.Fatal("GET /healthz after Close succeeded")
	}
	c.tr.CloseIdleConnections()
	checkNoLeaks(t, before)
}

// TestCloseWaitsForRequests checks that Close lets a request in progress finish.
func TestCloseWaitsForRequests(t *testing.T) {
	before := goleak.IgnoreCurrent()
	entered, release := make(chan struct{}), make(chan struct{})
	s := api.New("127.0.0.1:0", nil, nil, nil)
	s.Handle("GET", "/slow", func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = w.Write([]byte("done"))
	})
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, addr)
	got := make(chan string, 1)
	go func() {
		_, _, body := c.do("GET", "/slow")
		got <- body
	}()
	<-entered
	c2 := newClient(t, addr)
	c2.want("GET", "/metrics", 404, "") // no registry, no /metrics
	c2.tr.CloseIdleConnections()

	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close() = %v before the request in progress finished", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if body := <-got; body != "done" {
		t.Fatalf("GET /slow = %q during Close, want %q", body, "done")
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close() = %v", err)
	}
	c.tr.CloseIdleConnections()
	checkNoLeaks(t, before)
}

// TestCloseTimeout checks that Close gives up on a request in progress when its context ends, and still
// waits for the serving goroutine.
func TestCloseTimeout(t *testing.T) {
	before := goleak.IgnoreCurrent()
	entered, release := make(chan struct{}), make(chan struct{})
	s := api.New("127.0.0.1:0", nil, nil, nil)
	s.Handle("GET", "/slow", func(http.ResponseWriter, *http.Request) {
		close(entered)
		<-release
	})
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.do("GET", "/slow")
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close() = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	<-done
	c.tr.CloseIdleConnections()
	checkNoLeaks(t, before)
}

func TestStartErrors(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s := api.New("127.0.0.1:0", nil, nil, nil)
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close() before Start = %v", err)
	}
	if _, err := s.Start(); !errors.Is(err, api.ErrClosed) {
		t.Fatalf("Start() after Close = %v, want ErrClosed", err)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s = api.New(busy.Addr().String(), nil, nil, nil)
	if _, err := s.Start(); err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Fatalf("Start() on a busy address = %v, want a listen error", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close() after a failed Start = %v", err)
	}

	if _, err := api.New("127.0.0.1:nope", nil, nil, nil).Start(); err == nil {
		t.Fatal("Start() on a bad address succeeded")
	}

	for _, bad := range []func(s *api.Server){
		func(s *api.Server) { s.Handle("GET", "healthz", func(http.ResponseWriter, *http.Request) {}) },
		func(s *api.Server) { s.Handle("", "/x", func(http.ResponseWriter, *http.Request) {}) },
		func(s *api.Server) { s.Handle("GET", "/x", nil) },
		func(s *api.Server) { s.Handle("GET", "/healthz", func(http.ResponseWriter, *http.Request) {}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("Handle with a bad or duplicate endpoint did not panic")
				}
			}()
			bad(api.New("127.0.0.1:0", nil, nil, nil))
		}()
	}
	checkNoLeaks(t, before)
}
