package loadgen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// LinkProxyOptions configures a LinkProxy.
type LinkProxyOptions struct {
	Addr     string // listen address, e.g. "127.0.0.1:0"
	Upstream string // where each accepted connection is forwarded (host:port)
}

// LinkProxy is the smallest TCP proxy there is: each accepted connection is paired with a new
// connection to Upstream and two goroutines copy the bytes with io.CopyBuffer through a 32 KiB
// buffer each (io.Copy's own size), one each way, passing a half-close on. The copy is by read
// and write: io.Copy between two TCP connections would splice, holding a pipe (two more open
// files) for each direction of each pair, which 4,900 idle pairs cannot afford within an
// open-file limit of 20,000. It is the floor a device link's throughput, latency and memory are measured
// against (bench's device-link scenario, loadgen link -proxy): what forwarding costs without
// gnet, without a bounded buffer, without encryption. Close stops it and waits for its
// goroutines.
type LinkProxy struct {
	o  LinkProxyOptions
	ln net.Listener
	connSet
}

// StartLinkProxy listens on o.Addr and forwards until Close.
func StartLinkProxy(o LinkProxyOptions) (*LinkProxy, error) {
	if o.Upstream == "" {
		return nil, errors.New("link proxy: no upstream")
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("link proxy: %w", err)
	}
	p := &LinkProxy{o: o, ln: ln}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the proxy's host:port.
func (p *LinkProxy) Addr() string { return p.ln.Addr().String() }

// Close stops listening, closes every connection and waits for the goroutines.
func (p *LinkProxy) Close() error {
	p.closeAll()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *LinkProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Go(func() { p.pair(c) })
	}
}

// pair dials upstream for the client c and copies both ways until both directions ended.
func (p *LinkProxy) pair(c net.Conn) {
	defer p.forget(c)
	up, err := net.Dial("tcp", p.o.Upstream)
	if err != nil || !p.track(up) {
		return
	}
	defer p.forget(up)
	var wg sync.WaitGroup
	wg.Go(func() { copyHalf(up, c) })
	copyHalf(c, up)
	wg.Wait()
}

// copyHalf copies src to dst until src ends, then half-closes dst (the end of stream passed
// on); on an error both are closed, which ends the other direction too.
func copyHalf(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	// The wrappers hide ReadFrom and WriteTo, so that io.CopyBuffer reads and writes.
	if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf); err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
