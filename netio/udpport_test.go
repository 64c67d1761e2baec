package netio_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/udpport/udpporttest"
	"github.com/fleetrelay/fleetrelay/netio"
)

// udpSockets maps the inode of every UDP socket this process has open to its local port, read
// from /proc (what the kernel says, not what the engine reports).
func udpSockets(t *testing.T) map[string]int {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	out := map[string]int{}
	for _, table := range []string{"/proc/self/net/udp", "/proc/self/net/udp6"} {
		f, err := os.Open(table)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				t.Fatalf("%s: local address %q", table, fields[1])
			}
			out[fields[9]] = int(p)
		}
		f.Close()
	}
	return out
}

// The UDP listener owns its port. With port 0, every event loop's socket is bound to the port
// the server reports (none to a port of its own, which nobody sends to but another process's
// engine may hold), and no second server can take that port; with a port that another engine's
// socket holds (SO_REUSEPORT, as gnet binds), Start fails instead of sharing the devices'
// datagrams with it. A relay in one test process once came to share its UDP port with a loadgen
// floor in another, which acknowledged the relay's device datagrams and dropped them.
func TestUDPListenerOwnsItsPort(t *testing.T) {
	f := newFleet(t)
	before := udpSockets(t)
	srv := start(t, netio.Options{EventLoops: 2}, f)
	udpPort := srv.UDPAddr().(*net.UDPAddr).Port
	// Event loops after the first bind once Start has returned.
	checkfor.Check(t, hang, time.Millisecond, func() error {
		var ports []int
		for inode, p := range udpSockets(t) {
			if _, old := before[inode]; !old {
				ports = append(ports, p)
			}
		}
		if len(ports) < 2 {
			return fmt.Errorf("%d UDP sockets of the server so far, want one per event loop (2)", len(ports))
		}
		for _, p := range ports {
			if p != udpPort {
				t.Fatalf("the server's UDP sockets are bound to ports %v, want all on %d", ports, udpPort)
			}
		}
		return nil
	})

	refused := func(addr, what string) {
		t.Helper()
		other := netio.New(netio.Options{UDP: addr, EventLoops: 2}, f)
		err := other.Start()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			_ = other.Stop(ctx)
			t.Fatalf("a server on %s (%s) started", addr, what)
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Fatalf("a server on %s (%s): %v, want EADDRINUSE", addr, what, err)
		}
	}
	refused(srv.UDPAddr().String(), "a running server's UDP port")

	engine, err := udpporttest.EngineSocket(t, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused(engine.LocalAddr().String(), "held by another engine's socket")
}
