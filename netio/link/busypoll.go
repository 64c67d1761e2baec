package link

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// busyPoller keeps one event loop of the TCP links awake for a short window after it carried
// link traffic (Config.BusyPoll), the way Linux's busy_poll keeps a socket's reader polling
// instead of sleeping: a request through a link costs the loop's thread two wake-ups from
// epoll_wait (client to loop, device's answer to loop) on top of what a direct connection
// costs, and on a virtual machine a thread whose CPU halted takes tens to hundreds of µs to
// run again. While the window is open the loop does not sleep: the next bytes either way are
// picked up at once.
//
// How, within gnet (v2.10.0), which offers no such mode: touch queues the poller as a task on
// its loop (loop.Execute, whose eventfd makes the loop's epoll_wait return at once); the task,
// run by the loop between its epoll_waits, polls the loop's epoll set itself with a zero
// timeout until a descriptor is ready, the window closes, or another goroutine queued work for
// the loop (nudge), and returns: the loop then handles what is ready, and the link traffic it
// finds touches the poller again. A link loop's epoll set holds only connections, registered
// level-triggered (what a poll reports stays ready for the loop's own epoll_wait), and the
// loop's eventfd, registered edge-triggered but never written while the loop runs its tasks
// (gnet writes it only to wake a loop that is not already doing so). Between two polls the
// loop's goroutine yields its P to any other runnable goroutine (runtime.Gosched: the relay's
// other work runs as if the loop slept, and with GOMAXPROCS 2 a poll that kept its P made every
// other goroutine share the last one), and its thread yields its CPU (sched_yield) to any other
// runnable thread: the client or device woken by the loop's last write runs before the poll
// continues, and the CPU it spends polling is otherwise idle time.
//
// With nothing to do once the window closed, the task is not queued again and the loop sleeps
// in epoll_wait as without a poller: idle links cost no CPU.
//
// Polling only pays while the CPU is otherwise idle. When other threads want it (the machine
// is busy), a thread that sleeps in epoll_wait is the one the scheduler runs first on its
// wake-up, while a polling thread that yields waits for whole time slices of the others: its
// loop would answer later than a sleeping one. So a yield that kept the thread off its CPU for
// longer than busyPollContended ends the poll, and the loop does not poll again for a while (it
// sleeps in epoll_wait, as without a poller): busyPollBackoff, doubled for each poll in a row
// that ends so, up to busyPollBackoffMax. A poll that ends without contention resets it.
//
// touch, Run and the loop-owned fields belong to the loop; nudge and the counters are safe for
// concurrent use.
type busyPoller struct {
	loop   gnet.EventLoop
	epfd   int // the loop's epoll descriptor
	window time.Duration
	// contended is busyPollContended (a test that needs polls to end only as it says sets it
	// longer).
	contended time.Duration

	until  time.Time // the window closes (loop-owned)
	resume time.Time // no polling before (the CPU was contended; loop-owned)
	streak uint      // polls in a row that found the CPU contended (loop-owned)
	queued bool      // the task is queued or running (loop-owned)
	events [1]unix.EpollEvent

	nudged atomic.Bool   // another goroutine queued a task on the loop: end the poll so it runs
	active atomic.Bool   // the task is queued or running (read by tests)
	polls  atomic.Uint64 // epoll_waits the poller made
	busyNs atomic.Uint64 // time spent polling, ns
	backed atomic.Uint64 // polls ended because the CPU was contended
}

// A yield that kept the polling thread off its CPU longer than busyPollContended means other
// threads want that CPU (a time slice of the scheduler is 0.75 ms or more; a client or device
// woken on it runs a few µs); polling then pauses for busyPollBackoff, doubled for each poll in
// a row that found the CPU contended, up to busyPollBackoffMax.
const (
	busyPollContended  = 200 * time.Microsecond
	busyPollBackoff    = time.Millisecond
	busyPollBackoffMax = 128 * time.Millisecond
)

func newBusyPoller(loop gnet.EventLoop, epfd int, window time.Duration) *busyPoller {
	return &busyPoller{loop: loop, epfd: epfd, window: window, contended: busyPollContended}
}

// touch opens (or extends) the window after link traffic on the loop. A nil poller is off.
func (b *busyPoller) touch() {
	if b == nil {
		return
	}
	now := time.Now()
	b.until = now.Add(b.window)
	if b.queued || now.Before(b.resume) {
		return
	}
	b.active.Store(true)
	if err := b.loop.Execute(context.Background(), b); err != nil { // the engine is stopping
		b.active.Store(false)
		return
	}
	b.queued = true
}

// nudge ends a poll in progress so that the loop runs the task just queued on it (the
// watcher's wake-ups) without waiting for the window to close. A nil poller is off.
func (b *busyPoller) nudge() {
	if b != nil {
		b.nudged.Store(true)
	}
}

// Run polls the loop's epoll set until something is ready, the window closes or a nudge came.
func (b *busyPoller) Run(context.Context) error {
	start := time.Now()
	now := start
	// A nudge left from before (its task ran ahead of this one) only ends this poll early.
	for now.Before(b.until) && !b.nudged.Swap(false) {
		n, err := unix.EpollWait(b.epfd, b.events[:], 0)
		b.polls.Add(1)
		if n > 0 || (err != nil && err != unix.EINTR) {
			break
		}
		runtime.Gosched() // its P to other goroutines, then its CPU to other threads
		_, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		last := now
		if now = time.Now(); now.Sub(last) > b.contended {
			b.resume = now.Add(min(busyPollBackoff<<min(b.streak, 10), busyPollBackoffMax))
			b.streak++
			b.backed.Add(1)
			break
		}
	}
	if !b.resume.After(now) {
		b.streak = 0
	}
	b.busyNs.Add(uint64(time.Since(start)))
	b.queued = false
	b.active.Store(false)
	return nil
}
