package deliver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// seen is one request as the test server received it.
type seen struct {
	method, path, contentType, auth, body string
	at                                    time.Time
}

// recorder is a test server that records requests and answers with the
// next handler in line (the last one repeats).
type recorder struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []seen
	handlers []http.HandlerFunc
}

func newRecorder(t *testing.T, handlers ...http.HandlerFunc) *recorder {
	t.Helper()
	rec := &recorder{handlers: handlers}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), r.Header.Get("Authorization"), string(body), time.Now()})
		h := rec.handlers[min(len(rec.reqs), len(rec.handlers))-1]
		rec.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) seen() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func newClient(t *testing.T, o deliver.Options) *deliver.Client {
	t.Helper()
	c := deliver.NewClient(o)
	t.Cleanup(c.Close)
	return c
}

var fast = &deliver.Policy{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

func TestDoSuccess(t *testing.T) {
	srv := newRecorder(t, status(http.StatusOK))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	body := []byte(`[{"a":1}]`)
	res := c.Do(context.Background(), &deliver.Request{
		URL:    srv.URL + "/d/SN%2F1?imei=1",
		Header: [][2]string{{"Authorization", "Bearer x"}},
		Body:   body,
	})
	if res.Err != nil || res.Status != http.StatusOK {
		t.Fatalf("Do = %+v, want status 200", res)
	}
	if res.Latency <= 0 {
		t.Errorf("Latency = %v, want > 0", res.Latency)
	}
	body[0] = 'X' // the client must not hold on to it
	got := srv.seen()
	want := seen{method: "POST", path: "/d/SN%2F1", contentType: "application/json", auth: "Bearer x", body: `[{"a":1}]`}
	if len(got) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(got))
	}
	got[0].at = time.Time{}
	if got[0] != want {
		t.Errorf("server saw %+v, want %+v", got[0], want)
	}

	// The same client, a cancellable context, a PUT with its own type.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res = c.Do(ctx, &deliver.Request{Method: "PUT", URL: srv.URL + "/blob.json", ContentType: "text/plain", Body: []byte("x")})
	if res.Err != nil || res.Status != http.StatusOK {
		t.Fatalf("Do(PUT) = %+v, want status 200", res)
	}
	if got := srv.seen()[1]; got.method != "PUT" || got.contentType != "text/plain" || got.path != "/blob.json" {
		t.Errorf("server saw %+v, want PUT /blob.json text/plain", got)
	}
}

func TestDeliverRetriesWithRebuiltBody(t *testing.T) {
	srv := newRecorder(t, status(http.StatusServiceUnavailable), status(http.StatusOK))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	var results []deliver.Result
	req := &deliver.Request{URL: srv.URL}
	n, err := deliver.Deliver(context.Background(), c, fast, req,
		func(attempt int, r *deliver.Request) error {
			r.Body = fmt.Appendf(r.Body[:0], `[{"attempt":%d}]`, attempt)
			return nil
		},
		func(attempt int, res deliver.Result) {
			if attempt != len(results) {
				t.Errorf("onResult attempt %d, want %d", attempt, len(results))
			}
			results = append(results, res)
		})
	if err != nil || n != 2 {
		t.Fatalf("Deliver = %d, %v, want 2, nil", n, err)
	}
	if len(results) != 2 || results[0].Status != 503 || results[1].Status != 200 {
		t.Fatalf("results = %+v, want statuses 503, 200", results)
	}
	got := srv.seen()
	if len(got) != 2 || got[0].body != `[{"attempt":0}]` || got[1].body != `[{"attempt":1}]` {
		t.Fatalf("server saw %+v, want bodies with attempt 0 and 1", got)
	}
}

func TestDeliverHonoursRetryAfter(t *testing.T) {
	srv := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	}, status(http.StatusNoContent))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	var first deliver.Result
	n, err := deliver.Deliver(context.Background(), c, fast, &deliver.Request{URL: srv.URL, Body: []byte("[]")}, nil,
		func(attempt int, res deliver.Result) {
			if attempt == 0 {
				first = res
			}
		})
	if err != nil || n != 2 {
		t.Fatalf("Deliver = %d, %v, want 2, nil", n, err)
	}
	if first.Status != 429 || first.RetryAfter != time.Second {
		t.Errorf("first attempt = %+v, want status 429 with RetryAfter 1s", first)
	}
	got := srv.seen()
	if gap := got[1].at.Sub(got[0].at); gap < time.Second {
		t.Errorf("second attempt %v after the first, want at least 1s", gap)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	srv := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	res := c.Do(context.Background(), &deliver.Request{URL: srv.URL + "/in", Body: []byte("[]")})
	if res.Err != nil || res.Status != http.StatusFound {
		t.Fatalf("Do = %+v, want status 302", res)
	}
	p := &deliver.Policy{InitialBackoff: time.Millisecond, MaxAttempts: 2}
	n, err := deliver.Deliver(context.Background(), c, p, &deliver.Request{URL: srv.URL + "/in", Body: []byte("[]")}, nil, nil)
	if !errors.Is(err, deliver.ErrGaveUp) || n != 2 {
		t.Fatalf("Deliver = %d, %v, want 2, ErrGaveUp", n, err)
	}
	for _, s := range srv.seen() {
		if s.path != "/in" {
			t.Errorf("server saw a request for %s: the redirect was followed", s.path)
		}
	}
}

