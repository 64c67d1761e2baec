package relay_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// ifMatch sends a merge patch of a route with If-Match set and returns the status.
func (c *apiClient) ifMatch(path, body, rev string) int {
	c.t.Helper()
	req, _ := http.NewRequest("PATCH", c.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("If-Match", `"`+rev+`"`)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// revision is the route's revision as relay c's API shows it, once it is want ("" any).
func (c *apiClient) waitRoute(name string, want func(map[string]any) error) map[string]any {
	c.t.Helper()
	var v map[string]any
	checkfor.Check(c.t, 30*time.Second, 10*time.Millisecond, func() error {
		var st int
		st, v = c.do("GET", "/api/v1/routes/"+name, nil)
		if st != http.StatusOK {
			return fmt.Errorf("GET route %s = %d", name, st)
		}
		return want(v)
	})
	return v
}

func atRevision(rev float64) func(map[string]any) error {
	return func(v map[string]any) error {
		if got := field(v, "meta", "revision"); got != rev {
			return fmt.Errorf("revision %v, want %v", got, rev)
		}
		if running := field(v, "status", "running"); running != true {
			return fmt.Errorf("not running: %v", field(v, "status"))
		}
		return nil
	}
}

// Cluster mode's control plane: two relays, each with its own data directory, share their
// registry through a real 3-node JetStream cluster. A route created through A's API runs on B
// and delivers B's devices' data; an update through B applies on A (A's devices' data goes to
// the new URL); of two updates at the same revision through the two relays, the second answers
// 412; a delete through B stops the route on A; with one NATS node stopped the registry still
// takes changes and shares them; restarted, both relays still see everything.
func TestClusterRegistrySharedAcrossRelays(t *testing.T) {
	nats := natstest.Start(t, 3)
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{KeepMessages: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	clustered := func() *config.Config {
		cfg := testConfig(t, nil)
		cfg.Cluster.NATS.URL = nats.URL()
		cfg.Cluster.NATS.Prefix = "relaytest"
		return cfg
	}
	cfgA, cfgB := clustered(), clustered()
	ra, rb := startRelay(t, cfgA), startRelay(t, cfgB)
	apiA, apiB := newAPI(t, ra, bootstrapKey(t, cfgA)), newAPI(t, rb, bootstrapKey(t, cfgB))

	// Created through A: runs on B and delivers B's device's data.
	apiA.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "shared",
		"url": sink.URL() + "/v1/[SERIAL]", "batch": map[string]any{"linger": "1ms"}})
	apiB.waitRoute("shared", atRevision(1))
	db := connect(t, rb.DeviceTCPAddr().String(), native.Hello{Serial: "CB1"}, 1)
	waitRecords(t, sink, "CB1", send(t, db, "CB1", 3))

	// Updated through B: applies on A.
	apiB.must(http.StatusOK, "PATCH", "/api/v1/routes/shared", map[string]any{"url": sink.URL() + "/v2/[SERIAL]"})
	apiA.waitRoute("shared", atRevision(2))
	da := connect(t, ra.DeviceTCPAddr().String(), native.Hello{Serial: "CA1"}, 1)
	seqs := send(t, da, "CA1", 3)
	waitRecords(t, sink, "CA1", seqs)
	for _, m := range sink.Messages() {
		if m.Serial == "CA1" && !strings.HasPrefix(m.Path, "/v2/") {
			t.Errorf("A's device's seq %d went to %s, not to the URL B set (/v2/)", m.Seq, m.Path)
		}
	}

	// The same revision updated through both: the first wins, the second is refused.
	if st := apiA.ifMatch("/api/v1/routes/shared", `{"concurrency":2}`, "2"); st != http.StatusOK {
		t.Fatalf("PATCH through A at the current revision = %d, want 200", st)
	}
	if st := apiB.ifMatch("/api/v1/routes/shared", `{"concurrency":3}`, "2"); st != http.StatusPreconditionFailed {
		t.Fatalf("PATCH through B at the revision A just replaced = %d, want 412", st)
	}
	apiB.waitRoute("shared", func(v map[string]any) error {
		if c := field(v, "spec", "concurrency"); c != float64(2) {
			return fmt.Errorf("concurrency %v, want A's 2", c)
		}
		return nil
	})

	// One NATS node stopped: changes are still taken and shared (three replicas).
	nats.Stop(0)
	apiB.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "kept",
		"url": sink.URL() + "/kept/[SERIAL]", "batch": map[string]any{"linger": "1ms"}})
	apiA.waitRoute("kept", atRevision(1))

	// Deleted through B: gone on A, and A's device's new data no longer goes there.
	apiB.must(http.StatusOK, "DELETE", "/api/v1/routes/shared", nil)
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if st, _ := apiA.do("GET", "/api/v1/routes/shared", nil); st != http.StatusNotFound {
			return fmt.Errorf("GET on A of the route deleted through B = %d", st)
		}
		return nil
	})
	after := send(t, da, "CA1", 2)
	waitRecords(t, sink, "CA1", after) // through kept
	for _, m := range sink.Messages() {
		if m.Serial == "CA1" && m.Seq >= after[0] && !strings.HasPrefix(m.Path, "/kept/") {
			t.Errorf("seq %d sent after the delete went to %s", m.Seq, m.Path)
		}
	}

	// Both relays restarted (the NATS node back too): each loads the shared registry.
	da.Close()
	db.Close()
	for _, r := range []*relay.Relay{ra, rb} {
		if err := relaytest.Shutdown(r); err != nil {
			t.Fatal(err)
		}
	}
	nats.Restart(0)
	ra, rb = startRelay(t, cfgA), startRelay(t, cfgB)
	apiA, apiB = newAPI(t, ra, apiA.key), newAPI(t, rb, apiB.key)
	for _, api := range []*apiClient{apiA, apiB} {
		api.must(http.StatusOK, "GET", "/api/v1/routes/kept", nil)
		api.must(http.StatusNotFound, "GET", "/api/v1/routes/shared", nil)
	}
	db = connect(t, rb.DeviceTCPAddr().String(), native.Hello{Serial: "CB2"}, 1)
	waitRecords(t, sink, "CB2", send(t, db, "CB2", 2))
}

// A relay in cluster mode does not start without its NATS cluster, and says why.
func TestClusterNoNATS(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Cluster.NATS.URL = "nats://" + relaytest.FreeAddr(t)
	r, err := relaytest.Open(cfg, relaytest.Logger(t))
	if err == nil {
		_ = relaytest.Shutdown(r)
		t.Fatal("relay started without its NATS cluster")
	}
	if !strings.Contains(err.Error(), "connect to NATS") {
		t.Fatalf("error %q does not say NATS was not reached", err)
	}
}
