package relay_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
)

// Dead letters in cluster mode live in the cluster's stream: a route's dead letters made on
// either relay are listed through the other's API; replayed through A, every message arrives
// exactly once and the list is empty through B; purged through B, they are gone through A.
func TestClusterDeadLettersAcrossRelays(t *testing.T) {
	nats := natstest.Start(t, 3)
	ep := newSwitchable(t, http.StatusServiceUnavailable)
	retry := &config.Retry{InitialBackoff: config.Duration(10 * time.Millisecond), MaxBackoff: config.Duration(50 * time.Millisecond), MaxAttempts: 2}
	cfgA, cfgB := dlConfig(t, "dl", ep.URL+"/in", 5*time.Millisecond, retry), dlConfig(t, "dl", ep.URL+"/in", 5*time.Millisecond, retry)
	for _, cfg := range []*config.Config{cfgA, cfgB} {
		cfg.Cluster.NATS.URL, cfg.Cluster.NATS.Prefix = nats.URL(), "dltest"
	}
	ra, rb := startRelay(t, cfgA), startRelay(t, cfgB)
	adminA, keyA := adminConfig(t, cfgA, ra)
	adminB, keyB := adminConfig(t, cfgB, rb)
	listed := func(admin *config.Config, key string, want int) {
		t.Helper()
		checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			page, err := deadletter.List(t.Context(), admin, key, "dl", 100)
			if err != nil {
				return err
			}
			if page.Messages != want {
				return fmt.Errorf("%d dead messages listed, want %d", page.Messages, want)
			}
			return nil
		})
	}

	// Made from devices on both relays (each relay delivers the partitions it owns).
	sendAcked(t, rb, "DLB", 4)
	sendAcked(t, ra, "DLA", 2)
	listed(adminA, keyA, 6)
	listed(adminB, keyB, 6)

	ep.fail.Store(0)
	res, err := deadletter.Replay(t.Context(), adminA, keyA, "dl")
	if err != nil || res.Messages != 6 {
		t.Fatalf("replay through A = %+v, %v; want 6 messages", res, err)
	}
	waitDelivered(t, ep, []int{0, 0, 1, 1, 2, 3})
	listed(adminB, keyB, 0)

	ep.fail.Store(http.StatusServiceUnavailable)
	sendAcked(t, ra, "DLC", 3)
	listed(adminB, keyB, 3)
	if res, err := deadletter.Purge(t.Context(), adminB, keyB, "dl", 0); err != nil || res.Messages != 3 {
		t.Fatalf("purge through B = %+v, %v; want 3 messages", res, err)
	}
	listed(adminA, keyA, 0)
	time.Sleep(100 * time.Millisecond) // nothing more may arrive
	if got := len(ep.received()); got != 6 {
		t.Fatalf("the endpoint has %d messages, want the 6 replayed", got)
	}
}
