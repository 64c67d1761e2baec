package relay_test

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

var (
	tlsCost        = flag.Duration("tlscost", 0, "run TestTLSCost: plain vs TLS native throughput (each phase this long, e.g. 10s) and per-connection RSS")
	tlsCostDevices = flag.Int("tlscost.devices", 100, "TestTLSCost: devices of the throughput phases")
	tlsCostIdle    = flag.Int("tlscost.idle", 2000, "TestTLSCost: idle connections of the RSS phases")
	tlsCostPprof   = flag.String("tlscost.pprof", "", "TestTLSCost: write the relay's heap profile with the idle connections into this directory")
)

// TestTLSCost measures what the TLS listener costs against the plain gnet listener, in one run
// against relay processes (no route: frames are stored and acknowledged, ack mode persist):
//
//   - throughput: loadgen fleets of -tlscost.devices devices sending as fast as their window of
//     64 allows, plain then TLS then plain then TLS, each phase -tlscost long, against one relay
//     with both listeners: frames acknowledged per second and relay CPU µs per frame;
//   - memory: -tlscost.idle connections (TLS 1.2, ECDSA P-256 certificate) that said HELLO and
//     then hold, plain against one fresh relay, TLS against another: the relay's CPU per
//     connection set up, its RSS growth per connection, and its heap and stacks in use per
//     connection after a forced collection (the relay runs with gc_percent 400, so RSS holds
//     the handshakes' garbage too).
//
// The figures are logged (README "Encrypted device connections"); nothing is asserted but that
// every phase ran. Run with
//
//	go test ./internal/relay -run TestTLSCost -tlscost 10s -v
func TestTLSCost(t *testing.T) {
	if *tlsCost <= 0 {
		t.Skip("long: run with -tlscost 10s")
	}
	ca := newTestCA(t)
	certFile, keyFile := pemFiles(t, ca.Issue(t, true, "127.0.0.1"))
	bin := relaytest.Binary(t, false)
	const key = "tlscost-test-super-key-0123456789"
	start := func(t *testing.T) (pid int, tcp, tlsAddr, admin string) {
		dir := t.TempDir()
		tcp, tlsAddr, admin = relaytest.FreeAddr(t), relaytest.FreeAddr(t), relaytest.FreeAddr(t)
		cfg := fmt.Sprintf("data_dir: %s\nlog:\n  level: warn\nadmin:\n  listen: %s\n  bootstrap_key: %s\ndevices:\n  native:\n    tcp: %s\n    udp: \"\"\n"+
			"    tls:\n      listen: %s\n      cert: %s\n      key: %s\n", filepath.Join(dir, "data"), admin, key, tcp, tlsAddr, certFile, keyFile)
		path := filepath.Join(dir, "fleetrelay.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		p := relaytest.StartProcess(t, bin, tlsAddr, "-config", path)
		return p.Cmd.Process.Pid, tcp, tlsAddr, admin
	}
	// live is the relay's heap and goroutine stacks in use right after a collection (forced
	// through the heap profile's gc=1).
	live := func(t *testing.T, admin, save string) (heap, stacks int64) {
		req, err := http.NewRequest("GET", "http://"+admin+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var w io.Writer = io.Discard
		if save != "" {
			f, err := os.Create(save)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			w = f
		}
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("heap profile: %s", resp.Status)
		}
		m := "http://" + admin + "/metrics"
		return int64(scrapeMetric(t, m, "go_memstats_heap_inuse_bytes")), int64(scrapeMetric(t, m, "go_memstats_stack_inuse_bytes"))
	}
	client := &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}

	t.Run("throughput", func(t *testing.T) {
		pid, tcp, tlsAddr, _ := start(t)
		rates := map[string][]float64{}
		cpus := map[string][]float64{}
		for round := range 4 {
			kind, addr, cfg := "plain", tcp, (*tls.Config)(nil)
			if round%2 == 1 {
				kind, addr, cfg = "tls", tlsAddr, client
			}
			ctx, cancel := context.WithTimeout(context.Background(), *tlsCost+2*time.Minute)
			cpu0 := cpuOf(t, pid)
			rep, err := loadgen.Run(ctx, loadgen.RunOptions{Addr: addr, Devices: *tlsCostDevices, Rate: 0, Duration: *tlsCost,
				Prefix: fmt.Sprintf("%s%d-", strings.ToUpper(kind), round), TLS: cfg})
			cpu := cpuOf(t, pid) - cpu0
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if rep.FramesAcked == 0 {
				t.Fatalf("%s: nothing acknowledged", kind)
			}
			rates[kind] = append(rates[kind], float64(rep.FramesAcked)/rep.TotalSeconds)
			cpus[kind] = append(cpus[kind], float64(cpu.Microseconds())/float64(rep.FramesAcked))
			t.Logf("%-5s %d devices: %.0f frames/s acknowledged, relay CPU %.2f µs/frame, ACK p50 %v p99 %v",
				kind, rep.Devices, float64(rep.FramesAcked)/rep.TotalSeconds, float64(cpu.Microseconds())/float64(rep.FramesAcked),
				time.Duration(rep.AckLatency.P50*float64(time.Millisecond)), time.Duration(rep.AckLatency.P99*float64(time.Millisecond)))
		}
		mean := func(v []float64) float64 { return (v[0] + v[1]) / 2 }
		t.Logf("TLS/plain: throughput %.2f, relay CPU per frame %.2f (TLS 1.2 %s)", mean(rates["tls"])/mean(rates["plain"]),
			mean(cpus["tls"])/mean(cpus["plain"]), tls.CipherSuiteName(tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
	})

	t.Run("memory", func(t *testing.T) {
		for _, kind := range []string{"plain", "tls"} {
			pid, tcp, tlsAddr, admin := start(t)
			time.Sleep(time.Second) // let the relay settle before the baseline
			before := rssOf(t, pid)
			heapBefore, stacksBefore := live(t, admin, "")
			cpu0 := cpuOf(t, pid)
			conns := make([]net.Conn, 0, *tlsCostIdle)
			for i := range *tlsCostIdle {
				var c net.Conn
				var err error
				if kind == "plain" {
					c, err = net.Dial("tcp", tcp)
				} else {
					c, err = tls.Dial("tcp", tlsAddr, client)
				}
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: fmt.Sprintf("IDLE%d", i)})); err != nil {
					t.Fatal(err)
				}
				if typ, _ := readOne(t, c); typ != native.TypeWelcome {
					t.Fatalf("connection %d: frame %#x, want WELCOME", i, typ)
				}
			}
			cpu := cpuOf(t, pid) - cpu0
			time.Sleep(time.Second)
			after := rssOf(t, pid)
			save := ""
			if *tlsCostPprof != "" {
				save = filepath.Join(*tlsCostPprof, kind+".heap")
			}
			heapAfter, stacksAfter := live(t, admin, save)
			per := func(a, b int64) float64 { return float64(b-a) / float64(len(conns)) / 1024 }
			t.Logf("%-5s %d idle connections: relay CPU %.0f µs per connection (accept, handshake, HELLO); RSS %s → %s, %.1f KiB per connection; after a GC, per connection: heap %.1f KiB, goroutine stacks %.1f KiB",
				kind, len(conns), float64(cpu.Microseconds())/float64(len(conns)), mib(before), mib(after), per(before, after),
				per(heapBefore, heapAfter), per(stacksBefore, stacksAfter))
			for _, c := range conns {
				c.Close()
			}
		}
	})
}

// cpuOf is the CPU time (user and system) process pid used so far.
func cpuOf(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name (in parentheses, which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks of 100 Hz.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}
