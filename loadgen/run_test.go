package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// relayConfig is the relay these tests run: relaytest's, delivering to sinkURL, with NDJSON
// gateways too and no admin listener.
func relayConfig(t *testing.T, sinkURL string) *config.Config {
	cfg := relaytest.Config(t, sinkURL)
	cfg.Devices.NDJSON.TCP = "127.0.0.1:0"
	cfg.Admin.Listen = ""
	return cfg
}

func startRelay(t *testing.T, sinkURL string) *relay.Relay {
	t.Helper()
	return relaytest.Start(t, relayConfig(t, sinkURL))
}

// A short run through a real relay to a real sink: every frame acknowledged and delivered, and the
// report's three forms are produced.
func TestRunThroughRelay(t *testing.T) {
	sink, err := loadgen.StartSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rl := startRelay(t, sink.URL())
	for _, tc := range []struct {
		rate, udp float64
	}{{40, 0}, {0, 0}, {40, 0.25}} {
		rate := tc.rate
		t.Run(fmt.Sprintf("rate=%g,udp=%g", rate, tc.udp), func(t *testing.T) {
			prefix := fmt.Sprintf("R%g-%g-", rate, tc.udp)
			rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
				Addr: rl.DeviceTCPAddr().String(), Devices: 20, Rate: rate, Records: 2,
				Duration: 1500 * time.Millisecond, RampUp: 200 * time.Millisecond, Prefix: prefix,
				UDPAddr: rl.DeviceUDPAddr().String(), UDPShare: tc.udp,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.FramesSent == 0 || rep.FramesAcked != rep.FramesSent || rep.Unacked != 0 || rep.RecordsSent != 2*rep.FramesSent {
				t.Fatalf("report: sent %d, acked %d, unacked %d, records %d", rep.FramesSent, rep.FramesAcked, rep.Unacked, rep.RecordsSent)
			}
			if rate > 0 { // 20 devices × 40/s × 1.5 s, give or take the ramp; a loaded machine falls behind, never ahead
				if want := 20 * 40 * 1.5; float64(rep.FramesSent) < want*0.5 || float64(rep.FramesSent) > want*1.2 {
					t.Errorf("sent %d frames at 40/s per device, want ≈%.0f", rep.FramesSent, want)
				}
			}
			if rep.AckLatency.Count != rep.FramesAcked || rep.AckLatency.P50 <= 0 || len(rep.Timeline) == 0 {
				t.Errorf("latency %+v, timeline %d seconds", rep.AckLatency, len(rep.Timeline))
			}
			var acked uint64
			for dev, a := range rep.Acked {
				if !strings.HasPrefix(dev, prefix) {
					t.Fatalf("device %q", dev)
				}
				acked += a
			}
			if int64(acked) != rep.FramesAcked {
				t.Errorf("per-device acks sum to %d, want %d", acked, rep.FramesAcked)
			}
			// Everything acknowledged reached the sink, exactly once: compared message by message.
			a := waitAccount(t, sink, rep)
			if err := checkDelivered(sink, rep, 2, a); err != nil || len(a.Devices) != 20 {
				t.Fatalf("%v; %d devices accounted, want 20", err, len(a.Devices))
			}
			for _, d := range a.Devices {
				if d.Dups != 0 || d.Extra != 0 {
					t.Errorf("device %+v: duplicates or unacknowledged messages without a restart", d)
				}
			}
			rep.Account = &a
			var text, js, html bytes.Buffer
			if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "ACK latency") ||
				!strings.Contains(text.String(), "lost after acknowledgement") {
				t.Errorf("text report: %v\n%s", err, text.String())
			}
			var back struct {
				FramesAcked int64                  `json:"framesAcked"`
				Acked       map[string]uint64      `json:"acked"`
				Account     *loadgen.AccountReport `json:"account"`
			}
			if err := rep.WriteJSON(&js); err != nil || json.Unmarshal(js.Bytes(), &back) != nil || back.FramesAcked == 0 ||
				len(back.Acked) != 20 || back.Account == nil || len(back.Account.Devices) != 20 {
				t.Errorf("JSON report: %v\n%s", err, js.String())
			}
			if err := rep.WriteHTML(&html); err != nil || !strings.Contains(html.String(), "<svg") || strings.Contains(html.String(), "<script") {
				t.Errorf("HTML report: %v", err)
			}
		})
	}
	if st := sink.Stats(); st.Dups != 0 || st.Reordered != 0 {
		t.Fatalf("sink %+v", st)
	}
}

