package relay

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
)

// clusterConnectTimeout bounds the connection to NATS and the opening of the registry's
// stream at start: a relay in cluster mode does not start without its control plane.
const clusterConnectTimeout = 30 * time.Second

// registryBackend returns the registry's backend: the store's in one-node mode; in cluster mode
// (cluster.nats.url set) the JetStream log every node of the prefix shares, on a connection
// the relay then owns (closeCluster) — refused while the store holds one-node mode's
// undelivered messages (oneNodeLeft), seeded with its registry when the log is empty
// (seedRegistry).
func (r *Relay) registryBackend(st *store.Store) (registry.Backend, error) {
	n := r.cfg.Cluster.NATS
	if !r.cfg.Cluster.Enabled() {
		return registry.NewStoreBackend(st), nil
	}
	if err := oneNodeLeft(st, r.cfg.DataDir); err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if n.TLS != (config.ClusterTLS{}) {
		var err error
		if tlsCfg, err = deliver.NewTLSConfig(deliver.TLSOptions{CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile,
			KeyFile: n.TLS.KeyFile}); err != nil {
			return nil, fmt.Errorf("cluster.nats: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterConnectTimeout)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: n.URL, CredsFile: n.Creds, TLS: tlsCfg,
		Replicas: n.Replicas, Prefix: n.Prefix, Name: "fleetrelay", Logger: r.log})
	if err != nil {
		return nil, err
	}
	b, err := conn.OpenRegistry(ctx)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := r.seedRegistry(ctx, st, b); err != nil {
		_ = b.Close()
		_ = conn.Close()
		return nil, err
	}
	r.nats, r.natsRegistry = conn, b
	r.node = cmp.Or(n.Node, cluster.NewNodeName())
	return b, nil
}

// openJournal, in cluster mode, opens the devices' journal on JetStream: its ingest side (a
// frame is acknowledged once JetStream has replicated it; the devices' lastSeq; the cluster's
// route IDs) and its delivery side (the routes' partitioned queues, started with the actors).
func (r *Relay) openJournal() error {
	if r.nats == nil {
		return nil
	}
	n := r.cfg.Cluster.NATS
	ctx, cancel := context.WithTimeout(context.Background(), clusterConnectTimeout)
	defer cancel()
	j, err := r.nats.OpenJournal(ctx, cluster.JournalOptions{Partitions: n.Partitions, Node: r.node, Logger: r.log})
	if err != nil {
		return fmt.Errorf("open the journal: %w", err)
	}
	q, err := r.nats.OpenQueues(ctx, cluster.QueuesOptions{Node: r.node, Lease: time.Duration(n.Lease),
		MaxResident: r.cfg.Delivery.MaxQueuedMessages, Logger: r.log,
		Routes: func() []uint16 { return r.sys.RouteIDs() }}) // called once the queues run, after the actors exist
	if err != nil {
		_ = j.Close()
		return fmt.Errorf("open the routes' queues: %w", err)
	}
	r.natsJournal, r.natsQueues = j, q
	r.log.Info("cluster mode: the journal, the devices' lastSeq, the routes' queues, commands and the registry are shared through NATS JetStream",
		"node", r.node, "journal", cluster.JournalStream(n.Prefix), "partitions", j.Partitions(), "replicas", n.Replicas)
	return nil
}

// oneNodeLeft refuses cluster mode over a data directory that still holds one-node mode's
// undelivered messages, replays or dead letters: cluster mode delivers and lists from NATS
// JetStream only, so they would stay there, never delivered.
func oneNodeLeft(st *store.Store, dir string) error {
	var backlog, dead int
	var routes []string
	for name, id := range st.Routes() {
		b, d := st.Backlog(id), st.DeadLetterCount(id)
		if n, err := st.ReplayRecords(id); err == nil {
			b += n
		}
		if b+d > 0 {
			routes = append(routes, name)
		}
		backlog, dead = backlog+b, dead+d
	}
	if backlog+dead == 0 {
		return nil
	}
	slices.Sort(routes)
	return fmt.Errorf("cluster mode: %s holds %d undelivered and %d dead-lettered messages from one-node mode (routes %s), "+
		"which cluster mode would never deliver: run the relay without cluster.nats until they are delivered "+
		"(dead letters: fleetrelay dlq replay or purge), then switch", dir, backlog, dead, strings.Join(routes, ", "))
}

// seedRegistry carries a one-node registry's resources (accounts, keys, routes, devices made
// through the API) into the cluster's registry log when that log is empty: the first relay
// switched to cluster mode seeds it. A relay joining a cluster that has a registry keeps using
// the cluster's, and says so if its own held resources.
func (r *Relay) seedRegistry(ctx context.Context, st *store.Store, b *cluster.RegistryBackend) error {
	var ops []registry.Op
	err := registry.NewStoreBackend(st).Load(ctx, func(kind registry.Kind, id string, value []byte) error {
		if registry.IsResource(kind) {
			ops = append(ops, registry.Op{Kind: kind, ID: id, Value: value})
		}
		return nil
	})
	if err != nil || len(ops) == 0 {
		return err
	}
	seeded, err := b.Seed(ctx, ops)
	switch {
	case err != nil:
		return err
	case seeded:
		r.log.Info("cluster mode: the one-node registry's resources seeded the cluster's registry", "resources", len(ops))
	default:
		r.log.Warn("cluster mode: the cluster has a registry already; this relay's one-node resources are not merged into it",
			"resources", len(ops))
	}
	return nil
}

// seedTasks carries one-node mode's tasks (commands, their states and results) into the
// cluster's tasks bucket, device by device: a device the cluster has no task counter of gets
// this relay's tasks and a counter at their highest id (so ids stay unique); one it has keeps
// the cluster's. Run again at each start in cluster mode, it finds its devices seeded.
func (r *Relay) seedTasks(ctx context.Context, st *store.Store, b *cluster.TasksBackend) error {
	type device struct {
		last uint64
		ops  []store.RegistryOp
	}
	devices := make(map[string]*device)
	at := func(name string) *device {
		d := devices[name]
		if d == nil {
			d = &device{}
			devices[name] = d
		}
		return d
	}
	err := st.LoadTasks(func(key, value []byte) error {
		kind, rest, _ := strings.Cut(string(key), "/")
		switch kind {
		case "task":
			i := strings.LastIndexByte(rest, '/')
			id, err := strconv.ParseUint(rest[i+1:], 10, 64)
			if i <= 0 || err != nil {
				return fmt.Errorf("one-node task key %q", key)
			}
			d := at(rest[:i])
			d.last = max(d.last, id)
			d.ops = append(d.ops, store.RegistryOp{Kind: "task", ID: rest, Value: bytes.Clone(value)})
		case "last":
			if n, err := strconv.ParseUint(string(value), 10, 64); err == nil {
				d := at(rest)
				d.last = max(d.last, n)
			}
		}
		return nil
	})
	if err != nil || len(devices) == 0 {
		return err
	}
	var seeded, kept, carried int
	for name, d := range devices {
		ok, err := b.Seed(ctx, name, d.last, d.ops)
		if err != nil {
			return fmt.Errorf("cluster mode: seed device %s's tasks: %w", name, err)
		}
		if ok {
			seeded, carried = seeded+1, carried+len(d.ops)
		} else {
			kept++
		}
	}
	if seeded > 0 {
		r.log.Info("cluster mode: one-node tasks carried into the cluster's bucket", "devices", seeded, "tasks", carried)
	}
	if kept > 0 { // seeded at an earlier start, or given tasks through another relay first
		r.log.Info("cluster mode: one-node tasks of devices the cluster's bucket knows already are left to the cluster's",
			"devices", kept)
	}
	return nil
}

// clusterJournal is the actors' Journal in cluster mode: the journal's ingest side and the
// routes' queues.
type clusterJournal struct {
	*cluster.Journal
	*cluster.Queues
}

// journal is what the actors store frames in and deliver from: the store, or in cluster mode
// the journal on JetStream.
func (r *Relay) journal() actors.Journal {
	if r.natsJournal != nil {
		return clusterJournal{r.natsJournal, r.natsQueues}
	}
	return r.store
}

// deadLetters is what the dead-letter endpoints list and purge: the store's lists, or in
// cluster mode the cluster's dead-letter stream (any relay's API sees every relay's).
func (r *Relay) deadLetters() deadletter.Lists {
	if r.natsQueues != nil {
		return clusterDeadLetters{r.natsQueues}
	}
	return r.store
}

// clusterDeadLetters serves deadletter.Lists from the cluster's dead-letter stream.
type clusterDeadLetters struct{ q *cluster.Queues }

// deadLetterTimeout bounds one listing or purge of a route's dead letters in cluster mode.
const deadLetterTimeout = time.Minute

func (c clusterDeadLetters) DeadLetters(route uint16, fn func(*store.DeadLetter) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadLetterTimeout)
	defer cancel()
	return c.q.DeadLetters(ctx, route, fn)
}

