package bench_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/bench"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Every shipped scenario parses strictly and validates.
func TestScenariosLoad(t *testing.T) {
	all, err := bench.LoadDir("scenarios")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range all {
		names[s.Name] = true
	}
	for _, want := range []string{"throughput", "latency", "connections", "outage", "smoke", "crash", "backlog", "per-frame", "device-link"} {
		if !names[want] {
			t.Errorf("scenario %q missing", want)
		}
	}
	f := func(yaml, wantErr string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "s.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := bench.Load(path)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("Load(%q) = %v, want an error containing %q", yaml, err, wantErr)
		}
	}
	const load = "load:\n  devices: 1\n  duration: 1s\n"
	f(load+"  devicez: 2\n", "devicez")
	f(load+"crash:\n  kills: 2\nbacklog:\n  messages: 10\n", "one or the other")
	f(load+"crash:\n  min_gap: 2s\n  max_gap: 1s\n", "crash.min_gap")
	f(load+"  protocol: ndjson\nbacklog:\n  messages: 10\n", "need native devices")
	f(load+"backlog:\n  messages: 10\n  settel: 1s\n", "settel")
	f(load+"floors: [acks]\n", `floors[0]: must be ack or pipeline, got "acks"`)
	f(load+"floors: [ack, pipeline]\nrelay:\n  format: template\n  template: x\n", "floors[1]: the pipeline floor renders the default envelope")
	f(load+"floors: [ack]\ncrash:\n  kills: 2\n", "floors[0]: crash and backlog scenarios have no floor")
	f(load+"floors: [direct]\n", `floors[0]: must be ack or pipeline, got "direct"`)
	f("floors: [direct, ack]\nlink:\n  bytes: 10\n", `floors[1]: a device-link scenario's floors are direct and proxy, got "ack"`)
	f("link:\n  size: 4\n  idle_links: 6001\n", "link.size: must be 8 to 65536 bytes; link.idle_links: at most 6000")
	f("link:\n  bytez: 1\n", "bytez")
	f("link: {}\nchurn:\n  rate: 1\n", "no crash, backlog or churn")

	// The per-frame scenario of the issue: 1,000 devices × 10 frames/s × 1 record, 15 s, persist
	// acks, one route, beside both floors.
	pf, err := bench.Load("scenarios/per-frame.yaml")
	if err != nil || pf.Load.Devices != 1000 || pf.Load.Rate != 10 || pf.Load.Records != 1 || time.Duration(pf.Load.Duration) != 15*time.Second ||
		pf.Relay.Ack != "persist" || pf.Relay.NoRoute || !slices.Equal(pf.Floors, []string{"ack", "pipeline"}) {
		t.Errorf("per-frame scenario: %v, %+v", err, pf)
	}

	// The defaults the issue asks for: 20 kills, 10 million queued messages.
	crash, err := bench.Load("scenarios/crash.yaml")
	if err != nil || crash.Crash.Kills != 20 {
		t.Errorf("crash scenario: %v, %+v", err, crash.Crash)
	}
	backlog, err := bench.Load("scenarios/backlog.yaml")
	if err != nil || backlog.Backlog.Messages != 10_000_000 {
		t.Errorf("backlog scenario: %v, %+v", err, backlog.Backlog)
	}
	// Issue 14's device-link benchmark: 64-byte round trips, beside both floors; RSS per idle
	// link at 5,000 links (the relay with TCP links only, 3 files a link).
	dl, err := bench.Load("scenarios/device-link.yaml")
	if err != nil || dl.Link == nil || dl.Link.Size != 64 || dl.Link.IdleLinks != 5000 || dl.Link.Bytes < 1e9 ||
		!slices.Equal(dl.Floors, []string{"direct", "proxy"}) {
		t.Errorf("device-link scenario: %v, %+v", err, dl.Link)
	}
}

