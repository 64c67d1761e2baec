package link

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// pollers returns the busy pollers of m's TCP loops that carried a link so far.
func pollers(m *Manager) []*busyPoller {
	m.tcp.mu.Lock()
	defer m.tcp.mu.Unlock()
	var bs []*busyPoller
	for _, ls := range m.tcp.loops {
		if ls.busy != nil {
			bs = append(bs, ls.busy)
		}
	}
	return bs
}

// TestBusyPollSleepsWhenIdle: with devicelink.busy_poll on, a loop that carried link traffic
// polls for its window and then stops: after the window, with the link idle, its number of
// polls no longer grows (the loop sleeps in epoll_wait, as without busy polling). Off, the
// loops have no poller at all.
func TestBusyPollSleepsWhenIdle(t *testing.T) {
	m := startManagerWith(t, 2, func(c *Config) { c.BusyPoll = 200 * time.Microsecond })
	d := newDevice(t)
	_, client, dev := pairLink(t, m, d, nil)
	req, got := bytes.Repeat([]byte{'r'}, 64), make([]byte, 64)
	for i := range 200 {
		req[0] = byte(i)
		for _, hop := range [][2]io.ReadWriter{{client, dev}, {dev, client}} {
			if _, err := hop[0].Write(req); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(hop[1], got); err != nil || !bytes.Equal(got, req) {
				t.Fatalf("round trip %d: read %q, %v; want %q", i, got, err, req)
			}
		}
	}
	bs := pollers(m)
	if len(bs) != 1 {
		t.Fatalf("%d loops have a busy poller after one link's traffic, want 1 (the link's)", len(bs))
	}
	b := bs[0]
	// The client may read the last hop's bytes before the loop, which wrote them, touched the
	// poller after the write: a task queued on the loop now runs after that touch.
	afterLoop(t, b.loop)
	checkFor(t, 10*time.Second, func() error {
		if b.active.Load() {
			return fmt.Errorf("still polling after %d polls", b.polls.Load())
		}
		return nil
	})
	if b.busyNs.Load() == 0 {
		t.Errorf("no time spent polling after 400 hops through the link")
	}
	idle := b.polls.Load()
	time.Sleep(100 * time.Millisecond) // 500 windows
	if n := b.polls.Load(); n != idle || b.active.Load() {
		t.Errorf("idle link: the loop polled %d more times (active %v), want it asleep", n-idle, b.active.Load())
	}
	// Traffic starts it again, and it stops again.
	polled := b.busyNs.Load()
	roundTrip(t, client, dev)
	checkFor(t, 10*time.Second, func() error {
		if b.active.Load() || b.busyNs.Load() == polled {
			return fmt.Errorf("after new traffic: active %v, polled %v more", b.active.Load(), time.Duration(b.busyNs.Load()-polled))
		}
		return nil
	})

	off := startManager(t, 2, 0)
	_, client, dev = pairLink(t, off, d, nil)
	roundTrip(t, client, dev)
	off.tcp.mu.Lock()
	loops := len(off.tcp.loops)
	off.tcp.mu.Unlock()
	if bs := pollers(off); len(bs) != 0 || loops != 1 {
		t.Errorf("busy_poll 0: %d pollers on %d loops, want none on 1", len(bs), loops)
	}
}

// loopTask closes done when its loop runs it.
type loopTask struct{ done chan struct{} }

func (l loopTask) Run(context.Context) error { close(l.done); return nil }

// afterLoop waits until loop ran a task queued now: what the loop was handling is done.
func afterLoop(t *testing.T, loop gnet.EventLoop) {
	t.Helper()
	task := loopTask{done: make(chan struct{})}
	if err := loop.Execute(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	select {
	case <-task.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not run a task in 10s")
	}
}

// TestBusyPollRunEnds: a poll ends as soon as a descriptor of the set is ready, when another
// goroutine nudges it (work queued on its loop), and when its window closes; it polls at least
// once before each.
func TestBusyPollRunEnds(t *testing.T) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		t.Fatal(err)
	}
	b := newBusyPoller(nil, epfd, time.Hour)
	// A loaded machine must not end a poll as contended before the test's own reason comes (a
	// nudge left unconsumed would then end the next poll before its first look).
	b.contended = time.Hour
	run := func(why string, start func()) {
		t.Helper()
		b.until = time.Now().Add(time.Hour)
		before := b.polls.Load()
		done := make(chan struct{})
		go func() { _ = b.Run(context.Background()); close(done) }()
		checkFor(t, 10*time.Second, func() error {
			if b.polls.Load() == before {
				return fmt.Errorf("%s: no poll yet", why)
			}
			return nil
		})
		start()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the poll goes on", why)
		}
	}
	run("nudge", b.nudge)
	run("ready descriptor", func() {
		if _, err := unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
	})
	// The descriptor stays ready (level-triggered): the next poll ends at its first look.
	before := b.polls.Load()
	b.until = time.Now().Add(time.Hour)
	_ = b.Run(context.Background())
	if n := b.polls.Load() - before; n != 1 {
		t.Errorf("with a descriptor ready, the poll looked %d times, want 1", n)
	}
	if _, err := unix.Read(efd, make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	// A closed window: no poll at all.
	before = b.polls.Load()
	b.until = time.Now().Add(-time.Millisecond)
	_ = b.Run(context.Background())
	if n := b.polls.Load() - before; n != 0 {
		t.Errorf("after its window, the poll looked %d times, want 0", n)
	}
}

// TestBusyPollBacksOff: after a poll found the CPU contended, traffic does not start another
// poll until the backoff ends (the loop sleeps in epoll_wait, as without busy polling); it
// still extends the window.
func TestBusyPollBacksOff(t *testing.T) {
	b := newBusyPoller(nil, -1, time.Hour) // no loop: touch must not queue a task
	b.resume = time.Now().Add(time.Hour)
	b.touch()
	if b.queued || b.active.Load() || !b.until.After(time.Now()) {
		t.Errorf("touch while backing off: queued %v, active %v, window until %v; want a window and no poll", b.queued, b.active.Load(), b.until)
	}
}
