package link

import (
	"fmt"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/netpoll"
	"golang.org/x/sys/unix"
)

// connSetReading makes gc's event loop poll it for reading, or not: the relay's way to stop
// reading one side of a pair while the other cannot take more. epfd caches gc's loop's epoll
// descriptor (0: not looked up yet). On gc's event loop.
//
// gnet v2.10.0 has no way to stop reading a connection: its loop reads every readable socket
// and appends what OnTraffic leaves to the connection's inbound buffer, so leaving bytes there
// bounds nothing and TCP flow control never starts. gnet registers a connection in its loop's
// epoll by descriptor (epoll_event.data is the fd, and the loop finds the connection by it), so
// the relay changes that registration itself (the descriptor of the loop's epoll set comes from
// loopPollFD, shared with the device links' pairs): the events gnet would set, without EPOLLIN
// while paused. gnet sets them back when it changes a connection's write interest (a write
// blocks, or its outbound buffer drains); then one more read (gnet's read size) may come, and
// the next OnTraffic pauses again.
func connSetReading(gc gnet.Conn, epfd *int, reading bool) error {
	if *epfd <= 0 {
		fd, err := loopPollFD(gc.EventLoop(), gc.Fd())
		if err != nil {
			return err
		}
		*epfd = fd
	}
	var ev uint32
	if reading {
		ev = netpoll.ReadEvents
	}
	if gc.OutboundBuffered() > 0 {
		ev |= netpoll.WriteEvents
	}
	fd := gc.Fd()
	if err := unix.EpollCtl(*epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: ev, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("epoll_ctl mod fd %d: %w", fd, err)
	}
	return nil
}
