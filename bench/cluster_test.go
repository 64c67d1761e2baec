package bench_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/bench"
)

// The cluster-throughput scenario at a small scale: the relay in cluster mode on a 3-node
// JetStream cluster inside this process, then in Badger mode, each once. Both acknowledge
// messages and deliver every one of them; the comparison has Badger mode's medians and ratios.
func TestClusterThroughputScenario(t *testing.T) {
	relay := relayBinary(t)
	s, err := bench.Load("scenarios/cluster-throughput.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Relay.Cluster; c == nil || c.NATSNodes != 3 || c.Replicas != 3 || c.Relays != 1 || len(s.Floors) != 1 || s.Floors[0] != bench.FloorBadger {
		t.Fatalf("scenario: cluster %+v, floors %v", s.Relay.Cluster, s.Floors)
	}
	s.Load.Devices, s.Load.Rate, s.Load.Ramp, s.Load.Duration = 20, 20, bench.Duration(200*time.Millisecond), bench.Duration(time.Second)
	var log bytes.Buffer
	dir := t.TempDir()
	r, err := bench.Measure(context.Background(), s, bench.Options{RelayBin: relay, ResultsDir: dir, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
	c := r.Floors
	if c == nil || len(c.Runs) != 2 || len(c.FloorRuns) != 1 || c.Badger == nil || c.VsBadger == nil {
		t.Fatalf("comparison %+v", c)
	}
	for _, x := range []*bench.Result{r, c.FloorRuns[0]} {
		a := x.Account
		if x.MessagesAcked == 0 || x.Delivered != x.MessagesAcked || a.Lost != 0 || a.Expected != x.MessagesAcked || x.RelayCPUPerMsg <= 0 {
			t.Errorf("%s: %d acknowledged, %d delivered, %.1f µs relay CPU/msg; account %s", x.Target, x.MessagesAcked, x.Delivered, x.RelayCPUPerMsg, a.String())
		}
	}
	if r.Target != bench.TargetRelay || r.Cluster == nil || r.Cluster.Relays != 1 || r.Cluster.NATSNodes != 3 || r.Cluster.BenchCPUPerMsgUs <= 0 || r.Cluster.NATSDiskMiB <= 0 {
		t.Errorf("cluster run: target %s, %+v", r.Target, r.Cluster)
	}
	if b := c.FloorRuns[0]; b.Target != bench.FloorBadger || b.Cluster != nil || b.Config.Relay.Cluster != nil {
		t.Errorf("badger run: target %s, cluster %+v", b.Target, b.Cluster)
	}
	if v := c.VsBadger; v.Acked <= 0 || v.Delivered <= 0 || v.CPUPerMsg <= 0 || v.AckP50 <= 0 || v.AckP99 <= 0 {
		t.Errorf("ratios to Badger mode %+v", v)
	}
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	bench.WriteMarkdown(&md, []*bench.Result{r})
	if !strings.Contains(md.String(), "| cluster scenario |") || !strings.Contains(md.String(), "| cluster-throughput | 1 / 3 / R3 | 1 |") {
		t.Errorf("markdown lacks the cluster table:\n%s", md.String())
	}
	if html, err := os.ReadFile(filepath.Join(dir, "cluster-throughput.html")); err != nil || !bytes.Contains(html, []byte("badger mode")) {
		t.Errorf("HTML page: %v, badger mode drawn: %t", err, bytes.Contains(html, []byte("badger mode")))
	}
}

// The cluster-failover scenario at a small scale: three relays, the fleet on the second and
// third, the first killed once and restarted; every acknowledged message is delivered and the
// kill's recovery was measured.
func TestClusterFailoverScenario(t *testing.T) {
	relay := relayBinary(t)
	s, err := bench.Load("scenarios/cluster-failover.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Relay.Cluster; c == nil || c.Relays != 3 || len(c.FleetOn) != 2 || s.Failover == nil || s.Failover.Relay != 1 {
		t.Fatalf("scenario: cluster %+v, failover %+v", s.Relay.Cluster, s.Failover)
	}
	// 20 devices over 4 partitions: whichever the killed relay owns, some devices are in them.
	s.Load.Devices, s.Load.Ramp, s.Relay.Cluster.Partitions = 20, bench.Duration(200*time.Millisecond), 4
	s.Failover.Warmup, s.Failover.Gap = bench.Duration(time.Second), bench.Duration(500*time.Millisecond)
	var log bytes.Buffer
	r, err := bench.Measure(context.Background(), s, bench.Options{RelayBin: relay, ResultsDir: t.TempDir(), Log: &log, Kills: 1})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
	f := r.Failover
	if f == nil || !f.OK() || len(f.Runs) != 1 || f.Unrecovered != 0 {
		t.Fatalf("failover %+v", f)
	}
	k := f.Runs[0]
	if k.Watched == 0 || k.RecoverMs <= 0 || k.BaselineMs <= 0 || k.ReadyMs < k.RecoverMs || f.RecoverMaxMs != k.RecoverMs {
		t.Errorf("kill %+v", k)
	}
	a := r.Account
	if r.MessagesAcked == 0 || a.Lost != 0 || r.Delivered != r.MessagesAcked || a.Expected != r.MessagesAcked {
		t.Errorf("%d acknowledged, %d delivered; account %s", r.MessagesAcked, r.Delivered, a.String())
	}
	if r.Devices != 20 || r.Cluster == nil || len(r.Cluster.RelayCPUSeconds) != 3 {
		t.Errorf("%d devices, cluster %+v", r.Devices, r.Cluster)
	}
	var md bytes.Buffer
	bench.WriteMarkdown(&md, []*bench.Result{r})
	if !strings.Contains(md.String(), "| failover scenario |") || !strings.Contains(md.String(), "| cluster-failover | 3 / 3 / R3 | 3s (default) | 1 of 1 |") {
		t.Errorf("markdown lacks the failover table:\n%s", md.String())
	}
	var html bytes.Buffer
	if err := r.WriteHTML(&html); err != nil || !strings.Contains(html.String(), "devices watched") {
		t.Errorf("HTML page (%v) lacks the kills' table", err)
	}
}
