package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// BenchmarkQueuesFailover: a node owning partitions, with records of each handed out and not
// delivered, crashes (no heartbeat, renewal or mark any more); the time until another node
// hands out the first segment of one of them, with the default lease (3 s) and the shortest
// (1 s). One failover per iteration, a new crashing node each time; reported: the median
// (failover-ms) and the extremes. Run it with -benchtime 5x or more.
func BenchmarkQueuesFailover(b *testing.B) {
	for _, lease := range []time.Duration{time.Second, 3 * time.Second} {
		b.Run("lease="+lease.String(), func(b *testing.B) { benchFailover(b, lease) })
	}
}

func benchFailover(b *testing.B, lease time.Duration) {
	c := natstest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	const parts = 16 // a new node wins none of them once in 65,536
	j := newJournal(b, ctx, c, "bf", parts)
	// A device per partition.
	devs := make([]string, parts)
	for i := 0; slices.Contains(devs, ""); i++ {
		d := fmt.Sprintf("dev-%d", i)
		if p := cluster.Partition(d, parts); devs[p] == "" {
			devs[p] = d
		}
	}
	stay := startNode(b, ctx, c, "bf", "stay", cluster.QueuesOptions{Lease: lease}, 0)
	var times []time.Duration
	seq := uint64(0)
	b.ResetTimer()
	for i := range b.N {
		a := startNode(b, ctx, c, "bf", fmt.Sprintf("crash%d", i), cluster.QueuesOptions{Lease: lease}, 0)
		a.mu.Lock()
		a.hold = true
		a.mu.Unlock()
		var owned []int
		for {
			owned = a.owned()
			if len(owned) > 0 && cover([]*qnode{a, stay}, parts) == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		seq++
		for _, p := range owned {
			j.publish(ctx, devs[p], seq, 1, 1)
		}
		for len(a.handouts()) < len(owned) {
			time.Sleep(time.Millisecond)
		}
		seen := len(stay.handouts())
		start := time.Now()
		a.crash()
		for {
			h := stay.handouts()[seen:]
			if slices.ContainsFunc(h, func(h handout) bool { return slices.Contains(owned, cluster.Partition(h.device, parts)) }) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		times = append(times, time.Since(start))
		a.close()
		// stay delivers what a held; wait until it owns everything again.
		for cover([]*qnode{stay}, parts) != nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "failover-ms")
	b.ReportMetric(float64(times[0].Milliseconds()), "min-ms")
	b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "max-ms")
}

// BenchmarkQueuesHandOut: b.N one-record frames of 1,000 devices already in an 8-partition
// journal (R3, nodes fsyncing every write), read by one node from the start, handed out as
// segments and marked delivered at once; reported: records and segments per second, from the
// node's start (connection, leases taken) to the last record delivered.
func BenchmarkQueuesHandOut(b *testing.B) {
	c := natstest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	j := newJournal(b, ctx, c, "bt", 8)
	startNode(b, ctx, c, "bt", "warm", cluster.QueuesOptions{}, 0).close() // makes the buckets and streams
	for i := range b.N {
		dev := fmt.Sprintf("dev-%04d", i%1000)
		f := &store.Frame{Device: dev, Serial: dev, Seq: uint64(i/1000 + 1), ReceivedAt: time.Now().UnixMilli(),
			Records: [][]byte{fmt.Appendf(nil, `{"i":%d,"payload":"0123456789abcdef0123456789abcdef"}`, i)}, Routes: []uint16{1}}
		m := &nats.Msg{Subject: cluster.JournalSubject("bt", f, 8), Data: cluster.EncodeFrame(nil, f), Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, cluster.MsgID(f))
		if _, err := j.js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-j.js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publish did not complete")
	}
	b.ResetTimer()
	start := time.Now()
	n := startNode(b, ctx, c, "bt", "n", cluster.QueuesOptions{}, 0)
	for {
		n.mu.Lock()
		done := len(n.marked)
		n.mu.Unlock()
		if done >= b.N {
			break
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	n.mu.Lock()
	segs := n.segCount
	n.mu.Unlock()
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
	b.ReportMetric(float64(segs)/el.Seconds(), "segments/s")
}
