package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
)

// BenchmarkRegistryCreate: route creates through one node of an R3 stream on a 3-node cluster
// whose nodes fsync every write, each until a second node's index has it (the time a change
// takes to apply everywhere, not only to commit).
func BenchmarkRegistryCreate(b *testing.B) {
	c := natstest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w := openNode(b, ctx, c.NodeURL(0))
	r := openNode(b, ctx, c.NodeURL(1))
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("b%d", i)
		if err := w.reg.Create(ctx, route(name, "http://x/")); err != nil {
			b.Fatal(err)
		}
		for {
			if _, ok := r.reg.Route(name); ok {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// BenchmarkOwnersRecord: devices whose address changed on a node, recorded in the conns bucket
// (R3, three in-process NATS nodes fsyncing every write) — a reconnection storm's cost: each op
// is one device changed, the time runs until NATS acknowledged every record.
func BenchmarkOwnersRecord(b *testing.B) {
	c := natstest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: c.URL(), Replicas: 3, Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	o, err := conn.OpenOwners(ctx, cluster.OwnersOptions{Self: cluster.Owner{Node: cluster.NewNodeName(), Links: "10.0.0.1"},
		Current: func(string) (string, bool) { return "tcp", true }})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	b.ResetTimer()
	for i := range b.N {
		o.Changed(fmt.Sprintf("bench-device-%d", i))
	}
	for o.Written() < uint64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
