package link

import (
	"bytes"
	"context"
	"crypto/cipher"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

// BenchmarkLinkThroughput moves 1 MiB per iteration one way over each of: a direct loopback
// connection, a minimal io.Copy proxy, a TCP link, a TCP link with AES-256-CTR on the client
// leg (linkcrypt's; the client encrypts with crypto/cipher), and a TCP link of a manager that
// busy polls (benchBusyPoll), interleaved in the same run so the machine's mood is shared. It
// reports each one's MB/s and the link's share of the direct connection's.
//
//	go test ./netio/link -run '^$' -bench LinkThroughput -benchtime 200x
func BenchmarkLinkThroughput(b *testing.B) {
	const chunk = 1 << 20
	type path struct {
		name string
		w    io.Writer
		r    io.Reader
		took time.Duration
	}
	var paths []*path

	// Direct: a loopback connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	dw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer dw.Close()
	dr, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer dr.Close()
	paths = append(paths, &path{name: "direct", w: dw, r: dr})

	// A proxy of two goroutines with io.Copy: the floor a link should beat or match.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pl.Close()
	pw, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer pw.Close()
	pin, err := pl.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer pin.Close()
	pout, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer pout.Close()
	pr, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer pr.Close()
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(pout, pin); close(copied) }()
	defer func() { _ = pin.Close(); <-copied }()
	paths = append(paths, &path{name: "iocopy", w: pw, r: pr})

	// Links, plain and encrypted.
	m := startManager(b, 2, 0)
	d := newDevice(b)
	c := testCipher{key: bytes.Repeat([]byte{1}, 32), iv: bytes.Repeat([]byte{2}, 16)}
	lc, err := linkcrypt.New(c.key, c.iv)
	if err != nil {
		b.Fatal(err)
	}
	for _, enc := range []bool{false, true} {
		s := Spec{DeviceAddr: d.addr()}
		if enc {
			s.Cipher = lc
		}
		in := openLink(b, m, s)
		client := dialLink(b, in, nil)
		dev := d.accept(b)
		p := &path{name: "link", w: client, r: dev}
		if enc {
			p.name = "link-aes"
			p.w = cipher.StreamWriter{S: c.streams(false), W: client}
		}
		paths = append(paths, p)
	}
	mp := startManagerWith(b, 2, func(c *Config) { c.BusyPoll = benchBusyPoll })
	dp := newDevice(b)
	paths = append(paths, &path{name: "link-poll", w: dialLink(b, openLink(b, mp, Spec{DeviceAddr: dp.addr()}), nil), r: dp.accept(b)})

	buf := bytes.Repeat([]byte("fleetrelay link "), chunk/16)
	sink := make([]byte, 256<<10)
	b.SetBytes(chunk * int64(len(paths)))
	b.ResetTimer()
	for range b.N {
		for _, p := range paths {
			start := time.Now()
			done := make(chan error, 1)
			go func() { _, err := p.w.Write(buf); done <- err }()
			for left := chunk; left > 0; {
				n, err := p.r.Read(sink[:min(left, len(sink))])
				if err != nil {
					b.Fatalf("%s: read: %v", p.name, err)
				}
				left -= n
			}
			if err := <-done; err != nil {
				b.Fatalf("%s: write: %v", p.name, err)
			}
			p.took += time.Since(start)
		}
	}
	b.StopTimer()
	rate := func(p *path) float64 { return float64(chunk) * float64(b.N) / p.took.Seconds() / 1e6 }
	for _, p := range paths {
		b.ReportMetric(rate(p), p.name+"-MB/s")
	}
	b.ReportMetric(rate(paths[2])/rate(paths[0]), "link/direct")
	b.ReportMetric(rate(paths[3])/rate(paths[2]), "aes/plain")
	b.ReportMetric(rate(paths[4])/rate(paths[2]), "poll/plain")
}

// benchBusyPoll is the busy polling window of the benchmarks' "link-poll" paths: the config's
// default (devicelink.busy_poll).
const benchBusyPoll = 100 * time.Microsecond

