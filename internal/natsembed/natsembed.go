// Package natsembed owns NATS servers run inside a fleetrelay process: the one-node JetStream
// server of fleetrelay -nats-embedded ADDR, which lets one machine try cluster mode without
// installing NATS, and the in-process JetStream clusters of tests and benchmarks
// (internal/natstest, bench). Every node keeps its streams on file storage in a directory of its
// own and fsyncs every write before acknowledging it. Such a server lives and dies with its
// process: a relay using another relay's embedded server shares its fate.
package natsembed

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ReadyTimeout bounds a node's start and the election of a JetStream meta leader. Generous: a
// loaded machine may be slow; a healthy start takes well under a second.
const ReadyTimeout = 60 * time.Second

// Cluster is a set of in-process NATS nodes with JetStream: one alone, or a cluster whose nodes
// route to each other on loopback. Its methods are safe for concurrent use.
type Cluster struct {
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	opts *server.Options
	srv  *server.Server // nil while stopped
}

// Start runs one JetStream node listening on addr (host:port; port 0 picks one), keeping its
// streams in dir, and returns once it takes connections.
func Start(addr, dir string) (*Cluster, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("nats-embedded %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("nats-embedded %q: bad port", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	c := &Cluster{nodes: []*node{{opts: nodeOptions("fleetrelay-embedded", host, p, dir)}}}
	if err := c.startNode(0); err != nil {
		return nil, err
	}
	// The port it got, so that a restart (Restart) listens where clients look for it.
	c.nodes[0].opts.Port = c.nodes[0].srv.Addr().(*net.TCPAddr).Port
	return c, nil
}

// Plan is where the nodes of an n-node loopback cluster listen and keep their streams: node
// i's client port Ports[2i], its route port Ports[2i+1], its store Dir/n<i+1>. Fixed ports let
// a node restart where its peers and clients look for it, and let the nodes of one cluster run
// in different processes (internal/natstest's node processes).
type Plan struct {
	Ports []int  `json:"ports"`
	Dir   string `json:"dir"`
}

// NewPlan picks free loopback ports for an n-node cluster keeping its stores under dir.
func NewPlan(n int, dir string) (Plan, error) {
	if n < 1 {
		return Plan{}, fmt.Errorf("natsembed: %d nodes", n)
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Ports: ports, Dir: dir}, nil
}

// Len returns the plan's number of nodes.
func (p Plan) Len() int { return len(p.Ports) / 2 }

// NodeURL returns node i's client URL.
func (p Plan) NodeURL(i int) string {
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Ports[2*i]))
}

// URL returns every node's client URL, comma-separated.
func (p Plan) URL() string {
	urls := make([]string, p.Len())
	for i := range urls {
		urls[i] = p.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// Options returns node i's server options.
func (p Plan) Options(i int) *server.Options {
	o := nodeOptions(fmt.Sprintf("n%d", i+1), "127.0.0.1", p.Ports[2*i], fmt.Sprintf("%s/n%d", p.Dir, i+1))
	if n := p.Len(); n > 1 {
		// One route between two nodes, not a pool (pool_size: -1). With pooled routes (the
		// default) a new consumer's first pull request is now and then lost, and its partition
		// waits for two missed heartbeats: 17 of 6,000 fresh consumers here, none of 6,000 with
		// one route (TestFreshConsumersFirstPull). Likely cause: the create answer, sent for the
		// system account, overtakes on another route the news of the consumer's subscription.
		o.Cluster = server.ClusterOpts{Name: "fleetrelay", Host: "127.0.0.1", Port: p.Ports[2*i+1], PoolSize: -1}
		for j := range n {
			o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Ports[2*j+1]))})
		}
	}
	return o
}

// StartNode runs node i of plan alone in this process and returns it once it takes
// connections (its cluster's readiness is the caller's to wait for).
func StartNode(p Plan, i int) (*server.Server, error) {
	c := &Cluster{nodes: []*node{{opts: p.Options(i)}}}
	if err := c.startNode(0); err != nil {
		return nil, err
	}
	return c.nodes[0].srv, nil
}

// StartCluster runs an n-node JetStream cluster on loopback, node i keeping its streams in
// dir/n<i+1>, and returns once it has a meta leader every node is current with.
func StartCluster(n int, dir string) (*Cluster, error) {
	p, err := NewPlan(n, dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	for i := range n {
		c.nodes = append(c.nodes, &node{opts: p.Options(i)})
	}
	for i := range c.nodes {
		if err := c.startNode(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.WaitReady(); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

func nodeOptions(name, host string, port int, dir string) *server.Options {
	return &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		// fsync every write before it is acknowledged (sync_interval: always), as README
		// "Cluster mode" asks of production clusters, rather than every 2 minutes.
		SyncAlways: true,
		NoLog:      true,
		NoSigs:     true,
	}
}

// freePorts returns n loopback TCP ports free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("natsembed: free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

func (c *Cluster) startNode(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[i]
	if nd.srv != nil {
		return nil
	}
	o := *nd.opts // the server keeps and changes its options
	o.Routes = append([]*url.URL(nil), nd.opts.Routes...)
	s, err := server.NewServer(&o)
	if err != nil {
		return fmt.Errorf("natsembed: node %d: %w", i+1, err)
	}
	s.Start()
	if !s.ReadyForConnections(ReadyTimeout) {
		s.Shutdown()
		return fmt.Errorf("natsembed: node %d not ready for connections after %v", i+1, ReadyTimeout)
	}
	nd.srv = s
	return nil
}

// WaitReady waits until the running nodes agree on a JetStream meta leader and the leader
// would place a replicated stream on every one of them.
func (c *Cluster) WaitReady() error {
	deadline := time.Now().Add(ReadyTimeout)
	for {
		c.mu.Lock()
		leaders, current, running, peers := 0, 0, 0, 0
		for _, nd := range c.nodes {
			if nd.srv == nil {
				continue
			}
			running++
			if nd.srv.JetStreamIsLeader() {
				leaders++
				// The peers the leader would place a stream on: online, with JetStream, their
				// stats received. Fewer than running, an R3 stream made now fails with "no
				// suitable peers for placement".
				peers = len(nd.srv.JetStreamClusterPeers())
			}
			if nd.srv.JetStreamIsCurrent() {
				current++
			}
		}
		c.mu.Unlock()
		if leaders == 1 && current == running && (len(c.nodes) == 1 || peers >= running) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsembed: JetStream not ready after %v (%d leaders, %d of %d current, %d placeable peers)",
				ReadyTimeout, leaders, current, running, peers)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL returns the client URLs of every node, running or not, comma-separated (as nats.Connect
// and cluster.nats.url take them): a client fails over to the running ones.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL returns node i's client URL (0-based).
func (c *Cluster) NodeURL(i int) string {
	o := c.nodes[i].opts
	return "nats://" + net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
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
func (c *Cluster) Restart(i int) error {
	if err := c.startNode(i); err != nil {
		return err
	}
	return c.WaitReady()
}

// Server returns node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}