func (c clusterDeadLetters) Purge(route uint16, before time.Time) (letters, records int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadLetterTimeout)
	defer cancel()
	var ms int64
	if !before.IsZero() {
		ms = before.UnixMilli()
	}
	return c.q.Purge(ctx, route, ms)
}

// routeIDs names routes where frames record them: the store, or the cluster's table.
func (r *Relay) routeIDs() control.RouteIDs {
	if r.natsJournal != nil {
		return r.natsJournal
	}
	return r.store
}

// stopQueues hands this node's partitions back (once the route actors have stopped), so that
// another node takes them at once.
func (r *Relay) stopQueues() {
	if r.natsQueues != nil {
		if err := r.natsQueues.Close(); err != nil {
			r.log.Warn("hand back the partitions", "err", err)
		}
	}
}

// closeJournal waits for the publishes under way (every frame gets its answer).
func (r *Relay) closeJournal() {
	if r.natsJournal != nil {
		_ = r.natsJournal.Close()
	}
}

// openTasks opens the tasks (commands) over the store on one node; in cluster mode over the
// tasks' bucket every node of the prefix shares (a task created through any node reaches the
// device on the node that holds its connection), loaded within clusterConnectTimeout.
func (r *Relay) openTasks(st *store.Store, o tasks.Options) (*tasks.Manager, error) {
	if r.nats == nil {
		o.Backend = st
		return tasks.Open(context.Background(), o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterConnectTimeout)
	defer cancel()
	b, err := r.nats.OpenTasks(ctx)
	if err != nil {
		return nil, err
	}
	r.natsTasks, o.Shared = b, b // closed by closeCluster
	if err := r.seedTasks(ctx, st, b); err != nil {
		return nil, err
	}
	m, err := tasks.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	r.log.Info("cluster mode: commands (tasks) are shared through NATS JetStream",
		"bucket", cluster.Bucket(r.cfg.Cluster.NATS.Prefix, cluster.BucketTasks))
	return m, nil
}

// stopFollowing stops taking other nodes' registry and task changes in (before the actors
// stop). The tasks' last states are still written (the connection closes after).
func (r *Relay) stopFollowing() {
	if r.natsRegistry != nil {
		_ = r.natsRegistry.Close()
	}
	if r.natsTasks != nil {
		_ = r.natsTasks.Close()
	}
}

// closeCluster closes the connection to NATS, once nothing writes the registry any more.
func (r *Relay) closeCluster() {
	r.stopFollowing()
	r.stopQueues()
	r.closeJournal()
	if r.nats != nil {
		_ = r.nats.Close()
	}
}
