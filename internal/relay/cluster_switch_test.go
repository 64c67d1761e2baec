package relay_test

import (
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// A relay switched from one node to cluster mode on the same data directory keeps what its
// API made — the one-node registry seeds the cluster's empty one: an account, a key and a
// device are there, on it and on a second relay — and its bootstrap key still works; commands
// queued for a device that was away reach it on the second relay, and ids go on after them. A relay
// whose data directory still holds undelivered messages from one-node mode refuses cluster
// mode and says why: cluster mode would never deliver them.
func TestClusterSwitchFromOneNode(t *testing.T) {
	nats := natstest.Start(t, 3)
	sink := startSink(t)
	cfg := testConfig(t, sink)
	r := startRelay(t, cfg)
	key := bootstrapKey(t, cfg)
	boot := newAPI(t, r, key)
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	k := boot.must(http.StatusCreated, "POST", "/api/v1/keys", map[string]any{"name": "acme dealer", "account": "acme", "preset": "dealer"})
	dealerKey, _ := k["key"].(string)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/SW1", map[string]any{"account": "acme", "tags": []string{"switched"}})
	// Commands for a device that is away: queued in the one-node store.
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/SW3", map[string]any{"account": "acme"})
	for i, op := range []string{"locate", "reboot"} {
		if v := boot.must(http.StatusCreated, "POST", "/api/v1/devices/SW3/commands", map[string]any{"payload": map[string]any{"op": op}}); v["task"] != float64(i+1) {
			t.Fatalf("one-node command %d = %v", i+1, v)
		}
	}
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "SW1"}, 1)
	waitRecords(t, sink, "SW1", send(t, d, "SW1", 3))
	waitMetric(t, r, `fleetrelay_route_backlog_messages{route="test"}`, 0)
	d.Close()
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}

	cfg.Cluster.NATS.URL, cfg.Cluster.NATS.Prefix = nats.URL(), "switch"
	r = startRelay(t, cfg)
	other := testConfig(t, sink)
	other.Cluster.NATS.URL, other.Cluster.NATS.Prefix = nats.URL(), "switch"
	r2 := startRelay(t, other)
	// Each relay's bootstrap key is its own (<data_dir>/admin.key); the dealer's is the registry's.
	for _, api := range []*apiClient{newAPI(t, r, key), newAPI(t, r2, bootstrapKey(t, other))} {
		api.must(http.StatusOK, "GET", "/api/v1/accounts/acme", nil)
		if v := api.must(http.StatusOK, "GET", "/api/v1/devices/SW1", nil); field(v, "account") != "acme" {
			t.Errorf("device SW1 after the switch: %v", v)
		}
		api.as(dealerKey).must(http.StatusOK, "GET", "/api/v1/devices/SW1", nil)
	}
	d = connect(t, r2.DeviceTCPAddr().String(), native.Hello{Serial: "SW1"}, 4)
	waitRecords(t, sink, "SW1", send(t, d, "SW1", 2))

	// The queued commands came along: the other relay lists them, the device gets them there,
	// and the next command's id follows theirs.
	api2 := newAPI(t, r2, bootstrapKey(t, other))
	if v := api2.must(http.StatusOK, "GET", "/api/v1/devices/SW3/commands/2", nil); v["state"] != "queued" {
		t.Errorf("one-node command 2 on the second relay: %v, want queued", v)
	}
	c := rawConn(t, r2.DeviceTCPAddr().String())
	if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: "SW3"})); err != nil {
		t.Fatal(err)
	}
	if typ, body := readOne(t, c); typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: %#x %q", typ, body)
	}
	got := map[uint64]string{}
	for range 2 {
		typ, body := readOne(t, c)
		if typ != native.TypeCommand || len(body) < 8 {
			t.Fatalf("frame to SW3: %#x %q, want a COMMAND", typ, body)
		}
		got[binary.BigEndian.Uint64(body)] = string(body[8:])
	}
	if got[1] != `{"op":"locate"}` || got[2] != `{"op":"reboot"}` {
		t.Errorf("COMMANDs to SW3 after the switch: %v, want tasks 1 and 2 of one-node mode", got)
	}
	if v := newAPI(t, r, key).must(http.StatusCreated, "POST", "/api/v1/devices/SW3/commands", map[string]any{"payload": map[string]any{"op": "ping"}}); v["task"] != float64(3) {
		t.Errorf("first command in cluster mode = %v, want task 3", v)
	}

	// Undelivered messages left in one-node mode: cluster mode is refused, with the reason.
	ep := newSwitchable(t, http.StatusServiceUnavailable)
	left := dlConfig(t, "held", ep.URL+"/in", 5*time.Millisecond, nil)
	rl := startRelay(t, left)
	sendAcked(t, rl, "SW2", 3)
	if err := relaytest.Shutdown(rl); err != nil {
		t.Fatal(err)
	}
	left.Cluster.NATS.URL, left.Cluster.NATS.Prefix = nats.URL(), "switch"
	if rr, err := relaytest.Open(left, relaytest.Logger(t)); err == nil {
		_ = relaytest.Shutdown(rr)
		t.Fatal("cluster mode started over undelivered one-node messages")
	} else if msg := err.Error(); !strings.Contains(msg, "3 undelivered") || !strings.Contains(msg, "held") {
		t.Fatalf("refusal %q does not say how many messages of which route", msg)
	}
}
