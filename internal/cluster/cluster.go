// Package cluster owns what several relay nodes share through NATS JetStream (cluster mode,
// config cluster.nats): the connection to the NATS cluster and the streams and buckets named
// after the configured prefix: the control plane — the registry's log (registry.go), a
// registry.Shared backend — and the commands to devices: the tasks' bucket (tasks.go), a
// tasks.Shared backend; the devices' data: the journal's layout (wire.go), its ingest side
// (journal.go, devices.go, routeids.go: frames acknowledged after JetStream's replicated publish
// ack, one publish in flight per device, the devices' lastSeq, the cluster's route IDs) and its
// delivery side (queues.go, partition.go, lease.go: the per-route queues, partitioned, each
// partition owned by one node by lease and read from per-route cursors into the route actors'
// segments; why leases and cursors rather than consumer priority groups: queues.go); and, for
// device links across nodes, which node holds each device's connection (owners.go) and the
// requests one node makes of another (nodes.go).
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say how to reach the NATS cluster and how to name and replicate what is kept there.
type Options struct {
	// URL is the NATS server's URL, or several comma-separated (the client fails over).
	URL string
	// CredsFile is a NATS credentials file (JWT and NKey seed); "" for none.
	CredsFile string
	// TLS, when set, is the client's TLS configuration.
	TLS *tls.Config
	// Replicas of every stream (1 to 5); 0: 3.
	Replicas int
	// Prefix names the streams: nodes of one prefix share them; "": "fleetrelay".
	Prefix string
	// Name is the connection's name as the NATS server shows it.
	Name   string
	Logger *slog.Logger
}

// Conn is a relay node's connection to the NATS cluster. Close closes what was opened on it.
type Conn struct {
	opts Options
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
}

// Connect connects to the NATS cluster of o. It fails if no server answers before ctx ends;
// once connected, the client reconnects by itself for as long as the Conn is open.
func Connect(ctx context.Context, o Options) (*Conn, error) {
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.Prefix == "" {
		o.Prefix = "fleetrelay"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("component", "cluster")
	nopts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// No buffering while reconnecting: a publish then fails at once and is tried again
		// (retry) within its caller's time, instead of landing later, after its caller gave up.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS connection back", "server", nc.ConnectedUrlRedacted()) }),
	}
	if o.CredsFile != "" {
		nopts = append(nopts, nats.UserCredentials(o.CredsFile))
	}
	if o.TLS != nil {
		nopts = append(nopts, nats.Secure(o.TLS))
	}
	if d, ok := ctx.Deadline(); ok {
		nopts = append(nopts, nats.Timeout(time.Until(d)))
	}
	nc, err := nats.Connect(o.URL, nopts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	return &Conn{opts: o, nc: nc, js: js, log: log}, nil
}

// Close closes the connection. Close the backends opened on it first.
func (c *Conn) Close() error {
	c.nc.Close()
	return nil
}

// Connected reports whether the client is connected to a NATS server now.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// attemptTimeout bounds one request to JetStream; a request that times out is tried again
// until the caller's context ends (a stream leader moving after a node's loss takes seconds).
const attemptTimeout = 2 * time.Second

// opTimeout bounds one operation with its retries, whatever the caller's context allows: an
// API write waits this long for an unreachable NATS cluster, then fails.
const opTimeout = 15 * time.Second

// retry runs fn until it succeeds, fails for good, or ctx ends (opTimeout at most). Only the
// errors of a cluster that cannot answer for now — no responders, timeouts, a stream without a
// leader — are tried again.
func retry[T any](ctx context.Context, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancelOp := context.WithTimeout(ctx, opTimeout)
	defer cancelOp()
	wait := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := fn(actx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// errCodeNoPeers is nats-server's "no suitable peers for placement" (a stream created or
// scaled while a peer is offline, or not yet known to the meta leader of a cluster starting):
// it passes once the peer is back.
const errCodeNoPeers jetstream.ErrorCode = 10005

func transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled ||
			apiErr.ErrorCode == errCodeNoPeers
	}
	return false
}
