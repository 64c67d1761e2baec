package cluster_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/natstest"
)

// BenchmarkTaskCreate: commands created through one node (tasks on a R3 bucket of a 3-node
// cluster whose nodes fsync every write), each until a second node holds it, as the node
// holding the device's connection would write it then. ns/op is that whole time; create-µs
// the median of Create alone (the counter's compare and set, then the task's put: what the
// POST waits for), visible-µs the median from Create's return until the other node has it.
//
//	go test -run '^$' -bench TaskCreate -benchtime 2000x ./internal/cluster
func BenchmarkTaskCreate(b *testing.B) {
	c := natstest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	w := openTaskNode(b, ctx, c.NodeURL(0), &clock{now: t0})
	r := openTaskNode(b, ctx, c.NodeURL(1), &clock{now: t0})
	creates := make([]time.Duration, 0, b.N)
	visible := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		dev := "B" + string(rune('A'+i%26))
		began := time.Now()
		tk, err := w.m.Create(ctx, dev, []byte(`{"op":"reboot"}`), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		created := time.Now()
		for {
			if _, ok := r.m.Get(dev, tk.ID); ok {
				break
			}
			time.Sleep(20 * time.Microsecond)
		}
		creates = append(creates, created.Sub(began))
		visible = append(visible, time.Since(created))
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	b.ReportMetric(median(creates), "create-µs")
	b.ReportMetric(median(visible), "visible-µs")
}