// checkDelivered compares what rep's devices were acknowledged (frames of records each) with
// what sink holds of them: the account of every acknowledged message must find none lost, and
// the sink's own count of distinct messages from these devices must equal the acknowledged count
// (a device's frames are all acknowledged by the end of a run, so none arrived unacknowledged).
func checkDelivered(sink *loadgen.Sink, rep *loadgen.RunReport, records int64, a loadgen.AccountReport) error {
	var distinct int64
	for id, d := range sink.Devices() { // this run's devices only: the sink may be shared
		if _, ok := rep.Acked[id]; ok {
			distinct += d.Unique
		}
	}
	acked := records * rep.FramesAcked
	var errs []error
	if acked == 0 {
		errs = append(errs, errors.New("nothing was acknowledged"))
	}
	if a.Expected != acked {
		errs = append(errs, fmt.Errorf("the account expects %d messages, %d frames of %d records were acknowledged", a.Expected, rep.FramesAcked, records))
	}
	if a.Lost != 0 || a.Received != a.Expected {
		errs = append(errs, fmt.Errorf("acknowledged messages lost: %s", a.String()))
	}
	if distinct != acked {
		errs = append(errs, fmt.Errorf("the sink holds %d distinct messages of these devices, %d were acknowledged", distinct, acked))
	}
	return errors.Join(errs...)
}

