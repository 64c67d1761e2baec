package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
)

func TestConnKey(t *testing.T) {
	f := func(device, want string) {
		t.Helper()
		if got := cluster.ConnKey(device); got != want {
			t.Errorf("ConnKey(%q) = %q, want %q", device, got, want)
		}
	}
	f("sn-1_A", "SN-1_A")
	f("SN-1_a", "SN-1_A") // identities are case-insensitive, as the relay looks them up
	f("a.b", "=412e42")   // "~" is not a KV key's; "=" is, and no token holds it
	f("dev 1", "=4445562031")
}

// Two nodes on a real 3-node JetStream cluster: what one records of its devices' addresses the
// other reads (the latest change of a device, written once however often it changed); a device
// nobody recorded is nobody's; the other node's requests reach the node by name and are
// answered, and a node that is gone answers ErrNodeGone.
func TestOwnersAndNodeRequests(t *testing.T) {
	nats := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(name string) *cluster.Conn {
		c, err := cluster.Connect(ctx, cluster.Options{URL: nats.URL(), Replicas: 3, Prefix: "own", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ca, cc := connect("a"), connect("c")

	var mu sync.Mutex
	transports := map[string]string{}
	nodeA := cluster.NewNodeName()
	oa, err := ca.OpenOwners(ctx, cluster.OwnersOptions{Self: cluster.Owner{Node: nodeA, Links: "10.0.0.1"},
		Current: func(d string) (string, bool) {
			mu.Lock()
			defer mu.Unlock()
			tr, ok := transports[d]
			return tr, ok
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer oa.Close()
	oc, err := cc.OpenOwners(ctx, cluster.OwnersOptions{Self: cluster.Owner{Node: cluster.NewNodeName()},
		Current: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()

	mu.Lock()
	transports["dev.1"] = "tcp"
	mu.Unlock()
	oa.Changed("dev.1")
	oa.Changed("dev.1")
	mu.Lock()
	transports["dev.1"] = "udp" // the latest is written
	mu.Unlock()
	oa.Changed("dev.1")
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		o, ok, err := oc.Lookup(ctx, "DEV.1")
		if err != nil || !ok || o != (cluster.Owner{Node: nodeA, Links: "10.0.0.1", Transport: "udp"}) {
			return fmt.Errorf("Lookup(DEV.1) through C = %+v, %v, %v; want A's record over udp", o, ok, err)
		}
		return nil
	})
	if o, ok, err := oc.Lookup(ctx, "nobody"); ok || err != nil {
		t.Errorf("Lookup(nobody) = %+v, %v, %v; want none", o, ok, err)
	}

	srv, err := ca.ServeNode(nodeA, cluster.NodeHandlers{
		OpenLink: func(_ context.Context, r cluster.LinkRequest) cluster.LinkReply {
			if r.Device != "DEV.1" {
				return cluster.LinkReply{Error: cluster.LinkNotConnected}
			}
			return cluster.LinkReply{Port: 40001, Token: "tok", Links: "10.0.0.1", DeviceAddr: fmt.Sprintf("10.9.9.9:%d", r.DevicePort)}
		},
		CloseLink: func(_ context.Context, r cluster.LinkRequest) cluster.LinkReply {
			return cluster.LinkReply{Error: cluster.LinkNotFound, Detail: r.Token}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Once the NATS servers told each other of A's interest (C may be on another server).
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := cc.Ping(ctx, nodeA); err != nil {
			return fmt.Errorf("Ping(A) = %v", err)
		}
		return nil
	})
	rep, err := cc.OpenLink(ctx, nodeA, cluster.LinkRequest{Device: "DEV.1", Protocol: "tcp", DevicePort: 7000})
	if err != nil || rep != (cluster.LinkReply{Port: 40001, Token: "tok", Links: "10.0.0.1", DeviceAddr: "10.9.9.9:7000"}) {
		t.Errorf("OpenLink through C = %+v, %v", rep, err)
	}
	if rep, err := cc.OpenLink(ctx, nodeA, cluster.LinkRequest{Device: "DEV.2"}); err != nil || rep.Error != cluster.LinkNotConnected {
		t.Errorf("OpenLink of another device = %+v, %v; want %s", rep, err, cluster.LinkNotConnected)
	}
	if rep, err := cc.CloseLink(ctx, nodeA, cluster.LinkRequest{Token: "x"}); err != nil || rep.Error != cluster.LinkNotFound || rep.Detail != "x" {
		t.Errorf("CloseLink = %+v, %v; want %s for x", rep, err, cluster.LinkNotFound)
	}
	_ = srv.Close()
	// Once the NATS servers dropped its interest (they tell each other asynchronously).
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, err := cc.OpenLink(ctx, nodeA, cluster.LinkRequest{Device: "DEV.1"}); !errors.Is(err, cluster.ErrNodeGone) {
			return fmt.Errorf("OpenLink to a node that stopped serving = %v, want ErrNodeGone", err)
		}
		return nil
	})
}

func TestNewNodeName(t *testing.T) {
	a, b := cluster.NewNodeName(), cluster.NewNodeName()
	for _, n := range []string{a, b} {
		if cluster.Token(n) != n || len(n) > 63 || len(n) < 22 {
			t.Errorf("NewNodeName() = %q, want a subject token of 22 to 63 characters", n)
		}
	}
	if a == b {
		t.Errorf("NewNodeName() twice = %q both times", a)
	}
}
