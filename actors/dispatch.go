package actors

import (
	"sync"
	"sync/atomic"
)

// workerDispatcher runs actor mailboxes on long-lived goroutines instead of a new goroutine per
// mailbox run (protoactor's default). A fresh goroutine per run costs a spawn and, for the
// relay's deeper call paths, stack growth by copying: about a tenth of the relay's CPU at
// moderate per-device rates, where nearly every frame wakes an idle mailbox. Schedule never
// blocks (gnet event loops call it): it hands the run to an idle worker, starts a new worker
// while fewer than max exist, and otherwise falls back to a plain goroutine.
type workerDispatcher struct {
	throughput int
	max        int32
	work       chan func() // unbuffered: a send succeeds only if a worker is idle
	quit       chan struct{}
	once       sync.Once
	workers    atomic.Int32
	closed     atomic.Bool
}

func newWorkerDispatcher(max, throughput int) *workerDispatcher {
	return &workerDispatcher{throughput: throughput, max: int32(max), work: make(chan func()), quit: make(chan struct{})}
}

func (d *workerDispatcher) Throughput() int { return d.throughput }

func (d *workerDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
		return
	default:
	}
	if !d.closed.Load() && d.workers.Add(1) <= d.max {
		go d.worker(fn)
		return
	}
	if !d.closed.Load() {
		d.workers.Add(-1)
	}
	go fn()
}

func (d *workerDispatcher) worker(fn func()) {
	defer d.workers.Add(-1)
	for {
		fn()
		select {
		case fn = <-d.work:
		case <-d.quit:
			return
		}
	}
}

// close ends the idle workers; later runs get their own goroutines.
func (d *workerDispatcher) close() {
	d.once.Do(func() { d.closed.Store(true); close(d.quit) })
}
