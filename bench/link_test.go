package bench_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/bench"
)

// The device-link scenario, small: the relay (links created through the API to a native
// device's echo and one-way device), the direct floor and the io.Copy proxy floor, two
// alternating rounds. Every transfer was byte-exact (Throughput, ToDevice and FromDevice check
// each byte, at the end that receives it), every target has its figures
// and the ratios are there; each idle link holds two sockets in the relay (client and device)
// and each pair two in the proxy. No figure is judged: timing belongs to the real run.
func TestDeviceLinkScenario(t *testing.T) {
	relay := relayBinary(t)
	lg := loadgenBinary(t)
	s := loadYAML(t, "link-tiny", `
floors: [direct, proxy]
link:
  bytes: 4000000
  roundtrips: 200
  idle_links: 40
  settle: 100ms
`)
	var log bytes.Buffer
	dir := t.TempDir()
	r, err := bench.Measure(context.Background(), s, bench.Options{RelayBin: relay, LoadgenBin: lg, Count: 2, ResultsDir: dir, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
	l := r.Link
	if l == nil || l.Count != 2 {
		t.Fatalf("link result %+v", l)
	}
	// Each round: relay, relay-aes, direct, direct-aes, proxy.
	want := []string{bench.TargetRelay, bench.TargetRelayAES, bench.FloorDirect, bench.TargetDirectAES, bench.FloorProxy}
	if len(l.Runs) != 2*len(want) {
		t.Fatalf("%d runs, want %d: %+v", len(l.Runs), 2*len(want), l.Runs)
	}
	for i, x := range l.Runs {
		if x.Target != want[i%len(want)] || x.Round != 1+i/len(want) {
			t.Errorf("run %d: round %d target %s, want round %d target %s", i, x.Round, x.Target, 1+i/len(want), want[i%len(want)])
		}
		if x.Bytes != 4_000_000 || !(x.ToDeviceMBps > 0) || !(x.BackMBps > 0) || !(x.OneWayToDeviceMBps > 0) || !(x.OneWayToClientMBps > 0) {
			t.Errorf("run %d (%s): %d bytes at %v / %v MB/s, one way %v / %v MB/s: want 4,000,000 each way, both ways measured",
				i, x.Target, x.Bytes, x.ToDeviceMBps, x.BackMBps, x.OneWayToDeviceMBps, x.OneWayToClientMBps)
		}
		timed := x.Target == bench.TargetRelay || x.Target == bench.FloorDirect || x.Target == bench.FloorProxy
		if timed != (x.RoundTrips == 200) || (timed && !(x.P50Us > 0 && x.P99Us >= x.P50Us && x.MaxUs >= x.P99Us)) {
			t.Errorf("run %d (%s): %d round trips, p50 %v p99 %v max %v µs", i, x.Target, x.RoundTrips, x.P50Us, x.P99Us, x.MaxUs)
		}
		idle := x.Target == bench.TargetRelay || x.Target == bench.FloorProxy
		if idle != (x.IdleLinks == 40) {
			t.Errorf("run %d (%s): %d idle links", i, x.Target, x.IdleLinks)
		}
		if idle && (x.Before == nil || x.After == nil || x.Before.RSSMiB <= 0 || x.After.RSSMiB <= 0 || x.FilesAfter-x.FilesBefore < 2*40) {
			t.Errorf("run %d (%s): memory %+v → %+v, open files %v → %v: want both readings and 2 more files a link", i, x.Target, x.Before, x.After, x.FilesBefore, x.FilesAfter)
		}
		// CPU is read for the process between client and echo (relay or proxy) only; a transfer
		// this short may take less than a clock tick of it.
		if mid := x.Target == bench.TargetRelay || x.Target == bench.TargetRelayAES || x.Target == bench.FloorProxy; x.CPUPerGB < 0 || (!mid && x.CPUPerGB != 0) {
			t.Errorf("run %d (%s): CPU per GB %v", i, x.Target, x.CPUPerGB)
		}
		if mid := x.Target == bench.TargetRelay || x.Target == bench.FloorProxy; x.CPUPerRoundTripUs < 0 || (!mid && x.CPUPerRoundTripUs != 0) {
			t.Errorf("run %d (%s): CPU per round trip %v µs", i, x.Target, x.CPUPerRoundTripUs)
		}
		if x.IdleCPUPercent < 0 || (!idle && x.IdleCPUPercent != 0) {
			t.Errorf("run %d (%s): CPU %v %% with idle links", i, x.Target, x.IdleCPUPercent)
		}
	}
	q := l.Ratios
	for name, v := range map[string]float64{"one way to device ÷ direct": q.OneWayToDeviceDirect, "one way to client ÷ direct": q.OneWayToClientDirect,
		"one way to device ÷ proxy": q.OneWayToDeviceProxy, "one way to client ÷ proxy": q.OneWayToClientProxy,
		"AES ÷ plain to device": q.AESPlainToDevice, "AES ÷ plain to client": q.AESPlainToClient, "to device ÷ direct": q.ToDeviceDirect, "back ÷ direct": q.BackDirect, "to device ÷ proxy": q.ToDeviceProxy,
		"back ÷ proxy": q.BackProxy, "AES ÷ plain": q.AESPlain, "AES ÷ AES direct": q.AESDirect, "p99 ÷ direct": q.P99Direct} {
		if !(v > 0) {
			t.Errorf("ratio %s = %v, want > 0", name, v)
		}
	}
	if m := l.Medians[bench.TargetRelay]; q.AddedP99Us != m.P99Us-l.Medians[bench.FloorDirect].P99Us {
		t.Errorf("added p99 %v µs, want the relay's median p99 %v minus the direct floor's %v", q.AddedP99Us, m.P99Us, l.Medians[bench.FloorDirect].P99Us)
	}

	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadResult(filepath.Join(dir, "link-tiny.json"))
	if err != nil || back.Link == nil || len(back.Link.Runs) != len(l.Runs) || back.Link.Ratios != l.Ratios {
		t.Errorf("result file: %v %+v", err, back)
	}
	html, err := os.ReadFile(filepath.Join(dir, "link-tiny.html"))
	if err != nil || !bytes.Contains(html, []byte("<td>link-tiny</td>")) || !bytes.Contains(html, []byte("<th>device-link scenario</th>")) {
		t.Errorf("HTML: %v\n%s", err, html)
	}
	var md bytes.Buffer
	bench.WriteMarkdown(&md, []*bench.Result{r})
	if !strings.Contains(md.String(), "| link-tiny | **"+bench.Ratio(q.OneWayToDeviceDirect)+" / "+bench.Ratio(q.OneWayToClientDirect)+"** |") || strings.Contains(md.String(), "CPU/frame") {
		t.Errorf("markdown: want the link table only, ratios first:\n%s", md.String())
	}
}
