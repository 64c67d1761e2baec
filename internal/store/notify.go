package store

import "sync"

// notifier calls OnDelivered from its own goroutine, so callers of
// MarkDelivered never run user code. Events are coalesced per device: while
// a device's event waits, a newer watermark replaces it, so the queue holds at
// most one event per device and a slow OnDelivered cannot make it grow
// without bound. Each device's watermarks are reported in increasing order.
//
// It also calls OnWindowDelivered, once per windowed frame (see window.go):
// those events are not coalesced, each names one frame.
//
// It exists from Open, and holds the events that happen before Start (a
// route may deliver and mark between the two); start installs the hooks,
// drops what a nil hook would not take, and runs the goroutine.
type notifier struct {
	fn      func(device string, seq uint64) // OnDelivered; guarded by mu
	frameFn func(device string, seq uint64) // OnWindowDelivered; guarded by mu
	started bool                            // guarded by mu
	mu      sync.Mutex
	q       []delivered
	idx     map[string]int // device -> index in q
	frames  []delivered    // windowed frames done, for frameFn
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type delivered struct {
	device string
	seq    uint64
}

func newNotifier() *notifier {
	return &notifier{
		idx:  make(map[string]int),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// start installs the hooks (either may be nil) and runs the goroutine, which
// first passes on the events held since Open.
func (n *notifier) start(fn, frameFn func(string, uint64)) {
	n.mu.Lock()
	n.fn, n.frameFn, n.started = fn, frameFn, true
	if fn == nil {
		clear(n.q)
		n.q = n.q[:0]
		clear(n.idx)
	}
	if frameFn == nil {
		n.frames = nil
	}
	n.mu.Unlock()
	go n.run()
	n.signal()
}

func (n *notifier) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// push queues an event; it never blocks.
func (n *notifier) push(device string, seq uint64) {
	n.mu.Lock()
	if n.started && n.fn == nil {
		n.mu.Unlock()
		return
	}
	if i, ok := n.idx[device]; ok {
		n.q[i].seq = seq
		n.mu.Unlock()
		return
	}
	n.idx[device] = len(n.q)
	n.q = append(n.q, delivered{device, seq})
	first := len(n.q) == 1
	n.mu.Unlock()
	if first {
		n.signal()
	}
}

// pushFrame queues a windowed frame's event; it never blocks.
func (n *notifier) pushFrame(device string, seq uint64) {
	n.mu.Lock()
	if n.started && n.frameFn == nil {
		n.mu.Unlock()
		return
	}
	n.frames = append(n.frames, delivered{device, seq})
	first := len(n.frames) == 1
	n.mu.Unlock()
	if first {
		n.signal()
	}
}

func (n *notifier) run() {
	defer close(n.done)
	var batch, frames []delivered
	spare := make(map[string]int)
	for {
		var stopping bool
		select {
		case <-n.wake:
		case <-n.stop:
			stopping = true
		}
		n.mu.Lock()
		batch, n.q = n.q, batch[:0]
		frames, n.frames = n.frames, frames[:0]
		spare, n.idx = n.idx, spare
		fn, frameFn := n.fn, n.frameFn
		n.mu.Unlock()
		for _, e := range batch {
			fn(e.device, e.seq)
		}
		for _, e := range frames {
			frameFn(e.device, e.seq)
		}
		clear(batch)
		clear(frames)
		clear(spare)
		if stopping {
			return
		}
	}
}

// close delivers the queued events and stops the goroutine; only after
// start. No push may follow it.
func (n *notifier) close() {
	close(n.stop)
	<-n.done
}
