package relay_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

var (
	hostileSpray = flag.Duration("hostile", 0, "run TestHostileDevices: a relay process under 10,000 HELLO-only connections "+
		"from one source and a UDP spray of random identities lasting this long (e.g. 60s), its RSS reported")
	hostilePprof = flag.String("hostile.pprof", "", "TestHostileDevices: write the relay's heap profiles into this directory")
)

// hostileRSSBound is the relay's RSS bound under the attacks of TestHostileDevices with the
// default limits (README "Hostile devices").
const hostileRSSBound = 256 << 20

// The attacks, at this machine's size, against a relay process with the default limits:
// 10,000 connections from 127.0.0.1 that send HELLO and then only PINGs, and a UDP spray of
// random identities for -hostile. A device of the fleet (from 127.0.0.2 over TCP, and over UDP)
// gets its WELCOME and ACKs throughout, the relay's RSS stays within hostileRSSBound, and once
// the spray's identities are forgotten the relay holds no state for them. Run with
//
//	go test ./internal/relay -run TestHostileDevices -hostile 240s -v
func TestHostileDevices(t *testing.T) {
	if *hostileSpray <= 0 {
		t.Skip("long: run with -hostile 60s")
	}
	dir := t.TempDir()
	tcp, udp, admin := relaytest.FreeAddr(t), relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	const key = "hostile-test-super-key-0123456789"
	path := filepath.Join(dir, "fleetrelay.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nlog:\n  level: warn\ndevices:\n  native:\n    tcp: %s\n    udp: %s\n"+
		"admin:\n  listen: %s\n  bootstrap_key: %s\nfleet:\n  - id: LEGIT\n  - id: LEGITU\n",
		filepath.Join(dir, "data"), tcp, udp, admin, key)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := relaytest.StartProcess(t, relaytest.Binary(t, false), tcp, "-config", path)
	pid := p.Cmd.Process.Pid
	metricOf := func(name string) float64 { return scrapeMetric(t, "http://"+admin+"/metrics", name) }
	var peak atomic.Int64
	sample := func() int64 {
		rss := rssOf(t, pid)
		for old := peak.Load(); rss > old && !peak.CompareAndSwap(old, rss); old = peak.Load() {
		}
		return rss
	}
	t.Logf("RSS at start: %s", mib(sample()))

	// (a) 10,000 HELLO-only connections from one source, PINGing now and then.
	const hostile = 10000
	var held []net.Conn
	refused := 0
	for i := range hostile {
		c := dialFrom(t, "127.0.0.1", tcp)
		if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: fmt.Sprintf("HOLD%d", i)})); err != nil {
			t.Fatal(err)
		}
		typ, _ := readOne(t, c)
		switch typ {
		case native.TypeWelcome:
			held = append(held, c)
		case native.TypeError:
			refused++
			c.Close()
		default:
			t.Fatalf("connection %d: frame %#x", i, typ)
		}
	}
	t.Logf("HELLO-only connections from 127.0.0.1: %d held, %d refused (%v refused for their source); RSS %s",
		len(held), refused, metricOf("fleetrelay_device_source_refused_total"), mib(sample()))
	if refused == 0 {
		t.Fatal("one source took every connection it asked for")
	}
	legit := legitTCP(t, tcp)
	legit.data(t, 1)

	// (b) the spray, with the fleet's UDP device sending beside it.
	ctx, cancel := context.WithTimeout(context.Background(), *hostileSpray)
	defer cancel()
	var wg sync.WaitGroup
	var sent atomic.Int64
	wg.Add(2)
	go func() { // the sprayer
		defer wg.Done()
		c, err := net.Dial("udp", udp)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 0, 128)
		for ctx.Err() == nil {
			for range 256 {
				id := strconv.FormatUint(rand.Uint64(), 36)
				buf = native.AppendUData(buf[:0], id, "", 1, []byte(`{"t":1}`))
				if _, err := c.Write(buf); err == nil {
					sent.Add(1)
				}
			}
		}
	}()
	go func() { // the held connections PING, the RSS is sampled
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; i++ {
			select {
			case <-ctx.Done():
			case <-tick.C:
				sample()
				if i%10 == 0 {
					for _, c := range held {
						_, _ = c.Write(native.AppendFrame(nil, native.TypePing, nil))
					}
				}
			}
		}
	}()
	lu := legitUDP(t, udp, "LEGITU")
	var legitAcked uint64
	for seq := uint64(1); ctx.Err() == nil; seq++ {
		lu.sendUntilAcked(t, seq)
		legitAcked = seq
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	dumpHeap(t, admin, key, "heap-spray.pb.gz")
	t.Logf("spray: %d datagrams in %v; %v unknown identities held, %v refused; the fleet's UDP device got %d ACKs; RSS now %s, peak %s",
		sent.Load(), *hostileSpray, metricOf("fleetrelay_unknown_identities"), metricOf("fleetrelay_unknown_identities_refused_total"),
		legitAcked, mib(sample()), mib(peak.Load()))
	legit.data(t, 2)
	if legitAcked == 0 {
		t.Error("the fleet's UDP device got no ACK during the spray")
	}

	// The spray's identities are forgotten after the device idle time (at most twice 1 min).
	waited := time.Now()
	checkFor(t, 4*time.Minute, time.Second, func() error {
		rss := sample()
		n := metricOf("fleetrelay_unknown_identities")
		if testing.Verbose() {
			t.Logf("+%v: %v unknown identities, RSS %s", time.Since(waited).Round(time.Second), n, mib(rss))
		}
		if n != 0 {
			return fmt.Errorf("%v unknown identities held", n)
		}
		return nil
	})
	dumpHeap(t, admin, key, "heap-after.pb.gz")
	after := sample()
	t.Logf("spray forgotten: RSS %s (peak %s); the store holds %v devices; first-DATA timeouts %v; connections %v",
		mib(after), mib(peak.Load()), metricOf("fleetrelay_store_devices"), metricOf("fleetrelay_device_first_data_timeouts_total"),
		metricOf("fleetrelay_device_connections"))
	if n := metricOf("fleetrelay_store_devices"); n > 50000+2 {
		t.Errorf("the store holds %v devices after the spray was forgotten, want the fleet's 2 and at most max_unknown_identities (50,000) retired ones", n)
	}
	if peak.Load() > hostileRSSBound {
		t.Errorf("RSS peaked at %s, over the documented bound %s", mib(peak.Load()), mib(hostileRSSBound))
	}
	legitTCP(t, tcp).data(t, 3)
}

