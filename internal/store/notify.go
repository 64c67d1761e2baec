package store

import "sync"

// notifier calls OnDelivered from its own goroutine, in the order events were
// pushed, so callers of MarkDelivered never run user code and watermarks of a
// device are reported in increasing order.
type notifier struct {
	fn   func(device string, seq uint64)
	mu   sync.Mutex
	q    []delivered
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

type delivered struct {
	device string
	seq    uint64
}

func newNotifier(fn func(string, uint64)) *notifier {
	return &notifier{fn: fn, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// push queues an event; it never blocks (the queue is unbounded, and holds
// at most one event per completed frame).
func (n *notifier) push(device string, seq uint64) {
	n.mu.Lock()
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
	for {
		var stopping bool
		select {
		case <-n.wake:
		case <-n.stop:
			stopping = true
		}
		n.mu.Lock()
		batch, n.q = n.q, batch[:0]
		n.mu.Unlock()
		for _, e := range batch {
			n.fn(e.device, e.seq)
		}
		clear(batch)
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
