package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/config"
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
// the relay then owns (closeCluster). Devices' data stays in st either way.
func (r *Relay) registryBackend(st *store.Store) (registry.Backend, error) {
	n := r.cfg.Cluster.NATS
	if !r.cfg.Cluster.Enabled() {
		return registry.NewStoreBackend(st), nil
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
	r.nats, r.natsRegistry = conn, b
	r.log.Info("cluster mode: the registry is shared through NATS JetStream; devices' data stays in this node's store",
		"stream", cluster.RegistryStream(n.Prefix), "replicas", n.Replicas)
	return b, nil
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
	if r.nats != nil {
		_ = r.nats.Close()
	}
}