// dialFrom connects to addr over TCP from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tcpDevice is a device of the fleet over TCP from 127.0.0.2.
type tcpDevice struct{ c net.Conn }

func legitTCP(t *testing.T, addr string) *tcpDevice {
	t.Helper()
	c := dialFrom(t, "127.0.0.2", addr)
	if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: "LEGIT"})); err != nil {
		t.Fatal(err)
	}
	if typ, body := readOne(t, c); typ != native.TypeWelcome {
		t.Fatalf("the fleet's device got %#x % x on HELLO, want WELCOME", typ, body)
	}
	return &tcpDevice{c: c}
}

// data sends DATA seq and waits for its ACK.
func (d *tcpDevice) data(t *testing.T, seq uint64) {
	t.Helper()
	if _, err := d.c.Write(native.AppendData(nil, seq, []byte(`{"legit":1}`))); err != nil {
		t.Fatal(err)
	}
	for {
		typ, body := readOne(t, d.c)
		if typ != native.TypeAck {
			t.Fatalf("the fleet's device got %#x % x after DATA, want ACK", typ, body)
		}
		if got, _ := native.ParseAck(body); got >= seq {
			return
		}
	}
}

// udpLegit is a device of the fleet over UDP.
type udpLegit struct {
	c  net.Conn
	id string
}

func legitUDP(t *testing.T, addr, id string) *udpLegit {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpLegit{c: c, id: id}
}

// sendUntilAcked sends UDATA seq, resending every 200 ms, until its ACK arrives (10 s bound).
func (u *udpLegit) sendUntilAcked(t *testing.T, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		if _, err := u.c.Write(native.AppendUData(nil, u.id, "", seq, []byte(`{"legit":1}`))); err != nil {
			t.Fatal(err)
		}
		_ = u.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := u.c.Read(buf)
			if err != nil {
				break
			}
			if typ, body, _, err := native.Next(buf[:n], 64); err == nil && typ == native.TypeAck {
				if got, _ := native.ParseAck(body); got == seq {
					return
				}
			}
		}
	}
	t.Fatalf("%s: no ACK for seq %d", u.id, seq)
}

// rssOf is the resident set size of process pid.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// scrapeMetric reads one sample from a /metrics URL (0 if absent).
func scrapeMetric(t *testing.T, url, name string) float64 {
	t.Helper()
	_, body := httpGet(t, url)
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %q", line)
			}
			return f
		}
	}
	return 0
}

// dumpHeap saves the relay's heap profile as name under -hostile.pprof, if set.
func dumpHeap(t *testing.T, admin, key, name string) {
	t.Helper()
	if *hostilePprof == "" {
		return
	}
	req, _ := http.NewRequest("GET", "http://"+admin+"/debug/pprof/heap", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("heap profile: %d %v", resp.StatusCode, err)
	}
	if err := os.WriteFile(filepath.Join(*hostilePprof, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
