// Package natstest owns the NATS JetStream clusters of tests: real nats-server nodes on
// loopback (internal/natsembed), each with its own store directory under the test's temporary
// directory, run in the test's process (Start: stopped and restarted at will) or as processes
// of their own (StartProcs: the test binary run again as one node, killed with SIGKILL and
// restarted), shut down when the test ends. It is imported by tests only.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetrelay/fleetrelay/internal/natsembed"
)

// Cluster is a JetStream cluster of in-process nodes. Its methods are safe for concurrent use.
type Cluster struct {
	t testing.TB
	c *natsembed.Cluster
}

// Start runs an n-node JetStream cluster on loopback and waits until it has a meta leader and
// every node is current with it. The nodes are shut down when t ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := natsembed.StartCluster(n, t.TempDir())
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return &Cluster{t: t, c: c}
}

// WaitReady waits until the running nodes agree on a JetStream meta leader.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	if err := c.c.WaitReady(); err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
}

// URL returns the client URLs of every node, running or not, comma-separated (as nats.Connect
// takes them): a client fails over to the running ones.
func (c *Cluster) URL() string { return c.c.URL() }

// NodeURL returns node i's client URL (0-based).
func (c *Cluster) NodeURL(i int) string { return c.c.NodeURL(i) }

// Len returns the number of nodes.
func (c *Cluster) Len() int { return c.c.Len() }

// Stop shuts node i down (0-based) and waits until it is down; its store directory stays.
func (c *Cluster) Stop(i int) { c.c.Stop(i) }

// Restart starts node i again over its store directory and waits for the cluster to be ready.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.c.Restart(i); err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
}

// Server returns node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server { return c.c.Server(i) }