func TestCustomSuccess(t *testing.T) {
	srv := newRecorder(t, status(http.StatusBadRequest))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	p := &deliver.Policy{Success: func(s int) bool { return s == 200 || s == 400 || s == 500 }}
	n, err := deliver.Deliver(context.Background(), c, p, &deliver.Request{URL: srv.URL}, nil, nil)
	if err != nil || n != 1 {
		t.Fatalf("Deliver = %d, %v, want 1, nil", n, err)
	}
}

func TestPrivateAddressRefused(t *testing.T) {
	srv := newRecorder(t, status(http.StatusOK))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := newClient(t, deliver.Options{})
	for _, u := range []string{
		srv.URL,
		"http://localhost:" + port,
		"http://[::1]:" + port,
		"http://[::ffff:127.0.0.1]:" + port,
		"http://0.0.0.0:" + port,
	} {
		res := c.Do(context.Background(), &deliver.Request{URL: u, Body: []byte("[]")})
		if res.Status != 0 || !errors.Is(res.Err, deliver.ErrPrivateAddress) {
			t.Errorf("Do(%s) = %+v, want status 0 and ErrPrivateAddress", u, res)
		}
	}
	if n := len(srv.seen()); n != 0 {
		t.Fatalf("server saw %d requests, want none", n)
	}

	allowed := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	for _, u := range []string{srv.URL, "http://localhost:" + port} {
		if res := allowed.Do(context.Background(), &deliver.Request{URL: u, Body: []byte("[]")}); res.Err != nil || res.Status != 200 {
			t.Errorf("with private networks allowed, Do(%s) = %+v, want status 200", u, res)
		}
	}
}

func TestConnectionRefusedIsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now

	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	var results []deliver.Result
	n, err := deliver.Deliver(context.Background(), c, fast, &deliver.Request{URL: "http://" + addr + "/x", Body: []byte("[]")}, nil,
		func(attempt int, res deliver.Result) {
			results = append(results, res)
			if attempt == 1 { // now start the server on that port
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("listen again on %s: %v", addr, err)
				}
				srv := httptest.NewUnstartedServer(status(http.StatusAccepted))
				srv.Listener.Close()
				srv.Listener = ln
				srv.Start()
				t.Cleanup(srv.Close)
			}
		})
	if err != nil || n != 3 {
		t.Fatalf("Deliver = %d, %v, want 3, nil", n, err)
	}
	for _, res := range results[:2] {
		if res.Status != 0 || res.Err == nil || !strings.Contains(res.Err.Error(), "refused") {
			t.Errorf("attempt on a closed port = %+v, want status 0 and connection refused", res)
		}
	}
	if results[2].Status != http.StatusAccepted {
		t.Errorf("last attempt = %+v, want 202", results[2])
	}
}

func TestDeliverStopsOnCancel(t *testing.T) {
	srv := newRecorder(t, status(http.StatusServiceUnavailable))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := deliver.Deliver(ctx, c, fast, &deliver.Request{URL: srv.URL}, nil, func(attempt int, _ deliver.Result) {
		if attempt == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || n != 3 {
		t.Fatalf("Deliver = %d, %v, want 3, context.Canceled", n, err)
	}
}

// hanging is a handler that never answers; it returns when the client goes
// away (the client's Close aborts its connections).
func hanging(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func TestCancelMidRequest(t *testing.T) {
	srv := newRecorder(t, hanging)
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true, Timeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(srv.seen()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	n, err := deliver.Deliver(ctx, c, nil, &deliver.Request{URL: srv.URL, Body: []byte("[]")}, nil, func(_ int, res deliver.Result) {
		if res.Err != context.Canceled {
			t.Errorf("attempt = %+v, want ctx.Err()", res)
		}
	})
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("Deliver = %d, %v, want 1, context.Canceled", n, err)
	}
}

func TestRequestTimeout(t *testing.T) {
	srv := newRecorder(t, hanging)
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true, Timeout: 100 * time.Millisecond})
	res := c.Do(context.Background(), &deliver.Request{URL: srv.URL, Body: []byte("[]")})
	if res.Status != 0 || !errors.Is(res.Err, deliver.ErrTimeout) {
		t.Fatalf("Do = %+v, want status 0 and ErrTimeout", res)
	}
	if res.Latency < 100*time.Millisecond {
		t.Errorf("Latency = %v, want at least the timeout", res.Latency)
	}

	// A context deadline shorter than the timeout wins.
	c2 := newClient(t, deliver.Options{AllowPrivateNetworks: true, Timeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res = c2.Do(ctx, &deliver.Request{URL: srv.URL, Body: []byte("[]")})
	if res.Status != 0 || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("Do with a ctx deadline = %+v, want context.DeadlineExceeded", res)
	}
}

func TestLargeResponseBodyKeepsStatus(t *testing.T) {
	big := strings.Repeat("x", 3<<20)
	srv := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, big)
	})
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	if res := c.Do(context.Background(), &deliver.Request{URL: srv.URL}); res.Err != nil || res.Status != http.StatusCreated {
		t.Fatalf("Do = %+v, want status 201", res)
	}
}