// checkDelivered fails when the sink lost acknowledged messages: a run through the relay into a
// sink that drops every 40th message it receives.
func TestCheckDeliveredCatchesDrops(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{Chaos: loadgen.Chaos{DropEvery: 40}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rl := startRelay(t, sink.URL())
	rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
		Addr: rl.DeviceTCPAddr().String(), Devices: 5, Rate: 40, Records: 2, Duration: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := waitAccount(t, sink, rep)
	dropped := int64(sink.Stats().ChaosDropped)
	err = checkDelivered(sink, rep, 2, a)
	t.Logf("%d frames of 2 records acknowledged, %d messages dropped by the sink: %v", rep.FramesAcked, dropped, err)
	if dropped == 0 {
		t.Fatal("the sink dropped nothing: the test shows nothing")
	}
	// Both checks see it: the account, message by message, and the sink's distinct count.
	if err == nil || a.Lost != dropped || !strings.Contains(err.Error(), "acknowledged messages lost") ||
		!strings.Contains(err.Error(), fmt.Sprintf("holds %d distinct messages", 2*rep.FramesAcked-dropped)) {
		t.Errorf("checkDelivered = %v with %d lost in the account; want both checks to fail and %d lost", err, a.Lost, dropped)
	}
}

// waitAccount waits until sink holds everything rep's devices were acknowledged (30 s at most)
// and returns the account, per device.
func waitAccount(t *testing.T, sink *loadgen.Sink, rep *loadgen.RunReport) loadgen.AccountReport {
	t.Helper()
	req := rep.AccountRequest(true)
	unique := func(context.Context) (int64, error) { // this run's devices only: the sink is shared
		var n int64
		for id, d := range sink.Devices() {
			if _, ok := req.Acked[id]; ok {
				n += d.Unique
			}
		}
		return n, nil
	}
	a, err := loadgen.WaitAccount(context.Background(), req.Expect().Total(), unique,
		func(context.Context) (loadgen.AccountReport, error) { return sink.Account(req.Expect()), nil },
		loadgen.DrainOptions{Quiet: 5 * time.Second, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The relay stops and a new one starts on the same data directory and address while the fleet
// sends: devices reconnect, resend what was not acknowledged, keep what was, and the account
// over both relays is exact — every acknowledged message delivered, none twice.
func TestRunAcrossRestart(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := relayConfig(t, sink.URL())
	first := relaytest.Start(t, cfg)
	addr := first.DeviceTCPAddr().String()
	again := relayConfig(t, sink.URL()) // the same data directory and address
	again.DataDir, again.Devices.Native.TCP = cfg.DataDir, addr
	var acked atomic.Int64
	type restart struct {
		rl       *relay.Relay
		err      error
		atAcked  int64
		inLoad   bool
		restartT time.Time
	}
	restarted := make(chan restart, 1)
	loadEnd := make(chan struct{})
	go func() { // under load, once the first relay acknowledged something: stop it, start another
		for acked.Load() < 500 {
			select {
			case <-loadEnd:
				restarted <- restart{err: errors.New("the fleet ended before 500 frames were acknowledged")}
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		n := acked.Load()
		if err := relaytest.Shutdown(first); err != nil {
			restarted <- restart{err: fmt.Errorf("shut down the first relay: %w", err)}
			return
		}
		rl, err := relaytest.Open(again, relaytest.Logger(t))
		restarted <- restart{rl: rl, err: err, atAcked: n, restartT: time.Now()}
	}()
	start := time.Now()
	rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
		Addr: addr, Devices: 10, Rate: 200, Records: 2, Duration: 2 * time.Second, Acked: &acked,
	})
	close(loadEnd)
	r := <-restarted
	if r.rl != nil {
		t.Cleanup(func() { _ = relaytest.Shutdown(r.rl) })
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if sendEnd := start.Add(time.Duration(rep.SendSeconds * float64(time.Second))); !r.restartT.Before(sendEnd) {
		t.Fatalf("the relay restarted after the fleet stopped sending")
	}
	t.Logf("restarted with %d of %d frames acknowledged", r.atAcked, rep.FramesAcked)
	if rep.Reconnects == 0 || rep.Unacked != 0 || acked.Load() != rep.FramesAcked {
		t.Fatalf("reconnects %d, unacked %d, acked %d (counter %d)", rep.Reconnects, rep.Unacked, rep.FramesAcked, acked.Load())
	}
	var sum uint64
	for _, a := range rep.Acked {
		sum += a
	}
	if int64(sum) != rep.FramesAcked {
		t.Errorf("per-device acks sum to %d, counted %d", sum, rep.FramesAcked)
	}
	a := waitAccount(t, sink, rep)
	t.Logf("across a restart: %s", a.String())
	if err := checkDelivered(sink, rep, 2, a); err != nil || a.Dups != 0 {
		t.Fatalf("%v; account %s", err, a.String())
	}
}

// loadgen run -sink checks the sink and fails when it lost acknowledged messages: the JSON report
// carries the acked seqs and the account, with the exact count the sink dropped on purpose.
func TestRunCommandChecksSink(t *testing.T) {
	for _, drop := range []int{0, 50} {
		t.Run(fmt.Sprintf("drop=%d", drop), func(t *testing.T) {
			sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{Chaos: loadgen.Chaos{DropEvery: drop}})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			rl := startRelay(t, sink.URL())
			out := filepath.Join(t.TempDir(), "run.json")
			var stdout, stderr bytes.Buffer
			code := loadgen.Main(context.Background(), []string{"run", "-addr", rl.DeviceTCPAddr().String(),
				"-devices", "5", "-rate", "100", "-records", "3", "-duration", "1s", "-sink", sink.URL(),
				"-sink-quiet", "2s", "-json", out}, &stdout, &stderr)
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var rep loadgen.RunReport
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			a := rep.Account
			if a == nil || len(rep.Acked) != 5 || len(a.Devices) != 5 || a.Expected != 3*rep.FramesAcked || a.Expected == 0 {
				t.Fatalf("report %s", b)
			}
			dropped := int64(sink.Stats().ChaosDropped)
			if a.Lost != dropped || (drop > 0 && a.Lost == 0) {
				t.Errorf("lost %d, the sink dropped %d", a.Lost, dropped)
			}
			var perDevice int64
			for _, d := range a.Devices {
				perDevice += d.Lost
			}
			if perDevice != a.Lost {
				t.Errorf("per-device losses sum to %d, total %d", perDevice, a.Lost)
			}
			if want := map[bool]int{false: 0, true: 1}[drop > 0]; code != want ||
				(drop > 0) != strings.Contains(stderr.String(), "acknowledged messages lost") {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, want, stdout.String(), stderr.String())
			}
			t.Logf("%s", stdout.String())
		})
	}
}

// With the relay paused (SIGSTOP) for a second under an open-loop load, latency measured from when
// frames were due shows the pause; latency measured from when they were written hides most of it
// (coordinated omission), because frames waiting for the window were written only after the pause.
func TestCorrectedLatencyShowsPause(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	dir := t.TempDir()
	addr := relaytest.FreeAddr(t)
	cfgPath := filepath.Join(dir, "cfg.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nlog:\n  level: error\ndevices:\n  native:\n    tcp: %s\n    udp: \"\"\nadmin:\n  listen: \"\"\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := relaytest.StartProcess(t, relaytest.Binary(t, false), addr, "-config", cfgPath)

	go func() {
		time.Sleep(1200 * time.Millisecond)
		_ = proc.Signal(syscall.SIGSTOP)
		time.Sleep(time.Second)
		_ = proc.Signal(syscall.SIGCONT)
	}()
	rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
		Addr: addr, Devices: 20, Rate: 50, Window: 4, Duration: 3500 * time.Millisecond, RampUp: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unacked != 0 || rep.FramesAcked != rep.FramesSent {
		t.Fatalf("sent %d, acked %d, unacked %d", rep.FramesSent, rep.FramesAcked, rep.Unacked)
	}
	c, u := rep.AckLatency, rep.AckLatencyUncorrected
	t.Logf("from due: p50 %.1f p90 %.1f p99 %.1f max %.1f ms; from write: p50 %.1f p90 %.1f p99 %.1f max %.1f ms",
		c.P50, c.P90, c.P99, c.Max, u.P50, u.P90, u.P99, u.Max)
	if c.P90 < 300 {
		t.Errorf("corrected p90 = %.1f ms: the 1 s pause is missing from latency measured from due times", c.P90)
	}
	if u.P90 > c.P90/2 {
		t.Errorf("uncorrected p90 = %.1f ms, corrected %.1f ms: want the uncorrected figure to hide the pause", u.P90, c.P90)
	}
}

// The capacity search against a real relay and sink finds a passing rate and says so.
func TestCapacity(t *testing.T) {
	sink, err := loadgen.StartSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rl := startRelay(t, sink.URL())
	rep, err := loadgen.Capacity(context.Background(), loadgen.CapacityOptions{
		Run:   loadgen.RunOptions{Addr: rl.DeviceTCPAddr().String(), Devices: 10, RampUp: 100 * time.Millisecond},
		P99:   time.Second, // generous: this test checks the search, not the machine
		Probe: time.Second, Tolerance: 0.25, SinkURL: sink.URL(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.String())
	if rep.Rate <= 0 || rep.MaxAcked <= 0 || rep.Rate > rep.MaxAcked || len(rep.Probes) < 2 || !strings.Contains(rep.String(), "sustains 10 devices") {
		t.Errorf("capacity report %+v", rep)
	}
	for _, p := range rep.Probes[1:] {
		if p.Pass && p.Delivered <= 0 {
			t.Errorf("probe %+v passed without deliveries", p)
		}
	}
}

// An NDJSON fleet: every line each identity sent arrives at the sink.
func TestRunNDJSON(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rl := startRelay(t, sink.URL())
	for _, rate := range []float64{50, 0} {
		prefix := fmt.Sprintf("N%g-", rate)
		rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
			NDJSONAddr: rl.DeviceNDJSONAddr().String(), NDJSONConns: 3, Devices: 12, Rate: rate, Records: 2,
			Duration: time.Second, Prefix: prefix,
		})
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for _, n := range rep.Lines {
			want += 2 * n
		}
		if len(rep.Lines) != 12 || want == 0 || rep.RecordsSent != want {
			t.Fatalf("rate %g: %d identities, %d lines counted, %d records sent", rate, len(rep.Lines), want, rep.RecordsSent)
		}
		checkfor.Check(t, 30*time.Second, 20*time.Millisecond, func() error {
			devs := sink.Devices()
			var missing int64
			for id, n := range rep.Lines {
				if got := devs[id].Unique; got < 2*n {
					missing += 2*n - got
				} else if got > 2*n {
					t.Fatalf("%s: sink has %d, sent %d", id, got, 2*n)
				}
			}
			if missing != 0 {
				return fmt.Errorf("rate %g: %d lines missing", rate, missing)
			}
			return nil
		})
	}
}

// UDP devices with 8 datagrams in flight and 10 % of their sends dropped by themselves, through a
// real relay to a real sink: every frame is acknowledged (each datagram by its own ACK), every
// acknowledged record arrives once, and the report says how many sends were dropped.
func TestRunUDPWindowWithLoss(t *testing.T) {
	sink, err := loadgen.StartSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rl := startRelay(t, sink.URL())
	rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{
		Addr: rl.DeviceTCPAddr().String(), Devices: 20, Rate: 40, Records: 2,
		Duration: 1500 * time.Millisecond, RampUp: 200 * time.Millisecond, Prefix: "UW",
		UDPAddr: rl.DeviceUDPAddr().String(), UDPShare: 1, UDPWindow: 8, UDPDrop: 0.1, UDPRetry: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FramesSent == 0 || rep.FramesAcked != rep.FramesSent || rep.Unacked != 0 {
		t.Fatalf("report: sent %d, acked %d, unacked %d", rep.FramesSent, rep.FramesAcked, rep.Unacked)
	}
	var acked uint64
	for _, a := range rep.Acked {
		acked += a
	}
	if int64(acked) != rep.FramesAcked {
		t.Errorf("per-device acks sum to %d, want %d", acked, rep.FramesAcked)
	}
	if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "skipped as lost") || strings.Contains(rep.Notes[0], " 0 of them") {
		t.Errorf("notes %q, want the datagrams dropped", rep.Notes)
	}
	checkfor.Check(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n < int(rep.RecordsSent) {
			return fmt.Errorf("sink has %d of %d messages", n, rep.RecordsSent)
		}
		return nil
	})
	if st := sink.Stats(); st.Unique != int(rep.RecordsSent) || st.Dups != 0 {
		t.Errorf("sink %+v, want %d unique messages, no duplicates", st, rep.RecordsSent)
	}
}
