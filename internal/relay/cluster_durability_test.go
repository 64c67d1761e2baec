package relay_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
)

// The durability settings cluster mode requires and sets (README "Cluster mode"): every stream
// and bucket a relay makes is file-backed with cluster.nats.replicas replicas (3), and the
// tests' NATS servers, like -nats-embedded's, fsync every write before they acknowledge it.
func TestClusterDurabilitySettings(t *testing.T) {
	c := natstest.Start(t, 3)
	for i := range c.Len() {
		if !c.Server(i).JetStreamConfig().SyncAlways {
			t.Fatalf("NATS node %d runs without sync_interval: always", i)
		}
	}
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Cluster.NATS.URL = c.URL()
	cfg.Cluster.NATS.Prefix = "durable"
	r := startRelay(t, cfg)
	// A device's frames stored and delivered, a device written through the API.
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "DU1"}, 1)
	waitRecords(t, sink, "DU1", send(t, d, "DU1", 2))
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/DU1", map[string]any{"tags": []string{"d"}})

	js := jetStream(t, c.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var names []string
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		name := info.Config.Name
		if !strings.HasPrefix(name, "durable_") && !strings.HasPrefix(name, "KV_durable_") {
			continue
		}
		names = append(names, name)
		if info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 3 {
			t.Errorf("stream %s: storage %v, %d replicas; want file storage, 3 replicas", name, info.Config.Storage, info.Config.Replicas)
		}
	}
	if err := streams.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"durable_journal", "durable_deadletters", "durable_registry", "KV_durable_devices",
		"KV_durable_routes", "KV_durable_leases", "KV_durable_cursors", "KV_durable_nodes", "KV_durable_tasks", "KV_durable_conns"} {
		if !slices.Contains(names, want) {
			t.Errorf("stream %s missing; the relay made %v", want, names)
		}
	}
}

// jetStream connects to the NATS servers at url for the test's own look at the streams.
func jetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