// relayBinary is cmd/fleetrelay built once per test process, without -race: bench measures it.
func relayBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	return relaytest.Binary(t, false)
}

// TestMain removes the relay binary built for the tests.
func TestMain(m *testing.M) { relaytest.Main(m) }

// loadgenBinary builds cmd/loadgen, whose floor command serves the floors, into the test's
// temporary directory.
func loadgenBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "loadgen")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("go build loadgen: %v\n%s", err, out)
	}
	return bin
}

// loadYAML writes a scenario to a file and loads it as bench would.
func loadYAML(t *testing.T, name, yaml string) *bench.Scenario {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := bench.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A crash run of two kills: each kill is a SIGKILL, the relay comes back on the same directory
// and acknowledges again, and the account is exact: every acknowledged message delivered.
func TestCrashScenario(t *testing.T) {
	bin := relayBinary(t)
	s := loadYAML(t, "crash-tiny", `
load:
  devices: 20
  rate: 50
  records: 2
  ramp: 200ms
  duration: 1m
crash:
  min_gap: 300ms
  max_gap: 600ms
  tail: 500ms
`)
	var log bytes.Buffer
	dir := t.TempDir()
	r, err := bench.Run(context.Background(), s, bench.Options{RelayBin: bin, ResultsDir: dir, Log: &log, Kills: 2})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
	c := r.Crash
	if c == nil || !c.OK() || len(c.Restarts) != 2 || r.Config.Crash.Kills != 2 {
		t.Fatalf("crash result %+v", c)
	}
	for i, x := range c.Restarts {
		// ACKs and deliveries after a restart are polled until the next kill: -1 if none came by
		// then (a slow machine). Routes start before the listeners, so a delivery may precede
		// "ready".
		if x.Exit != "signal: killed" || x.Backlog < 0 || x.StartMs <= 0 || x.ReadyMs < x.StartMs ||
			(x.AckMs != -1 && x.AckMs <= 0) || (x.DeliverMs != -1 && x.DeliverMs <= 0) || x.FramesAcked <= 0 ||
			(i > 0 && x.FramesAcked <= c.Restarts[i-1].FramesAcked) {
			t.Errorf("restart %d: %+v", i, x)
		}
	}
	if last := c.Restarts[len(c.Restarts)-1]; r.FramesAcked <= last.FramesAcked {
		t.Errorf("%d frames acknowledged in all, %d by the last kill: nothing after the restart", r.FramesAcked, last.FramesAcked)
	}
	a := r.Account
	if a.Expected == 0 || a.Expected != 2*r.FramesAcked || a.Lost != 0 || a.Received != a.Expected || r.Delivered != a.Expected {
		t.Errorf("%d frames of 2 records acknowledged; account %s", r.FramesAcked, a.String())
	}
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadResult(filepath.Join(dir, "crash-tiny.json"))
	if err != nil || back.Crash == nil || len(back.Crash.Restarts) != 2 || back.Crash.Seed != c.Seed {
		t.Errorf("result file: %v %+v", err, back.Crash)
	}
	var md bytes.Buffer
	bench.WriteMarkdown(&md, []*bench.Result{r})
	if !strings.Contains(md.String(), fmt.Sprintf("| crash-tiny | 20 | 2 of 2 | %d | %d | 0 |", a.Expected, a.Received)) {
		t.Errorf("markdown:\n%s", md.String())
	}
}

// A backlog of a few thousand messages with the endpoint down: the backlog metric counts exactly
// what was acknowledged, memory is read in its parts, the restart keeps the backlog, and the
// drain delivers it all. With a sink that loses messages on purpose, the loss is counted exactly.
func TestBacklogScenario(t *testing.T) {
	bin := relayBinary(t)
	const yaml = `
relay:
  max_backoff: 200ms
load:
  devices: 20
  records: 10
  ramp: 100ms
  duration: 1m
backlog:
  messages: 20000
  settle: 200ms
`
	for _, drop := range []int{0, 97} {
		t.Run(fmt.Sprintf("drop=%d", drop), func(t *testing.T) {
			s := loadYAML(t, "backlog-tiny", yaml)
			var log bytes.Buffer
			dir := t.TempDir()
			r, err := bench.Run(context.Background(), s, bench.Options{RelayBin: bin, ResultsDir: dir, Log: &log,
				Backlog: 5000, SinkChaos: loadgen.Chaos{DropEvery: drop}, DrainQuiet: 3 * time.Second})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			t.Log(strings.TrimSpace(log.String()))
			b, a := r.Backlog, r.Account
			if b == nil || b.Target != 5000 || b.Backlog < 5000 || b.Backlog != r.MessagesAcked || b.BacklogAfterStart != b.Backlog {
				t.Fatalf("backlog %+v, %d messages acknowledged", b, r.MessagesAcked)
			}
			for name, m := range map[string]bench.Mem{"idle": b.Idle, "at backlog": b.AtBacklog, "at start": b.AtStart, "after start": b.AfterStart} {
				if m.AnonMiB <= 0 || m.FileMiB <= 0 || m.HeapMiB <= 0 || math.Abs(m.RSSMiB-(m.AnonMiB+m.FileMiB+m.ShmemMiB)) > 1 { // the kernel reads its counters one by one
					t.Errorf("%s: %s: want VmRSS = RssAnon + RssFile + RssShmem, all read", name, m)
				}
			}
			if b.StartSeconds <= 0 || b.StopSeconds <= 0 || b.DrainSeconds <= 0 || b.DrainPerSec <= 0 || b.DiskMiB <= 0 ||
				len(b.Samples) == 0 || b.PeakMiB < b.Idle.RSSMiB || b.AnonBytesPerMessage == 0 {
				t.Errorf("backlog %+v", b)
			}
			if drop == 0 {
				if a.Lost != 0 || a.Expected != b.Backlog || a.Received != a.Expected || a.Dups != 0 {
					t.Errorf("account %s", a.String())
				}
				if err := r.WriteFiles(dir); err != nil {
					t.Fatal(err)
				}
				html, err := os.ReadFile(filepath.Join(dir, "backlog-tiny.html"))
				if err != nil || !bytes.Contains(html, []byte("Backlog build-up")) || !bytes.Contains(html, []byte("<tr><td>backlog-tiny</td><td>")) ||
					!bytes.Contains(html, []byte("<th>backlog scenario</th>")) {
					t.Errorf("HTML: %v", err)
				}
				return
			}
			if a.Lost == 0 || a.Lost != int64(r.Sink.ChaosDropped) {
				t.Errorf("the sink dropped %d messages; account %s", r.Sink.ChaosDropped, a.String())
			}
		})
	}
}

// The smoke scenario end to end: relay binary, sink, fleet; nothing lost; files written.
func TestSmokeScenario(t *testing.T) {
	bin := relayBinary(t)
	dir := t.TempDir()
	s, err := bench.Load("scenarios/smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	r, err := bench.Run(context.Background(), s, bench.Options{RelayBin: bin, ResultsDir: dir, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
	if r.Account.Lost != 0 || r.Account.Expected == 0 || r.Delivered < r.MessagesAcked {
		t.Errorf("account %s, delivered %d of %d", r.Account.String(), r.Delivered, r.MessagesAcked)
	}
	if r.RelayCPUPerMsg <= 0 || r.RelayRSSPeakMiB <= 0 || r.AckLatency.Count == 0 || r.EndToEnd.Count == 0 {
		t.Errorf("measurements missing: cpu %.2f µs/msg, rss %.0f MiB, ack %d, e2e %d", r.RelayCPUPerMsg, r.RelayRSSPeakMiB, r.AckLatency.Count, r.EndToEnd.Count)
	}
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadResult(filepath.Join(dir, "smoke.json"))
	if err != nil || back.Delivered != r.Delivered {
		t.Errorf("result file: %v", err)
	}
	html, err := os.ReadFile(filepath.Join(dir, "smoke.html"))
	if err != nil || !bytes.Contains(html, []byte("<svg")) {
		t.Errorf("HTML chart: %v", err)
	}
}

// startFloor starts a floor in this process and closes it at the end of the test.
func startFloor(t *testing.T, o loadgen.FloorOptions) *loadgen.Floor {
	t.Helper()
	f, err := loadgen.StartFloor(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Close(ctx); err != nil {
			t.Errorf("close floor: %v", err)
		}
	})
	return f
}

// The ACK floor answers HELLO and acknowledges every DATA frame (TCP) and UDATA datagram (UDP)
// of a real fleet on real sockets, and counts them.
func TestAckFloor(t *testing.T) {
	f := startFloor(t, loadgen.FloorOptions{Addr: "127.0.0.1:0", UDPAddr: "127.0.0.1:0"})
	rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
		Addr: f.Addr().String(), UDPAddr: f.UDPAddr().String(), UDPShare: 0.25,
		Devices: 20, Rate: 50, Records: 3, Duration: time.Second, Prefix: "AF",
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FramesSent == 0 || rep.FramesAcked != rep.FramesSent || rep.Unacked != 0 || rep.Errors != 0 {
		t.Fatalf("sent %d frames, %d acknowledged, %d unacknowledged, %d errors", rep.FramesSent, rep.FramesAcked, rep.Unacked, rep.Errors)
	}
	var want uint64
	for _, acked := range rep.Acked {
		want += acked
	}
	if st := f.Stats(); st.Frames < rep.FramesAcked || st.Records != 3*st.Frames || st.Delivered != 0 || want == 0 {
		t.Errorf("floor %+v; fleet: %d frames acknowledged, highest seqs sum to %d", st, rep.FramesAcked, want)
	}
}

// A floor's UDP port is its own: a second floor (or relay, which claims its port the same way)
// cannot start on it, and a floor never lands on a port a relay serves. The ACK floor answers every
// datagram it gets: sharing a relay's port, it once acknowledged a relay test's device datagrams
// and dropped them.
func TestFloorOwnsItsUDPPort(t *testing.T) {
	f := startFloor(t, loadgen.FloorOptions{UDPAddr: "127.0.0.1:0", EventLoops: 2})
	g, err := loadgen.StartFloor(loadgen.FloorOptions{UDPAddr: f.UDPAddr().String(), EventLoops: 2})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Close(ctx)
		t.Fatalf("a second floor started on the UDP port %s of a running one", f.UDPAddr())
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a second floor on the UDP port of a running one: %v, want EADDRINUSE", err)
	}
}

