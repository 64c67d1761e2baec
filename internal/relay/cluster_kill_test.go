package relay_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// writeClusterConfig writes dir/fleetrelay.yaml for relay process node of a cluster on natsURL:
// native devices on tcp, one route to sinkURL, leases short so that a dead relay's partitions
// move within seconds.
func writeClusterConfig(t testing.TB, dir, node, natsURL, tcp, sinkURL string) string {
	t.Helper()
	path := filepath.Join(dir, "fleetrelay.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
log:
  level: warn
devices:
  native:
    tcp: %s
    udp: ""
admin:
  listen: ""
delivery:
  allow_private_networks: true
  retry:
    initial_backoff: 20ms
    max_backoff: 200ms
cluster:
  nats:
    url: %s
    prefix: killtest
    replicas: 3
    partitions: 8
    lease: 2s
    node: %s
routes:
  - name: all
    url: %s/ingest/[SERIAL]
    batch:
      max_messages: 200
      linger: 5ms
`, filepath.Join(dir, "data"), tcp, natsURL, node, sinkURL)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClusterKill9 is issue 16's acceptance: three relay processes on a three-node JetStream
// cluster (node processes), a fleet spread over the relays. One relay is killed with SIGKILL
// mid-stream (its devices reconnect to the others and must be welcomed with the lastSeq they
// had acknowledged), then one NATS node is killed with SIGKILL. Every acknowledged record
// reaches the endpoint, each device's records arrive in order (first arrivals), and duplicates
// are counted and reported.
func TestClusterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three relay processes")
	}
	nats := natstest.StartProcs(t, 3) // node processes: one is killed with SIGKILL
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{KeepMessages: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	const relays, devices = 3, 24
	addrs := make([]string, relays)
	procs := make([]*relaytest.Process, relays)
	for i := range relays {
		addrs[i] = relaytest.FreeAddr(t)
		path := writeClusterConfig(t, t.TempDir(), fmt.Sprintf("r%d", i+1), nats.URL(), addrs[i], sink.URL())
		procs[i] = startProcess(t, path, addrs[i])
	}

	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		devs    = make([]*loadgen.Device, devices)
		at      = make([]int, devices) // the relay each device is connected to (its goroutine's)
		moved   atomic.Int64           // reconnections to another relay
		mu      sync.Mutex
		resumes []string // problems with WELCOME's lastSeq after a move
	)
	serial := func(i int) string { return fmt.Sprintf("CK%02d", i) }
	for i := range devs {
		devs[i] = loadgen.NewDevice(loadgen.DeviceConfig{Addr: addrs[i%relays], Hello: native.Hello{Serial: serial(i)}, Window: 16}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := devs[i].Connect(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		t.Cleanup(devs[i].Close)
	}
	// reconnect moves device i to the next relay that answers, as a device behind a load
	// balancer would land on another node, and checks WELCOME's lastSeq against what it had
	// seen acknowledged. Connect resends every frame not acknowledged.
	reconnect := func(i int) {
		d := devs[i]
		for k := 1; k < 300; k++ {
			to := (at[i] + k) % relays
			if to == 0 { // relay 1 (index 0) is the one killed
				continue
			}
			acked := d.Acked()
			d.SetAddr(addrs[to])
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := d.Connect(ctx)
			cancel()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			moved.Add(1)
			if w := d.Welcome(); w.LastSeq < acked {
				mu.Lock()
				resumes = append(resumes, fmt.Sprintf("%s: WELCOME lastSeq %d on r%d, below the %d it had acknowledged", serial(i), w.LastSeq, to+1, acked))
				mu.Unlock()
			}
			at[i] = to
			return
		}
		t.Errorf("%s: no relay took it back", serial(i))
	}
	for i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := devs[i]
			at[i] = i % relays
			for !stop.Load() {
				// A frame Send wrote or failed to write stays with the device until acknowledged;
				// one it refused (the connection was known dead) took no seq.
				if _, err := d.Send(record(serial(i), d.NextSeq(), 0)); err != nil {
					reconnect(i)
				}
			}
		}()
	}
	ackedTotal := func() (n uint64) {
		for _, d := range devs {
			n += d.Acked()
		}
		return n
	}
	waitAcked := func(atLeast uint64) {
		t.Helper()
		checkFor(t, 120*time.Second, 10*time.Millisecond, func() error {
			if n := ackedTotal(); n < atLeast {
				return fmt.Errorf("%d frames acknowledged, waiting for %d", n, atLeast)
			}
			return nil
		})
	}
	waitAcked(3000)
	if err := procs[0].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = procs[0].Wait()
	killedAt := ackedTotal()
	t.Logf("relay r1 killed with %d frames acknowledged", killedAt)
	waitAcked(killedAt + 1500)
	nats.Kill(0)
	stoppedAt := ackedTotal()
	t.Logf("NATS node n1 killed with %d frames acknowledged", stoppedAt)
	waitAcked(stoppedAt + 1500)
	stop.Store(true)
	wg.Wait()

	// Everything sent is acknowledged in the end (resent to the living relays if need be).
	sentMax := make([]uint64, devices)
	var total int
	for i, d := range devs {
		sentMax[i] = d.NextSeq() - 1
		total += int(sentMax[i])
		checkFor(t, 90*time.Second, 50*time.Millisecond, func() error {
			if d.Acked() >= sentMax[i] {
				return nil
			}
			if d.Err() != nil {
				reconnect(i)
			}
			return fmt.Errorf("%s: acked %d of %d", serial(i), d.Acked(), sentMax[i])
		})
	}
	missing := func() (lost []string) {
		for i := range devs {
			for s := uint64(1); s <= sentMax[i]; s++ {
				if sink.Count(loadgen.MsgKey{Device: serial(i), Seq: s}) == 0 {
					lost = append(lost, fmt.Sprintf("%s/%d", serial(i), s))
				}
			}
		}
		return lost
	}
	var lost []string
	checkfor.Check(t, 120*time.Second, 50*time.Millisecond, func() error {
		if lost = missing(); len(lost) > 0 {
			return fmt.Errorf("the endpoint has %d of %d records, missing %v", total-len(lost), total, lost[:min(len(lost), 20)])
		}
		return nil
	})
	if len(lost) > 0 {
		sort.Strings(lost)
		t.Fatalf("%d acknowledged records lost: %v", len(lost), lost[:min(len(lost), 20)])
	}
	// Order: each device's records, as they first arrive, in seq order.
	last := map[string]uint64{}
	seen := map[loadgen.MsgKey]bool{}
	reordered := 0
	for _, m := range sink.Messages() {
		k := loadgen.MsgKey{Device: m.Serial, Seq: m.Seq}
		if seen[k] {
			continue
		}
		seen[k] = true
		if m.Seq < last[m.Serial] {
			reordered++
			if reordered <= 5 {
				t.Errorf("%s: seq %d first arrived after %d", m.Serial, m.Seq, last[m.Serial])
			}
		}
		last[m.Serial] = max(last[m.Serial], m.Seq)
	}
	mu.Lock()
	for _, r := range resumes {
		t.Error(r)
	}
	mu.Unlock()
	st := sink.Stats()
	t.Logf("%d records from %d devices, 0 lost, %d out of order, %d delivered twice (at least once: batches in flight at the kill or a partition's move are sent again); %d reconnections to another relay",
		total, devices, reordered, st.Dups, moved.Load())
	if moved.Load() < devices/relays {
		t.Errorf("%d reconnections: the killed relay's %d devices did not all move", moved.Load(), devices/relays)
	}
}