// BenchmarkLinkRoundTrip sends 64-byte requests that an echo answers, in turn over a direct
// loopback connection, a minimal io.Copy proxy and a TCP link in the same run, and reports each
// one's median and p99 round trip and the link's p99 over the direct one's; once with busy
// polling off and once with benchBusyPoll, each with its own floors (a link of each in the same
// loop makes every path of it slower: the client, the echoes and the loops of two engines then
// share the Go runtime's two Ps in a pattern of their own). Client, relay and devices share one
// process here: the Go runtime's own spinning threads keep the CPUs awake, so the link's tail
// is shorter than between processes (the bench's device-link scenario).
//
//	go test ./netio/link -run '^$' -bench 'BenchmarkLinkRoundTrip$' -benchtime 20000x
func BenchmarkLinkRoundTrip(b *testing.B) {
	for _, busy := range []time.Duration{0, benchBusyPoll} {
		b.Run(fmt.Sprintf("busy_poll=%v", busy), func(b *testing.B) { benchRoundTrip(b, busy) })
	}
}

func benchRoundTrip(b *testing.B, busy time.Duration) {
	echo := func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	direct, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	echoed := make(chan struct{}, 3)
	go func() { echo(server); echoed <- struct{}{} }()
	defer func() { _ = server.Close(); <-echoed }()

	// A proxy of two goroutines with io.Copy in front of a second echo.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pl.Close()
	proxied, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer proxied.Close()
	pin, err := pl.Accept()
	if err != nil {
		b.Fatal(err)
	}
	pout, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server2, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	go func() { echo(server2); echoed <- struct{}{} }()
	copies := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(pout, pin); _ = pout.Close(); copies <- struct{}{} }()
	go func() { _, _ = io.Copy(pin, pout); _ = pin.Close(); copies <- struct{}{} }()
	defer func() { _ = pin.Close(); _ = server2.Close(); <-copies; <-copies; <-echoed }()

	m := startManagerWith(b, 2, func(c *Config) { c.BusyPoll = busy })
	d := newDevice(b)
	in := openLink(b, m, Spec{DeviceAddr: d.addr()})
	client := dialLink(b, in, nil)
	dev := d.accept(b)
	go func() { echo(dev); echoed <- struct{}{} }()
	defer func() { _ = dev.Close(); <-echoed }()

	req, resp := bytes.Repeat([]byte{'r'}, 64), make([]byte, 64)
	took := [3][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		for i, c := range []net.Conn{direct, proxied, client} {
			start := time.Now()
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, resp); err != nil {
				b.Fatal(err)
			}
			took[i] = append(took[i], time.Since(start))
		}
	}
	b.StopTimer()
	q := func(d []time.Duration, f float64) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(f*float64(len(d))))].Nanoseconds()) / 1e3
	}
	for i, name := range []string{"direct", "iocopy", "link"} {
		b.ReportMetric(q(took[i], 0.5), name+"-p50-µs")
		b.ReportMetric(q(took[i], 0.99), name+"-p99-µs")
	}
	b.ReportMetric(q(took[2], 0.99)-q(took[0], 0.99), "added-p99-µs")
}

// BenchmarkIdleLinkMemory opens 1,000 links, each with its client and device connected and one
// round trip done, and reports the Go heap they add per link. The figure is an upper bound of
// the relay's share: it includes the test's own client and device connections (two net.Conns
// per link). Kernel socket buffers are not in it.
//
//	go test ./netio/link -run '^$' -bench IdleLinkMemory -benchtime 1x
func BenchmarkIdleLinkMemory(b *testing.B) {
	const links = 1000
	m := startManager(b, links, 0)
	d := newDevice(b)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	conns := make([]net.Conn, 0, 2*links)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	before := heap()
	b.ResetTimer()
	for range links {
		in, err := m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: TCP, DeviceAddr: d.addr()})
		if err != nil {
			b.Fatal(err)
		}
		client, err := net.Dial("tcp", netip.AddrPortFrom(loopback, in.Port).String())
		if err != nil {
			b.Fatal(err)
		}
		dev := <-d.conns
		conns = append(conns, client, dev)
		if _, err := client.Write([]byte("ping")); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(dev, make([]byte, 4)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(int64(heap())-int64(before))/links, "heap-B/link")
}
