package loadgen

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

// mainLink is "loadgen link": a device link's client measuring the link (throughput, round
// trips, a UDP flood) against a device that echoes, with -echo that device itself, or with
// -proxy the io.Copy proxy a link is compared with.
func mainLink(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen link", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:40000", "the link's host:port (with -echo: the listen address)")
	udp := fs.Bool("udp", false, "a UDP link (default TCP)")
	local := fs.String("local", "", "the client's own host:port (a link's pinned source)")
	key := fs.String("key", "", "the link's encrypt.key (64 hex digits); with -iv, the link is encrypted")
	iv := fs.String("iv", "", "the link's encrypt.initializationVector (32 hex digits)")
	size := fs.Int64("bytes", 100<<20, "TCP: bytes to send through the echo and check (0: no throughput)")
	trips := fs.Int("roundtrips", 1000, "request/response round trips (0: none)")
	reqSize := fs.Int("size", 64, "bytes per round-trip request and per flood datagram")
	flood := fs.Int("flood", 0, "UDP: datagrams to flood through the echo")
	window := fs.Int("window", 64, "UDP flood: datagrams in flight")
	timeout := fs.Duration("timeout", time.Second, "UDP: a datagram without its echo after this long is lost")
	echo := fs.Bool("echo", false, "be the device instead: echo every byte at -addr (with -key/-iv, the relay's end of an encrypted link: a floor)")
	oneWay := fs.Bool("oneway", false, "with -echo: a one-way device instead (LinkClient.ToDevice, FromDevice): it checks what it is sent, and sends what it is asked for")
	proxy := fs.Bool("proxy", false, "be a minimal TCP proxy instead (a floor): forward each connection to -addr to -upstream with io.Copy, a goroutine each way")
	upstream := fs.String("upstream", "", "with -proxy: where connections are forwarded (host:port)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	proto := LinkTCP
	if *udp {
		proto = LinkUDP
	}
	var c *linkcrypt.Cipher
	if *key != "" || *iv != "" {
		var err error
		if c, err = linkcrypt.NewHex(*key, *iv); err != nil {
			fmt.Fprintf(stderr, "loadgen link: %v\n", err)
			return 2
		}
	}
	if *proxy {
		p, err := StartLinkProxy(LinkProxyOptions{Addr: *addr, Upstream: *upstream})
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "link proxy on %s to %s\n", p.Addr(), *upstream)
		<-ctx.Done()
		_ = p.Close()
		return 0
	}
	if *echo {
		e, err := StartLinkEcho(LinkEchoOptions{Protocol: proto, Addr: *addr, Cipher: c, OneWay: *oneWay})
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "link echo (%s) on %s\n", proto, e.Addr())
		<-ctx.Done()
		_ = e.Close()
		return 0
	}
	cl, err := DialLink(ctx, LinkOptions{Protocol: proto, Addr: *addr, Local: *local, Cipher: c})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer cl.Close()
	if *size > 0 && !*udp {
		t, err := cl.Throughput(ctx, *size)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "throughput: %d bytes each way, checked: to device %.1f MB/s, back %.1f MB/s\n",
			t.Bytes, t.SentPerSec()/1e6, t.EchoedPerSec()/1e6)
	}
	if *flood > 0 && *udp {
		f, err := cl.Flood(ctx, *flood, *reqSize, *window, *timeout)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "flood: %d datagrams of %d bytes, %d echoed (%d lost), %.1f MB/s there and back\n",
			f.Sent, f.Size, f.Echoed, f.Sent-f.Echoed, f.EchoedBytesPerSec()/1e6)
	}
	if *trips > 0 {
		r, err := cl.RoundTrips(ctx, *trips, *reqSize, *timeout)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		us := func(q float64) float64 { return float64(r.Quantile(q)) / 1e3 }
		fmt.Fprintf(stdout, "round trips: %d of %d bytes (%d lost): p50 %.1f µs, p99 %.1f µs, max %.1f µs\n",
			len(r.Samples), *reqSize, r.Lost, us(0.5), us(0.99), us(1))
	}
	return 0
}
