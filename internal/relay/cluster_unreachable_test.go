package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// JetStream unreachable (issue 16): a relay in cluster mode whose NATS cluster loses its quorum
// (two of three nodes stopped: connected, but nothing can be replicated), then its last node
// (not even connected), acknowledges nothing — its device gets ERROR 503 or no ACK, never an
// ACK — and /healthz answers 503 and says why. When a quorum is back the device's frames are
// acknowledged again, /healthz answers 200, and every acknowledged record reaches the endpoint.
func TestClusterJetStreamUnreachable(t *testing.T) {
	nats := natstest.Start(t, 3)
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{KeepMessages: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	cfg := testConfig(t, sink)
	cfg.Cluster.NATS.URL = nats.URL()
	cfg.Cluster.NATS.Prefix = "unreach"
	r := startRelay(t, cfg)
	health := "http://" + r.AdminAddr().String() + "/healthz"

	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "U1"}, 1)
	waitRecords(t, sink, "U1", send(t, d, "U1", 5))
	if code, body := httpGet(t, health); code != 200 {
		t.Fatalf("/healthz with NATS up = %d %q", code, body)
	}

	for _, stop := range [][]int{{1, 2}, {0}} {
		for _, i := range stop {
			nats.Stop(i)
		}
		if d.Err() != nil { // refused in the last round: a new connection
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := d.Connect(ctx)
			cancel()
			if err != nil {
				t.Fatalf("nodes %v stopped: reconnect: %v", stop, err)
			}
		}
		acked := d.Acked()
		// The device sends until the relay has answered a frame with ERROR 503 (or, after a
		// reconnect, has kept 5 frames unacknowledged for 10 s): never an ACK.
		refused := false
		deadline := time.Now().Add(10 * time.Second)
		for !refused && time.Now().Before(deadline) {
			if d.Err() != nil {
				var re *loadgen.ErrRelay
				if errors.As(d.Err(), &re) {
					if re.Code != native.CodeUnavailable {
						t.Fatalf("nodes %v stopped: ERROR %d %q, want 503", stop, re.Code, re.Msg)
					}
					refused = true
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := d.Connect(ctx) // resends what is not acknowledged
				cancel()
				if err != nil {
					t.Fatalf("nodes %v stopped: reconnect: %v", stop, err)
				}
			}
			if d.NextSeq()-1-d.Acked() < 5 {
				if _, err := d.Send(record("U1", d.NextSeq(), 0)); err != nil {
					continue
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := d.Acked(); got != acked {
			t.Fatalf("nodes %v stopped: the device saw %d frames acknowledged, %d before: an ACK for a frame JetStream could not replicate", stop, got, acked)
		}
		checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			if code, body := httpGet(t, health); code != 503 || !strings.Contains(body, "NATS JetStream unreachable") {
				return fmt.Errorf("/healthz with nodes %v stopped = %d %q, want 503 and why", stop, code, body)
			}
			return nil
		})
		t.Logf("nodes %v stopped: refused with ERROR 503: %v; %d frames unacknowledged", stop, refused, d.NextSeq()-1-acked)
	}

	// A quorum back (each Restart waits for it): everything flows again.
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { nats.Restart(i) })
	}
	wg.Wait()
	sent := d.NextSeq() - 1
	checkFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if d.Err() != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := d.Connect(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("reconnect: %w", err)
			}
		}
		if d.Acked() < sent {
			return fmt.Errorf("acknowledged %d of %d", d.Acked(), sent)
		}
		return nil
	})
	more := send(t, d, "U1", 3)
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if code, body := httpGet(t, health); code != 200 {
			return fmt.Errorf("/healthz with a quorum back = %d %q", code, body)
		}
		return nil
	})
	var all []uint64
	for s := uint64(1); s <= more[len(more)-1]; s++ {
		all = append(all, s)
	}
	waitRecords(t, sink, "U1", all)
}
