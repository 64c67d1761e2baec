package bench_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/bench"
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
	for _, want := range []string{"throughput", "latency", "connections", "outage", "smoke"} {
		if !names[want] {
			t.Errorf("scenario %q missing", want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("load:\n  devices: 1\n  duration: 1s\n  devicez: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bench.Load(bad); err == nil || !strings.Contains(err.Error(), "devicez") {
		t.Errorf("unknown key accepted: %v", err)
	}
}

// The smoke scenario end to end: relay binary, sink, fleet; nothing lost; files written.
func TestSmokeScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleetrelay")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/fleetrelay").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
