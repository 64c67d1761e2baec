package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

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
