package netio

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// holder is a Dispatcher whose store is stuck: it keeps the done funcs of NDJSON lines until
// released, and from then on answers at once.
type holder struct {
	mu       sync.Mutex
	held     []func()
	released bool
	lines    atomic.Int64
	bytes    atomic.Int64
}

func (h *holder) Open(Conn, *native.Hello) (Session, error) { return nil, nil }
func (h *holder) UData(Conn, *native.UData, []byte)         {}
func (h *holder) Lines(_ string, _ bool, _ netip.AddrPort, records [][]byte, done func()) {
	for _, r := range records {
		h.lines.Add(1)
		h.bytes.Add(int64(len(r)))
	}
	h.mu.Lock()
	if !h.released {
		h.held = append(h.held, done)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	done()
}

func (h *holder) release() {
	h.mu.Lock()
	held := h.held
	h.held, h.released = nil, true
	h.mu.Unlock()
	for _, f := range held {
		f()
	}
}

// steady waits until f's value has not changed for a while and returns it.
func steady(t *testing.T, f func() int64) int64 {
	t.Helper()
	last, since := f(), time.Now()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if v := f(); v != last {
			last, since = v, time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			return v
		}
	}
	t.Fatalf("value still changing after a minute: %d", last)
	return 0
}

// While the lines read but not yet stored fill the in-flight budget, the NDJSON listener reads
// nothing more: the gateway's writes stall (TCP flow control) instead of lines piling up in the
// relay's memory. Once the store catches up, every line arrives.
func TestNDJSONBackpressure(t *testing.T) {
	const budget = 64 << 10
	h := &holder{}
	srv := New(Options{NDJSON: "127.0.0.1:0", NDJSONInflight: budget}, h)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.Background())

	c, err := net.Dial("tcp", srv.NDJSONAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const total = 400_000 // ≈40 MB: far more than the socket buffers hold
	written, errc := flood(c, total)

	read := steady(t, h.bytes.Load)
	stalled := steady(t, written.Load)
	if stalled >= total {
		t.Fatalf("the gateway wrote all %d lines while the store held everything back", total)
	}
	// One read may overshoot the budget: the budget is checked before each read.
	if max := int64(budget + ndjsonMaxRead + 64<<10); read > max {
		t.Fatalf("%d bytes of lines dispatched while none was stored, want at most %d", read, max)
	}
	if got := srv.Stats().NDJSONInflight; got != read {
		t.Errorf("NDJSONInflight = %d, want %d", got, read)
	}
	t.Logf("stalled: gateway wrote %d of %d lines, relay read %d bytes of lines", stalled, total, read)

	h.release()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := steady(t, h.lines.Load); n != total {
		t.Fatalf("%d lines dispatched, want %d", n, total)
	}
	if got := srv.Stats().NDJSONInflight; got != 0 {
		t.Errorf("NDJSONInflight = %d after everything was stored, want 0", got)
	}
}

// While paused (the store refuses new data) the NDJSON listener reads nothing, however much
// budget is left: the gateway's writes stall, no line is read to be refused. Resumed, every line
// arrives; a drain wakes a paused reader so its connection closes.
func TestNDJSONPause(t *testing.T) {
	h := &holder{released: true} // a store that answers at once
	srv := New(Options{NDJSON: "127.0.0.1:0"}, h)
	srv.PauseNDJSON(true) // before Start, as the relay does when the store opens refusing
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.Background())

	c, err := net.Dial("tcp", srv.NDJSONAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const total = 200_000 // ≈20 MB: more than the socket buffers hold
	written, errc := flood(c, total)
	if stalled := steady(t, written.Load); stalled >= total {
		t.Fatalf("the gateway wrote all %d lines while the listener was paused", total)
	}
	if n := h.lines.Load(); n != 0 {
		t.Fatalf("%d lines read while paused", n)
	}

	srv.PauseNDJSON(false)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := steady(t, h.lines.Load); n != total {
		t.Fatalf("%d lines dispatched after resuming, want %d", n, total)
	}

	// Paused again, then drained: the reader wakes and closes the connection.
	srv.PauseNDJSON(true)
	if _, err := fmt.Fprintf(c, `{"serial":"G1"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	srv.Drain()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after drain = %v, want the connection closed", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// flood writes total NDJSON lines of ten gateways' devices to c in a goroutine, counting the
// lines handed to the socket; errc gets the writer's end (nil once all are flushed).
func flood(c net.Conn, total int) (written *atomic.Int64, errc chan error) {
	written, errc = new(atomic.Int64), make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(c, 32<<10)
		for i := range total {
			if _, err := fmt.Fprintf(w, `{"serial":"G%d","seq":%d,"pad":"%070d"}`+"\n", i%10, i, i); err != nil {
				errc <- err
				return
			}
			written.Add(1)
		}
		errc <- w.Flush()
	}()
	return written, errc
}
