// Package natstest owns the NATS JetStream clusters of tests: real nats-server nodes run in the
// test's process on loopback, each with its own store directory under the test's temporary
// directory, stopped and restarted at will, shut down when the test ends. It is imported by
// tests only.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of in-process nodes. Its methods are safe for concurrent use.
type Cluster struct {
	t     testing.TB
	name  string
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	opts *server.Options
	srv  *server.Server // nil while stopped
}

// readyTimeout bounds a node's start and the election of a meta leader. Generous: the machine
// may be loaded; a healthy start takes well under a second.
const readyTimeout = 60 * time.Second

// Start runs an n-node JetStream cluster on loopback and waits until it has a meta leader and
// every node is current with it. The nodes are shut down when t ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: %d nodes", n)
	}
	c := &Cluster{t: t, name: "natstest"}
	ports := freePorts(t, 2*n) // client and cluster port of each node, fixed so a node restarts where it was
	routes := make([]*url.URL, n)
	for i := range n {
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i+1]))}
	}
	base := t.TempDir()
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[2*i],
			JetStream:  true,
			StoreDir:   fmt.Sprintf("%s/n%d", base, i+1),
			NoLog:      true,
			NoSigs:     true,
			// fsync on every write, as internal/DESIGN.md asks of production clusters
			// (sync_interval: always), rather than every 2 minutes.
			SyncAlways: true,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: ports[2*i+1]}
			o.Routes = routes
		}
		c.nodes = append(c.nodes, &node{opts: o})
	}
	t.Cleanup(c.shutdown)
	for i := range c.nodes {
		c.startNode(i)
	}
	c.WaitReady()
	return c
}

// freePorts returns n loopback TCP ports free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	var lns []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

func (c *Cluster) startNode(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[i]
	if nd.srv != nil {
		return
	}
	o := *nd.opts // the server keeps and changes its options
	o.Routes = append([]*url.URL(nil), nd.opts.Routes...)
	s, err := server.NewServer(&o)
	if err != nil {
		c.t.Fatalf("natstest: node %d: %v", i+1, err)
	}
	s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		c.t.Fatalf("natstest: node %d not ready for connections", i+1)
	}
	nd.srv = s
}

// WaitReady waits until the running nodes agree on a JetStream meta leader.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		c.mu.Lock()
		leaders, current, running := 0, 0, 0
		for _, nd := range c.nodes {
			if nd.srv == nil {
				continue
			}
			running++
			if nd.srv.JetStreamIsLeader() {
				leaders++
			}
			if nd.srv.JetStreamIsCurrent() {
				current++
			}
		}
		c.mu.Unlock()
		if leaders == 1 && current == running {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: no JetStream meta leader after %v (%d leaders, %d of %d current)",
				readyTimeout, leaders, current, running)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL returns the client URLs of every node, running or not, comma-separated (as nats.Connect
// takes them): a client fails over to the running ones.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL returns node i's client URL (0-based).
func (c *Cluster) NodeURL(i int) string {
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.nodes[i].opts.Port))
}

// Len returns the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// Stop shuts node i down (0-based) and waits until it is down; its store directory stays.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again over its store directory and waits for the cluster to be ready.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.startNode(i)
	c.WaitReady()
}

// Server returns node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

func (c *Cluster) shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}