// The pipeline floor forwards every record of every acknowledged frame to a real sink, as
// envelopes the sink accounts for exactly; NDJSON lines too.
func TestPipelineFloor(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	f := startFloor(t, loadgen.FloorOptions{Addr: "127.0.0.1:0", NDJSONAddr: "127.0.0.1:0", Pipeline: true,
		SinkURL: sink.URL() + "/ingest", MaxMessages: 50, Linger: 5 * time.Millisecond, Concurrency: 3})
	ctx := context.Background()
	rep, err := loadgen.Run(ctx, loadgen.RunOptions{Addr: f.Addr().String(), Devices: 30, Rate: 40, Records: 4, Duration: time.Second, Prefix: "PF"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FramesAcked == 0 || rep.Unacked != 0 {
		t.Fatalf("%d frames acknowledged, %d not", rep.FramesAcked, rep.Unacked)
	}
	a := waitAccount(t, sink, rep.MessagesAcked(), func() loadgen.AccountReport { return sink.Account(rep.AccountRequest(false).Expect()) })
	if a.Expected != 4*rep.FramesAcked || a.Received != a.Expected || a.Lost != 0 || a.Dups != 0 || a.Reordered != 0 {
		t.Errorf("%d frames of 4 records acknowledged; account %s", rep.FramesAcked, a.String())
	}
	if st := sink.Stats(); st.Bad != 0 || st.Batches == 0 || st.Messages > 50*st.Batches {
		t.Errorf("sink %+v: want valid batches of at most 50 messages", st)
	}

	// NDJSON: every line written reaches the sink, numbered per identity.
	nd, err := loadgen.Run(ctx, loadgen.RunOptions{NDJSONAddr: f.NDJSONAddr().String(), NDJSONConns: 2, Devices: 10, Rate: 20, Duration: time.Second, Prefix: "PN"})
	if err != nil {
		t.Fatal(err)
	}
	var lines int64
	for _, n := range nd.Lines {
		lines += n
	}
	// Each line is its identity's next message: the sink holds as many of each as it wrote.
	na := waitAccount(t, sink, a.Received+lines, func() loadgen.AccountReport {
		got := sink.Devices()
		r := loadgen.AccountReport{Expected: lines}
		for id, n := range nd.Lines {
			r.Received += min(got[id].Unique, n)
		}
		r.Lost = r.Expected - r.Received
		return r
	})
	if lines == 0 || na.Lost != 0 {
		t.Errorf("NDJSON: %d lines written; account %s", lines, na.String())
	}
	if st := f.Stats(); st.Delivered != int64(sink.Stats().Unique) {
		t.Errorf("floor delivered %d, sink holds %d", st.Delivered, sink.Stats().Unique)
	}
}

// A pipeline floor whose sink is slow holds ACKs back once its lanes are full instead of
// buffering without bound: the fleet's window then waits, and still every acknowledged record
// arrives.
func TestPipelineFloorHoldsAcks(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{Faults: loadgen.Faults{Delay: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	const lanes, batch = 2, 10
	f := startFloor(t, loadgen.FloorOptions{Addr: "127.0.0.1:0", Pipeline: true, SinkURL: sink.URL() + "/ingest",
		MaxMessages: batch, Linger: time.Millisecond, Concurrency: lanes})
	var held atomic.Int64
	ctx := context.Background()
	rep, err := loadgen.Run(ctx, loadgen.RunOptions{Addr: f.Addr().String(), Devices: 8, Rate: 0, Window: 16, Duration: 2 * time.Second, Prefix: "PH",
		OnSecond: func(loadgen.Second) { // acknowledged but not delivered, while the fleet floods
			st := f.Stats()
			held.Store(max(held.Load(), st.Records-st.Delivered))
		}})
	if err != nil {
		t.Fatal(err)
	}
	// At most 8 full batches per lane, the open one, the one being sent, and the frames that
	// arrived in the read that filled the lane (a window per device).
	if bound := int64(lanes*(8+2)*batch + 8*16); held.Load() == 0 || held.Load() > bound {
		t.Errorf("the floor held up to %d acknowledged records undelivered, want 1..%d", held.Load(), bound)
	}
	if a := waitAccount(t, sink, rep.MessagesAcked(), func() loadgen.AccountReport { return sink.Account(rep.AccountRequest(false).Expect()) }); a.Lost != 0 || a.Expected == 0 {
		t.Errorf("account %s", a.String())
	}
}

// waitAccount waits until sink holds want distinct messages (or stops receiving) and returns
// account's report.
func waitAccount(t *testing.T, sink *loadgen.Sink, want int64, account func() loadgen.AccountReport) loadgen.AccountReport {
	t.Helper()
	a, err := loadgen.WaitAccount(context.Background(), want,
		func(context.Context) (int64, error) { return int64(sink.Stats().Unique), nil },
		func(context.Context) (loadgen.AccountReport, error) { return account(), nil },
		loadgen.DrainOptions{Quiet: 10 * time.Second, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The smoke scenario beside its floors, twice each, alternating: every run is there in order,
// the floors ran as processes of their own (CPU and memory read from /proc), the pipeline floor
// delivered everything, and the report leads with the ratios.
func TestSmokeWithFloors(t *testing.T) {
	relay := relayBinary(t)
	lg := loadgenBinary(t)
	s, err := bench.Load("scenarios/smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Floors, []string{bench.FloorAck, bench.FloorPipeline}) {
		t.Fatalf("smoke floors %v", s.Floors)
	}
	var log bytes.Buffer
	dir := t.TempDir()
	r, err := bench.Measure(context.Background(), s, bench.Options{RelayBin: relay, LoadgenBin: lg, Count: 2, ResultsDir: dir, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
	c := r.Floors
	if c == nil || c.Count != 2 || len(c.Runs) != 6 || len(c.FloorRuns) != 2 {
		t.Fatalf("comparison %+v", c)
	}
	want := []string{"relay", "ack", "pipeline", "relay", "ack", "pipeline"}
	for i, f := range c.Runs {
		if f.Target != want[i] || f.Run != i/3+1 || f.AckedPerSec <= 0 || f.CPUPerFrameUs <= 0 || f.RSSPeakMiB <= 0 || f.Lost != 0 {
			t.Errorf("run %d: %+v, want target %s", i, f, want[i])
		}
		if (f.Target == "ack") != (f.DeliveredPerSec == 0) {
			t.Errorf("run %d (%s) delivered %v msgs/s: only the ACK floor delivers nothing", i, f.Target, f.DeliveredPerSec)
		}
	}
	if c.Shown != 0 && c.Shown != 3 || c.Runs[c.Shown].Target != "relay" {
		t.Errorf("shown run %d", c.Shown)
	}
	ra := c.Ratios
	if ra.Base != "ack" || ra.CPUPerFrame <= 0 || ra.CPUPerMsg <= 0 || ra.AckP99 <= 0 || ra.RSSPeak <= 0 || ra.Delivered <= 0 {
		t.Errorf("ratios %+v", ra)
	}
	if got := ra.CPUPerFrame; math.Abs(got-c.Relay.CPUPerFrameUs/c.Ack.CPUPerFrameUs) > 1e-9 {
		t.Errorf("CPU/frame ratio %v, medians %v / %v", got, c.Relay.CPUPerFrameUs, c.Ack.CPUPerFrameUs)
	}
	for _, f := range c.FloorRuns {
		if f.Target == "pipeline" && (f.Account.Lost != 0 || f.Delivered == 0 || f.Delivered != f.MessagesAcked) {
			t.Errorf("pipeline floor: delivered %d of %d acknowledged, account %s", f.Delivered, f.MessagesAcked, f.Account.String())
		}
		if len(f.AckLatency.Percentiles) == 0 {
			t.Errorf("%s floor: no latency distribution", f.Target)
		}
	}
	if su := r.Sustained; su == nil || su.AckedPerSec <= 0 || len(su.Samples) == 0 {
		t.Errorf("sustained %+v", su)
	}
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadResult(filepath.Join(dir, "smoke.json"))
	if err != nil || back.Floors == nil || len(back.Floors.Runs) != 6 || back.Floors.Ratios != ra {
		t.Fatalf("result file: %v %+v", err, back)
	}
	html, err := os.ReadFile(filepath.Join(dir, "smoke.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<table>", `<th class="ratio">CPU/frame ÷ floor</th>`, "ACK floor", "pipeline floor", "percentile (log 1/(1-p) scale)", "99.99%", `stroke-dasharray="6 3"`} {
		if !bytes.Contains(html, []byte(want)) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if bytes.Contains(html, []byte("e+0")) {
		t.Errorf("HTML has a number with an exponent")
	}
}

// Numbers read as a person reads them, never with an exponent.
func TestHumanNumbers(t *testing.T) {
	f := func(name string, format func(float64) string, v float64, want string) {
		t.Helper()
		if got := format(v); got != want {
			t.Errorf("%s(%v) = %q, want %q", name, v, got, want)
		}
	}
	for _, c := range []struct {
		v    float64
		want string
	}{{0, "–"}, {math.NaN(), "–"}, {7, "7"}, {512, "512"}, {999.4, "999"}, {999.6, "1.00k"}, {6.818e4, "68.2k"},
		{681_259, "681k"}, {1_336_000, "1.34M"}, {2.5e9, "2.50G"}} {
		f("Count", bench.Count, c.v, c.want)
	}
	for _, c := range []struct {
		v    float64
		want string
	}{{0.842, "842 µs"}, {0.0421, "42.1 µs"}, {1.3421, "1.34 ms"}, {24.49, "24.5 ms"}, {312.2, "312 ms"}, {2410, "2.41 s"}, {-1, "–"}} {
		f("Millis", bench.Millis, c.v, c.want)
	}
	f("Micros", bench.Micros, 3.864, "3.86 µs")
	f("Micros", bench.Micros, 24.5, "24.5 µs")
	f("Micros", bench.Micros, 101.7, "102 µs")
	f("Micros", bench.Micros, 1200, "1.20 ms")
	f("MiB", bench.MiB, 245.3, "245 MiB")
	f("MiB", bench.MiB, 1335, "1.30 GiB")
	f("Ratio", bench.Ratio, 3.951, "3.95×")
	f("Ratio", bench.Ratio, 12.44, "12.4×")
	f("Ratio", bench.Ratio, 0, "–")
}

// The Markdown table leads with the ratios, and gives the relay's medians and the floors'.
func TestMarkdownLeadsWithRatios(t *testing.T) {
	r := &bench.Result{Scenario: "per-frame", Target: "relay", AckedPerSec: 1, Sustained: &bench.Sustained{AckedPerSec: 10_000}, Floors: &bench.Comparison{
		Count: 3,
		Relay: bench.Figures{Target: "relay", AckedPerSec: 10_012, DeliveredPerSec: 9_987, CPUPerFrameUs: 98.2, CPUPerMsgUs: 98.2, AckP50Ms: 2.1, AckP99Ms: 21.4, AckP999Ms: 30, RSSPeakMiB: 82,
			DeliveredOverAcked: 0.998, BacklogSlope: 3, SustainedRate: 10_012},
		Ack:    &bench.Figures{Target: "ack", AckedPerSec: 10_013, CPUPerFrameUs: 24.5, AckP50Ms: 0.9, AckP99Ms: 7.2, RSSPeakMiB: 18},
		Pipe:   &bench.Figures{Target: "pipeline", AckedPerSec: 10_010, DeliveredPerSec: 10_001, CPUPerMsgUs: 41},
		Ratios: bench.Ratios{Base: "ack", CPUPerFrame: 98.2 / 24.5, CPUPerMsg: 98.2 / 24.5, AckP50: 2.1 / 0.9, AckP99: 21.4 / 7.2, RSSPeak: 82.0 / 18, Delivered: 9_987.0 / 10_001},
		Runs:   []bench.Figures{{Target: "relay", Run: 1, AckedPerSec: 10_012, CPUPerFrameUs: 98.2}, {Target: "ack", Run: 1, AckedPerSec: 10_013, CPUPerFrameUs: 24.5}},
	}}
	var md bytes.Buffer
	bench.WriteMarkdown(&md, []*bench.Result{r})
	lines := strings.Split(md.String(), "\n")
	r2 := *r
	r2.Scenario, r2.Sustained, r2.Floors = "throughput", &bench.Sustained{AckedPerSec: 178_000}, &bench.Comparison{Count: 1,
		Relay: bench.Figures{Target: "relay", DeliveredOverAcked: 0.38, BacklogSlope: 112_000, SustainedRate: 64_600, DrainPerSec: 412_000}}
	var md2 bytes.Buffer
	bench.WriteMarkdown(&md2, []*bench.Result{r, &r2})
	if !strings.Contains(md2.String(), "| 0.38, +112k/s, 64.6k–412k msgs/s |") {
		t.Errorf("markdown lacks the sustained range of a relay whose delivery fell behind:\n%s", md2.String())
	}
	if !strings.HasPrefix(lines[0], "| scenario | CPU/frame ÷ floor | CPU/msg ÷ floor | ACK p50 ÷ floor | ACK p99 ÷ floor | RSS peak ÷ floor | delivered ÷ pipeline floor |") {
		t.Errorf("header %q", lines[0])
	}
	if !strings.HasPrefix(lines[2], "| per-frame | 4.01× | 4.01× | 2.33× | 2.97× | 4.56× | 1.00× | 3 | 10.0k | 9.99k |") {
		t.Errorf("row %q", lines[2])
	}
	for _, want := range []string{"98.2 µs", "2.10 ms / 21.4 ms / 30.0 ms", "| 1.00, flat, ≥ 10.0k msgs/s |", "82 MiB", "24.5 µs, 900 µs / 7.20 ms, 18 MiB", "10.0k, 41.0 µs",
		"| per-frame | 1 | ACK floor | 10.0k | – | 24.5 µs |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	if strings.Contains(md.String(), "e+0") {
		t.Errorf("markdown has a number with an exponent:\n%s", md.String())
	}
}

// The Teltonika scenarios at a small scale beside their floors: trackers over TCP (and UDP) on
// the relay's Teltonika listener, every acknowledged record delivered (accounted by IMEI and
// record counter), records counted as messages and packets as frames, the floors speaking
// Teltonika too.
func TestTeltonikaScenario(t *testing.T) {
	relay := relayBinary(t)
	lg := loadgenBinary(t)
	for _, name := range []string{"teltonika", "teltonika-udp"} {
		t.Run(name, func(t *testing.T) {
			s, err := bench.Load("scenarios/" + name + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			if s.Load.Devices != 1000 || s.Load.Records != 1 || s.Load.RecordsMax != 50 || len(s.Floors) != 2 {
				t.Fatalf("scenario %s: %+v", name, s.Load)
			}
			s.Load.Devices, s.Load.Ramp, s.Load.Duration = 20, bench.Duration(200*time.Millisecond), bench.Duration(time.Second)
			var log bytes.Buffer
			r, err := bench.Measure(context.Background(), s, bench.Options{RelayBin: relay, LoadgenBin: lg, ResultsDir: t.TempDir(), Log: &log})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			t.Log(strings.TrimSpace(log.String()))
			for _, x := range append([]*bench.Result{r}, r.Floors.FloorRuns...) {
				if x.FramesAcked == 0 || x.MessagesAcked < x.FramesAcked || x.CPUPerFrame <= 0 {
					t.Errorf("%s: %d packets, %d records acknowledged, CPU %.1f µs/packet", x.Target, x.FramesAcked, x.MessagesAcked, x.CPUPerFrame)
				}
				if x.Target == bench.FloorAck {
					continue
				}
				a := x.Account
				if a.Lost != 0 || a.Expected != x.MessagesAcked || x.Delivered != a.Expected || a.Extra != 0 {
					t.Errorf("%s: %d records acknowledged; account %s", x.Target, x.MessagesAcked, a.String())
				}
				if x.EndToEnd.Count == 0 {
					t.Errorf("%s: no end-to-end latency", x.Target)
				}
			}
			if r.RelayCPUPerMsg <= 0 || r.Floors.Ratios.CPUPerMsg <= 0 {
				t.Errorf("relay CPU %.2f µs/record, ratio to the floor %.2f", r.RelayCPUPerMsg, r.Floors.Ratios.CPUPerMsg)
			}
		})
	}
}
