package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/store"
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

// BenchmarkAppend: DATA frames through the journal's Append until JetStream acknowledged each
// (R3 on three in-process nodes that fsync every write), 64 devices taking turns (cluster-R3) or
// 1,000 (cluster-R3-1000dev), each frame one record of 200 bytes; beside the same frames through store.Store's Append
// (Badger, one node, group commits) in the same run. frames/s and µs/frame are the throughput
// (wall time over frames); ack-p50-µs is the median time from Append to done; the serial case's
// ns/op is one frame's round trip with nothing else in flight.
func BenchmarkAppend(b *testing.B) {
	rec := []byte(`{"lat":52.520008,"lon":13.404954,"speed":42.5,"heading":271,"alt":38,"sats":11,` +
		`"ign":true,"odo":1234567,"fuel":61.5,"temp":21.25,"volt":12.71,"ts":1700000000000,"pad":"xxxxxxxxxxxxxx"}`)
	round := 0
	run := func(b *testing.B, devices int, appendFn func(*store.Frame, func(error))) {
		round++
		fs := make([]*store.Frame, b.N)
		for i := range fs {
			dev := fmt.Sprintf("bench-%d-%d", round, i%devices)
			seq := uint64(i/devices + 1)
			fs[i] = &store.Frame{Device: dev, Serial: dev, Seq: seq, PrevSeq: seq - 1, ReceivedAt: 1700000000000,
				Records: [][]byte{rec}, Routes: []uint16{1}}
		}
		lat := make([]time.Duration, 0, b.N/devices+1)
		var mu sync.Mutex
		var failed atomic.Int64
		var wg sync.WaitGroup
		wg.Add(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i, f := range fs {
			var at time.Time
			if i%devices == 0 {
				at = time.Now()
			}
			appendFn(f, func(err error) {
				if err != nil {
					failed.Add(1)
				}
				if !at.IsZero() {
					mu.Lock()
					lat = append(lat, time.Since(at))
					mu.Unlock()
				}
				wg.Done()
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d of %d appends failed", n, b.N)
		}
		slices.Sort(lat)
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "frames/s")
		b.ReportMetric(float64(b.N)/elapsed.Seconds()/float64(min(devices, b.N)), "frames/s/device")
		b.ReportMetric(float64(elapsed.Microseconds())/float64(b.N), "µs/frame")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "ack-p50-µs")
		b.ReportMetric(0, "ns/op") // the per-frame figures above say it
	}
	c := natstest.Start(b, 3)
	b.Run("cluster-R3", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		n := openJournal(b, ctx, c.URL(), cluster.JournalOptions{})
		run(b, 64, n.j.Append)
		n.close()
	})
	b.Run("cluster-R3-1000dev", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		n := openJournal(b, ctx, c.URL(), cluster.JournalOptions{})
		run(b, 1000, n.j.Append)
		n.close()
	})
	// One frame at a time: the time a device waits for its ACK when nothing else is in flight.
	b.Run("cluster-R3-serial", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		n := openJournal(b, ctx, c.URL(), cluster.JournalOptions{})
		round++
		dev := fmt.Sprintf("serial-%d", round)
		done := make(chan error, 1)
		b.ResetTimer()
		for i := range b.N {
			seq := uint64(i + 1)
			n.j.Append(&store.Frame{Device: dev, Serial: dev, Seq: seq, PrevSeq: seq - 1, ReceivedAt: 1700000000000,
				Records: [][]byte{rec}, Routes: []uint16{1}}, func(err error) { done <- err })
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		n.close()
	})
	b.Run("badger", func(b *testing.B) {
		st, err := store.Open(context.Background(), store.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		if err := st.Start(store.Hooks{}); err != nil {
			b.Fatal(err)
		}
		run(b, 64, st.Append)
	})
}

// BenchmarkRegistryLoad: a relay starting on a registry log of 2,000 transactions (R3, three
// in-process NATS nodes) — the time from OpenRegistry to a loaded registry, per start.
func BenchmarkRegistryLoad(b *testing.B) {
	c := natstest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w := openNode(b, ctx, c.NodeURL(0))
	const writes = 2000
	for i := range writes {
		if err := w.reg.Create(ctx, route(fmt.Sprintf("l%d", i), "http://x/")); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		n := openNode(b, ctx, c.NodeURL(1))
		if _, ok := n.reg.Route(fmt.Sprintf("l%d", writes-1)); !ok {
			b.Fatal("the last route written is not loaded")
		}
		n.close()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/writes, "µs/transaction")
}
