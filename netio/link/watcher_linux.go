package link

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// watcher tells pairs when a socket they hold bytes for can take more: one goroutine waits on
// an epoll set of its own, where each such socket is armed once (EPOLLOUT, one-shot), and runs
// the pair on its event loop when it fires. gnet offers no such signal for bytes written
// outside its outbound buffer (pair.go says why the pairs write outside it).
//
// arm and forget are called from event loops.
type watcher struct {
	epfd, efd int
	done      chan struct{}

	mu      sync.Mutex      // guards pairs and stopped, and is held around epoll_ctl
	pairs   map[int32]*pair // by descriptor
	stopped bool
}

func newWatcher() (*watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(efd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	w := &watcher{epfd: epfd, efd: efd, done: make(chan struct{}), pairs: make(map[int32]*pair)}
	go w.run()
	return w, nil
}

func (w *watcher) run() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == w.efd {
				return
			}
			w.mu.Lock()
			p := w.pairs[ev.Fd]
			w.mu.Unlock()
			if p != nil {
				// A pair that ended meanwhile ignores it; an engine that stops runs nothing. A
				// loop busy polling stops polling to run it.
				_ = p.loop.Execute(context.Background(), p)
				p.busy.nudge()
			}
		}
	}
}

// arm asks for one wake-up of l's pair once l's socket is writable (or fails). Once the
// watcher stopped it does nothing: the engine is closing every socket.
func (w *watcher) arm(l *leg, p *pair) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(l.fd)}
	if l.watch {
		return unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, l.fd, &ev)
	}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, l.fd, &ev); err != nil {
		return err
	}
	w.pairs[int32(l.fd)] = p
	l.watch = true
	return nil
}

// forget takes l's socket out of the set; it must be called before the socket is closed.
func (w *watcher) forget(l *leg) {
	if !l.watch {
		return
	}
	l.watch = false
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
	delete(w.pairs, int32(l.fd))
}

// stop ends the goroutine and closes the set. It is called before the engine stops, so no
// wake-up is sent to a loop that is gone.
func (w *watcher) stop() {
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	_, _ = unix.Write(w.efd, one)
	<-w.done
	w.mu.Lock()
	w.stopped = true
	_ = unix.Close(w.epfd)
	_ = unix.Close(w.efd)
	w.mu.Unlock()
}

// loopPollFD is the epoll descriptor of gnet's event loop el, read from gnet's unexported
// eventloop.poller.fd (gnet v2.10.0; pair.go says why the pairs need it). It checks the
// answer by modifying fd's registration in that set to what gnet registered (reading), so a
// gnet that changed shape fails here, when the first client connects, rather than later.
func loopPollFD(el gnet.EventLoop, fd int) (int, error) {
	v := reflect.ValueOf(el)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		if p := v.Elem().FieldByName("poller"); p.IsValid() && p.Kind() == reflect.Pointer && !p.IsNil() {
			if f := p.Elem().FieldByName("fd"); f.IsValid() && f.Kind() == reflect.Int {
				epfd := int(f.Int())
				err := unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLPRI, Fd: int32(fd)})
				if err != nil {
					return -1, fmt.Errorf("gnet's event loop epoll descriptor %d: %w", epfd, err)
				}
				return epfd, nil
			}
		}
	}
	return -1, errors.New("gnet's event loop has no poller.fd: this gnet version is not the one the device link engine was built for")
}