func TestClosed(t *testing.T) {
	srv := newRecorder(t, status(http.StatusOK))
	c := deliver.NewClient(deliver.Options{AllowPrivateNetworks: true})
	if res := c.Do(context.Background(), &deliver.Request{URL: srv.URL}); res.Status != 200 {
		t.Fatalf("Do = %+v, want 200", res)
	}
	c.Close()
	c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ctx := range []context.Context{context.Background(), ctx} {
		if res := c.Do(ctx, &deliver.Request{URL: srv.URL}); !errors.Is(res.Err, deliver.ErrClosed) {
			t.Errorf("Do after Close = %+v, want ErrClosed", res)
		}
	}
}

func TestConcurrentDo(t *testing.T) {
	srv := newRecorder(t, status(http.StatusOK))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true, MaxConnsPerHost: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 25; i++ {
				body := fmt.Appendf(nil, `[{"g":%d,"i":%d}]`, g, i)
				if res := c.Do(ctx, &deliver.Request{URL: srv.URL, Body: body}); res.Status != 200 {
					t.Errorf("Do = %+v, want 200", res)
				}
			}
		})
	}
	wg.Wait()
	if n := len(srv.seen()); n != 200 {
		t.Fatalf("server saw %d requests, want 200", n)
	}
}

// TestStaleKeepAliveConnection: a server that drops idle connections must
// not turn the next request into a failed attempt.
func TestStaleKeepAliveConnection(t *testing.T) {
	srv := httptest.NewUnstartedServer(status(http.StatusOK))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	for i := range 3 {
		if res := c.Do(context.Background(), &deliver.Request{URL: srv.URL, Body: []byte("[]")}); res.Err != nil || res.Status != 200 {
			t.Fatalf("request %d = %+v, want 200", i, res)
		}
		time.Sleep(100 * time.Millisecond) // the server closes the idle connection
	}
}

// A batch waiting to retry does not hold its route's slot: with one slot, a second batch is
// delivered while the first waits out its Retry-After.
func TestSlotsFreeDuringBackoff(t *testing.T) {
	srv := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	slots := make(chan struct{}, 1)
	p := &deliver.Policy{InitialBackoff: time.Millisecond, MaxAttempts: 2}
	failed := make(chan struct{})
	events := make(chan string, 2)
	go func() {
		_, err := deliver.Deliver(context.Background(), c, p, &deliver.Request{URL: srv.URL + "/down", Slots: slots}, nil,
			func(attempt int, _ deliver.Result) {
				if attempt == 0 {
					close(failed)
				}
			})
		events <- fmt.Sprintf("down: %v", errors.Is(err, deliver.ErrGaveUp))
	}()
	<-failed
	_, err := deliver.Deliver(context.Background(), c, p, &deliver.Request{URL: srv.URL + "/up", Slots: slots}, nil, nil)
	events <- fmt.Sprintf("up: %v", err)
	if first, second := <-events, <-events; first != "up: <nil>" || second != "down: true" {
		t.Fatalf("events %q, %q; want the healthy batch delivered while the failing one waits, then the failing one to give up", first, second)
	}
	if len(slots) != 0 {
		t.Errorf("%d slots still held after both deliveries", len(slots))
	}
}

// A build error wrapping ErrNotSent fails the attempt without a request, and Deliver retries.
func TestBuildNotSentRetried(t *testing.T) {
	srv := newRecorder(t, status(http.StatusNoContent))
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true})
	var results []string
	n, err := deliver.Deliver(context.Background(), c, fast, &deliver.Request{URL: srv.URL}, func(attempt int, _ *deliver.Request) error {
		if attempt < 2 {
			return fmt.Errorf("token endpoint down: %w", deliver.ErrNotSent)
		}
		return nil
	}, func(attempt int, res deliver.Result) {
		results = append(results, fmt.Sprint(attempt, res.Status, res.Err != nil))
	})
	if err != nil || n != 3 {
		t.Fatalf("Deliver = %d, %v; want 3 attempts, success", n, err)
	}
	if got := strings.Join(results, ","); got != "0 0 true,1 0 true,2 204 false" {
		t.Errorf("attempts %s", got)
	}
	if len(srv.seen()) != 1 {
		t.Errorf("server saw %d requests, want only the third attempt", len(srv.seen()))
	}
}
