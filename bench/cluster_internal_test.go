package bench

import (
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// The partitions a relay owns are the series of its ownership gauge at 1, by partition label;
// a relay without the gauge says so.
func TestParseOwned(t *testing.T) {
	f := func(text string, want []int, wantFound bool) {
		t.Helper()
		got, found, err := parseOwned(strings.NewReader(text))
		if err != nil || found != wantFound || !slices.Equal(got, want) {
			t.Errorf("parseOwned(%q) = %v, %t, %v; want %v, %t", text, got, found, err, want, wantFound)
		}
	}
	f("# HELP fleetrelay_route_backlog_messages x\nfleetrelay_route_backlog_messages{route=\"bench\"} 12\n", nil, false)
	f("# TYPE fleetrelay_cluster_partition_owned gauge\n"+
		"fleetrelay_cluster_partition_owned{partition=\"7\"} 1\n"+
		"fleetrelay_cluster_partition_owned{partition=\"2\"} 0\n"+
		"fleetrelay_cluster_partition_owned{node=\"a\",partition=\"12\"} 1 1700000000000\n"+
		"fleetrelay_cluster_partition_owned_total 3\n"+
		"fleetrelay_cluster_partition_owned{partition=\"3\"} 1\n", []int{3, 7, 12}, true)
	f("fleetrelay_cluster_partition_owned{partition=\"0\"} 0\n", nil, true)
}

// The devices watched after a kill are those of the killed relay's partitions, or all of them
// when it is not known which it owned.
func TestWatchedDevices(t *testing.T) {
	devs := map[string]loadgen.DeviceStats{}
	for _, id := range []string{"F1-000001", "F1-000002", "F2-000001", "F2-000002", "F2-000003"} {
		devs[id] = loadgen.DeviceStats{}
	}
	if got := watchedDevices(devs, nil, 32); len(got) != len(devs) {
		t.Errorf("ownership unknown: watched %v, want every device", got)
	}
	p := cluster.Partition("F2-000001", 32)
	got := watchedDevices(devs, []int{p}, 32)
	if !slices.Contains(got, "F2-000001") {
		t.Errorf("watched %v lacks F2-000001 (partition %d)", got, p)
	}
	for _, id := range got {
		if cluster.Partition(id, 32) != p {
			t.Errorf("watched %s of partition %d, want only partition %d", id, cluster.Partition(id, 32), p)
		}
	}
	if got := watchedDevices(devs, []int{}, 32); len(got) != 0 {
		t.Errorf("no partition owned: watched %v", got)
	}
}

// A cluster scenario's medians are divided by Badger mode's, and the NATS nodes' CPU per
// message is the bench process's in cluster mode less its own in Badger mode.
func TestCompareBadger(t *testing.T) {
	c := &Comparison{Runs: []Figures{
		{Target: TargetRelay, Run: 1, AckedPerSec: 100, DeliveredPerSec: 90, CPUPerMsgUs: 30, AckP50Ms: 4, AckP99Ms: 40, BenchCPUPerMsgUs: 25},
		{Target: FloorBadger, Run: 1, AckedPerSec: 400, DeliveredPerSec: 300, CPUPerMsgUs: 5, AckP50Ms: 2, AckP99Ms: 10, BenchCPUPerMsgUs: 4},
		{Target: TargetRelay, Run: 2, AckedPerSec: 120, DeliveredPerSec: 110, CPUPerMsgUs: 20, AckP50Ms: 6, AckP99Ms: 20, BenchCPUPerMsgUs: 15},
		{Target: FloorBadger, Run: 2, AckedPerSec: 200, DeliveredPerSec: 250, CPUPerMsgUs: 3, AckP50Ms: 2, AckP99Ms: 30, BenchCPUPerMsgUs: 2},
	}}
	c.compare()
	want := BadgerRatios{Acked: 110.0 / 300, Delivered: 100.0 / 275, CPUPerMsg: 25.0 / 4, AckP50: 5.0 / 2, AckP99: 30.0 / 20, NATSCPUPerMsgUs: 20 - 3}
	if c.Badger == nil || c.VsBadger == nil || *c.VsBadger != want {
		t.Errorf("badger medians %+v, ratios %+v; want ratios %+v", c.Badger, c.VsBadger, want)
	}
	if c.Ack != nil || c.Pipe != nil || c.Ratios.Base != "" {
		t.Errorf("no floors ran, got ACK %+v, pipeline %+v, ratios %+v", c.Ack, c.Pipe, c.Ratios)
	}
}
