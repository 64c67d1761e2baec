package store

import "sync"

// notifier calls OnDelivered from its own goroutine, so callers of
// MarkDelivered never run user code. Events are coalesced per device: while
// a device's event waits, a newer watermark replaces it, so the queue holds at
// most one event per device and a slow OnDelivered cannot make it grow
// without bound. Each device's watermarks are reported in increasing order.
type notifier struct {
	fn   func(device string, seq uint64)
	mu   sync.Mutex
	q    []delivered
	idx  map[string]int // device -> index in q
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

type delivered struct {
	device string
	seq    uint64
}

func newNotifier(fn func(string, uint64)) *notifier {
	return &notifier{
		fn:   fn,
		idx:  make(map[string]int),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// push queues an event; it never blocks.
func (n *notifier) push(device string, seq uint64) {
	n.mu.Lock()
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
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

func (n *notifier) run() {
	defer close(n.done)
	var batch []delivered
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
		spare, n.idx = n.idx, spare
		n.mu.Unlock()
		for _, e := range batch {
			n.fn(e.device, e.seq)
		}
		clear(batch)
		clear(spare)
		if stopping {
			return
		}
	}
}

// close delivers the queued events and stops the goroutine. No push may
// follow it.
func (n *notifier) close() {
	close(n.stop)
	<-n.done
}
