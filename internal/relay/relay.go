// Package relay is the composition root: it turns a config into a running relay and owns the
// order of start-up and shutdown. It only wires: it recovers the store, builds the delivery
// clients, the actor system and the device listeners over it, starts the store with its hooks
// into them, hands the metrics registry to each component (each defines and registers its own
// collectors) and mounts the components' endpoints (accounts, keys, dead letters, pprof) on
// the admin server.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/route"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
	"github.com/fleetrelay/fleetrelay/netio"
	"github.com/fleetrelay/fleetrelay/netio/link"
)

// Relay is one running fleetrelay. New and Start are called from one goroutine; the address
// getters are safe once Start returned; Shutdown is safe for concurrent use and idempotent.
type Relay struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	store    *store.Store
	clients  *route.Clients
	sys      *actors.System
	net      *netio.Server
	admin    *api.Server
	registry *registry.Registry // accounts, keys, routes, devices
	control  *control.Control   // the registry's routes and devices applied to the actors
	tasks    *tasks.Manager     // commands to devices
	links    linkManager        // device links (nil: devicelink.listen unset)
	// Cluster mode (cluster.go): the connection to NATS and the registry's log on it; nil in
	// one-node mode.
	nats         *cluster.Conn
	natsRegistry *cluster.RegistryBackend
	natsJournal  *cluster.Journal // the devices' journal (ingest side)
	natsQueues   *cluster.Queues  // the routes' partitioned queues over it
	natsTasks    *cluster.TasksBackend
	adminAddr    net.Addr
	routes       []*actors.Route

	connectors []*link.Connector // the raw TCP connectors of connectors[] (connectors.go)

	// Device links across nodes (clusterlinks.go): this node's name, its devices' owner
	// records, its answers to other nodes, the API's links and the links other nodes asked
	// for (nil: links off or one node).
	node    string
	owners  *cluster.Owners
	nodeSrv *cluster.NodeServer
	cross   *crossLinks
	legs    *servedLegs

	stopOnce sync.Once
	reloadMu sync.Mutex    // one Reload at a time (reload.go)
	stopped  chan struct{} // closed when the first Shutdown returns; stopErr is its result
	stopErr  error
}

// New builds every part; nothing listens until Start.
//
// It first runs [Preflight]: its warnings are logged, its problems (all of them) returned. Then,
// in this order: the store is recovered (store.Open: its state read from disk, nothing running
// yet), the routes compiled against it, the actor system built over it (route actors recover
// their queues from it) and the device listeners over the actors; then the store is started
// with its hooks into them (commits wake route actors, delivered watermarks and disk-space
// refusals reach the devices), so no hook ever finds its receiver missing.
func New(cfg *config.Config, log *slog.Logger) (*Relay, error) {
	cfg.Resolve() // route timeouts and retries inherit delivery's (idempotent)
	warnings, err := Preflight(cfg)
	for _, w := range warnings {
		log.Warn(w, "component", "config")
	}
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: log, reg: prometheus.NewRegistry(), stopped: make(chan struct{})}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	minBytes, minPercent := cfg.Store.MinFree.Value()
	st, err := store.Open(context.Background(), store.Options{
		Dir:        cfg.DataDir,
		Sync:       cfg.Store.Sync,
		Logger:     log,
		GCInterval: gcInterval(cfg.Store.GCInterval),
		MinFree:    store.FreeSpace{Bytes: int64(minBytes), Percent: minPercent},
		// Segments beyond what routes hold in memory keep their delivery state on disk.
		MaxResident: cfg.Delivery.MaxQueuedMessages,
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	r.store = st
	rb, err := r.registryBackend(st)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("open registry: %w", err)
	}
	if err = r.openJournal(); err != nil {
		r.closeCluster()
		_ = st.Close()
		return nil, err
	}
	if r.registry, err = registry.Open(context.Background(), rb); err != nil {
		r.closeCluster()
		_ = st.Close()
		return nil, fmt.Errorf("open registry: %w", err)
	}
	if r.tasks, err = r.openTasks(st, tasks.Options{Logger: log,
		Retention: time.Duration(cfg.Commands.Retention), DefaultTTL: time.Duration(cfg.Commands.DefaultTTL),
		MaxTTL: time.Duration(cfg.Commands.MaxTTL)}); err != nil {
		r.closeCluster()
		_ = st.Close()
		return nil, fmt.Errorf("open tasks: %w", err)
	}

	r.clients = route.NewClients(deliver.Options{
		AllowPrivateNetworks: cfg.Delivery.AllowPrivateNetworks,
		Timeout:              time.Duration(cfg.Delivery.Timeout),
		Logger:               log,
	})
	deps := route.Deps{Delivery: cfg.Delivery, Clients: r.clients, Metrics: pipeline.NewMetrics(r.reg), Logger: log,
		FailureLogInterval: time.Duration(cfg.Log.FailureInterval)}
	r.routes, err = r.compileRoutes(deps)
	if err != nil {
		r.abort()
		return nil, err
	}
	devs, err := fleet(cfg.Fleet)
	if err != nil {
		r.abort()
		return nil, err
	}
	r.sys = actors.New(actors.Options{
		AckMode:   string(cfg.Devices.Ack),
		MaxFrame:  int(cfg.Devices.MaxFrame),
		Routes:    r.routes,
		Fleet:     devs,
		Auth:      string(cfg.Devices.Auth),
		AuthLimit: access.NewLimiter(deviceAuthEvery, deviceAuthBurst),
		Journal:   r.journal(),
		Logger:    log,
		Metrics:   actors.NewMetrics(r.reg),
		MaxQueued: cfg.Delivery.MaxQueuedMessages,
		Commands:  r.tasks,

		MaxUnknown:     cfg.Devices.MaxUnknownIdentities,
		AddressChanged: r.deviceMoved, // cluster mode: which node holds the device
	})
	r.tasks.Attach(r.sys) // before devices connect
	// The config's routes and fleet join the registry (read-only there); the routes and devices
	// stored through the API run from here on, and follow its changes.
	r.control, err = control.New(control.Options{Registry: r.registry, System: r.sys, Store: r.routeIDs(), Deps: deps,
		Routes: cfg.Routes, Fleet: cfg.Fleet, SecretFields: cfg.Devices.SecretFields, Logger: log})
	if err != nil {
		r.abort()
		return nil, err
	}
	devTLS, telTLS, problems := devicesTLS(&cfg.Devices) // Preflight read them a moment ago
	if len(problems) > 0 {
		r.abort()
		return nil, &config.ValidationError{Problems: problems}
	}
	r.net = netio.New(netio.Options{
		TCP:          cfg.Devices.Native.TCP,
		UDP:          cfg.Devices.Native.UDP,
		MaxFrame:     int(cfg.Devices.MaxFrame),
		HelloTimeout: time.Duration(cfg.Devices.HelloTimeout),
		IdleTimeout:  time.Duration(cfg.Devices.IdleTimeout),
		MaxConns:     cfg.Devices.MaxConnections,
		EventLoops:   cfg.Devices.EventLoops,
		Logger:       log,

		MaxConnsPerSource: cfg.Devices.MaxConnectionsPerSource,
		FirstDataTimeout:  time.Duration(cfg.Devices.FirstDataTimeout),

		NDJSON:         cfg.Devices.NDJSON.TCP,
		IdentityField:  cfg.Devices.NDJSON.IdentityField,
		MaxLine:        int(cfg.Devices.NDJSON.MaxLine),
		NDJSONInflight: int(cfg.Devices.NDJSON.MaxInflight),

		TeltonikaTCP: cfg.Devices.Teltonika.TCP,
		TeltonikaUDP: cfg.Devices.Teltonika.UDP,
		TeltonikaTLS: telTLS,
		Teltonika:    r.sys,

		TLS: devTLS,
	}, r.sys)
	err = st.Start(store.Hooks{
		OnCommit:          r.sys.OnCommit,
		OnDelivered:       r.sys.OnDelivered,
		OnWindowDelivered: r.sys.OnWindowDelivered, // UDP datagrams, ack mode delivery
		// While the store refuses new data for lack of disk space, NDJSON connections are not
		// read (native devices are answered ERROR 503 by their actors).
		OnSpace: r.net.PauseNDJSON,
	})
	if err == nil && r.natsQueues != nil {
		// The partitions this node takes are read into the route actors from their cursors.
		err = r.natsQueues.Start(r.sys.OnCommit)
	}
	if err == nil {
		r.control.Start()   // the notifications the last run left
		r.registry.Follow() // other nodes' changes, in cluster mode
	}
	if err == nil {
		err = r.buildLinks()
	}
	if err == nil {
		err = r.buildClusterLinks()
	}
	if err == nil {
		err = r.buildConnectors()
	}
	if err == nil {
		err = r.registerMetrics()
	}
	if err != nil {
		r.abort()
		return nil, err
	}
	if cfg.Admin.Listen != "" {
		if err := r.buildAdmin(); err != nil {
			r.abort()
			return nil, err
		}
	}
	return r, nil
}

// abort releases what a failed New built: the actor system, the delivery clients, the store.
func (r *Relay) abort() {
	if r.sys != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no grace for a relay that never started: what is undelivered stays stored
		_ = r.sys.Stop(ctx)
	}
	r.clients.Close()
	r.tasks.Close()
	r.stopClusterLinks()
	r.stopFollowing()
	if r.control != nil {
		r.control.Close()
	}
	r.closeCluster()
	_ = r.store.Close()
}

// registerMetrics hands the registry to each component, which registers its own collectors.
func (r *Relay) registerMetrics() error {
	if err := r.store.RegisterMetrics(r.reg, r.sys.Routes); err != nil { // the routes running when scraped
		return err
	}
	r.sys.RegisterMetrics(r.reg)
	r.net.RegisterMetrics(r.reg)
	r.tasks.RegisterMetrics(r.reg)
	if r.natsQueues != nil {
		r.reg.MustRegister(r.natsQueues.Collectors()...)
	}
	if r.links != nil {
		r.reg.MustRegister(r.links.Collectors()...)
	}
	return nil
}

// gcInterval maps store.gc_interval to the store's option: 0 leaves only the runs after
// deliveries (the store's negative).
func gcInterval(d config.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return time.Duration(d)
}

// Failed device token checks per source address: a burst, then one every interval (see
// actors.AuthLimiter). Generous enough for a NAT address with a few devices holding stale tokens
// behind it; a guesser gets 5 tries a second.
const (
	deviceAuthBurst = 30
	deviceAuthEvery = 200 * time.Millisecond
)

// fleet is the device metadata of the config, by identity; a device's token is revealed and
// kept as its hash.
func fleet(devs []config.Device) (map[string]*actors.DeviceMeta, error) {
	m := make(map[string]*actors.DeviceMeta, len(devs))
	for i, d := range devs {
		h, err := control.FleetTokenHash(&d)
		if err != nil {
			return nil, fmt.Errorf("fleet[%d].token: %w", i, err)
		}
		m[d.ID] = &actors.DeviceMeta{IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
			Tags: d.Tags, Groups: d.Groups, Account: d.Account, TokenHash: h}
	}
	return m, nil
}

// compileRoutes compiles the enabled routes (route.Compile) with their delivery clients and
// names them in the store.
func (r *Relay) compileRoutes(deps route.Deps) ([]*actors.Route, error) {
	var out []*actors.Route
	for i := range r.cfg.Routes {
		rc := &r.cfg.Routes[i]
		if !rc.IsEnabled() {
			continue
		}
		c, err := route.Compile(*rc, fmt.Sprintf("routes[%d]", i), deps)
		if err != nil {
			return nil, err
		}
		for _, w := range c.Warnings {
			r.log.Warn("route TLS: "+w, "route", rc.Name)
		}
		if c.Route.ID, err = r.routeIDs().RouteID(rc.Name); err != nil {
			return nil, fmt.Errorf("route %q: %w", rc.Name, err)
		}
		out = append(out, c.Route)
	}
	return out, nil
}

// Start opens the device listeners and the admin server.
func (r *Relay) Start() error {
	if err := r.net.Start(); err != nil {
		return err
	}
	if r.links != nil { // before the API can open links
		if err := r.links.Start(context.Background()); err != nil {
			return fmt.Errorf("device links: %w", err)
		}
	}
	if err := r.startConnectors(context.Background()); err != nil {
		return err
	}
	if r.admin != nil {
		addr, err := r.admin.Start()
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		r.adminAddr = addr
	}
	r.log.Info("relay started", "tcp", r.net.TCPAddr(), "udp", r.net.UDPAddr(), "ndjson", r.net.NDJSONAddr(), "tls", r.net.TLSAddr(),
		"teltonika_tcp", r.net.TeltonikaTCPAddr(), "teltonika_udp", r.net.TeltonikaUDPAddr(),
		"teltonika_tls", r.net.TeltonikaTLSAddr(),
		"admin", r.adminAddr, "data_dir", r.cfg.DataDir)
	return nil
}

// Run starts the relay and serves until ctx ends, then shuts down within the deadline.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.Start(); err != nil {
		_ = r.Shutdown(context.Background())
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	return r.Shutdown(sctx)
}

// Shutdown stops taking data, acknowledges what was stored, gives in-flight deliveries the
// configured grace, and closes the store cleanly.
//
// It is idempotent and safe for concurrent use: the first call shuts down; the others wait for
// it (each bounded by its own ctx) and return its result, at once when it has finished.
func (r *Relay) Shutdown(ctx context.Context) error {
	first := false
	r.stopOnce.Do(func() { first = true })
	if first {
		r.stopErr = r.shutdown(ctx)
		close(r.stopped)
		return r.stopErr
	}
	select {
	case <-r.stopped:
		return r.stopErr
	default:
	}
	select {
	case <-r.stopped:
		return r.stopErr
	case <-ctx.Done():
		return fmt.Errorf("wait for the shutdown under way: %w", ctx.Err())
	}
}

func (r *Relay) shutdown(ctx context.Context) error {
	var errs []error
	r.stopFollowing() // other nodes' changes no longer reach the actors that stop
	r.stopClusterLinks()
	r.net.Drain()
	if r.links != nil { // clients and devices of links are cut at once; nothing of them is stored
		if err := r.links.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop device links: %w", err))
		}
	}
	// The raw TCP connectors likewise: their pairs are cut, nothing of them is stored.
	errs = append(errs, r.stopConnectors(ctx)...)
	if err := r.sys.Quiesce(ctx); err != nil { // stored frames are acknowledged before sockets close
		errs = append(errs, err)
	}
	if err := r.net.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop listeners: %w", err))
	}
	grace, cancel := context.WithTimeout(ctx, time.Duration(r.cfg.Delivery.ShutdownGrace))
	if err := r.sys.Stop(grace); err != nil {
		r.log.Warn("shutdown", "err", err) // undelivered records stay in the store
	}
	cancel()
	r.stopQueues() // the cursors written, the partitions handed back to the other nodes
	r.clients.Close()
	r.tasks.Close()   // the last task states are written
	r.control.Close() // the notification entries the journal has are removed
	if err := r.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	if r.admin != nil {
		if err := r.admin.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close admin: %w", err))
		}
	}
	r.closeCluster()
	r.log.Info("relay stopped")
	return errors.Join(errs...)
}

// health fails once shutdown began, while the store refuses new data for lack of disk space, or
// in cluster mode while JetStream does not take the journal's frames, so a balancer stops
// sending devices here.
func (r *Relay) health() error {
	if r.net.Draining() {
		return errors.New("shutting down")
	}
	if r.natsJournal != nil && !r.natsJournal.Healthy() {
		return errors.New("NATS JetStream unreachable: frames are not acknowledged (devices get ERROR 503)")
	}
	if sp := r.store.Space(); sp.Refused {
		const mib = 1 << 20
		return fmt.Errorf("refusing new data: %.1f MiB free in %s, below store.min_free (%.1f MiB); taken again from %.1f MiB free",
			float64(sp.Free)/mib, sp.Dir, float64(sp.MinFree)/mib, float64(sp.Resume)/mib)
	}
	return nil
}

// DeviceTCPAddr is the native protocol's TCP address.
func (r *Relay) DeviceTCPAddr() net.Addr { return r.net.TCPAddr() }

// DeviceUDPAddr is the native protocol's UDP address.
func (r *Relay) DeviceUDPAddr() net.Addr { return r.net.UDPAddr() }

// DeviceTLSAddr is the native protocol's TLS address (nil when disabled).
func (r *Relay) DeviceTLSAddr() net.Addr { return r.net.TLSAddr() }

// DeviceNDJSONAddr is the NDJSON listener's address (nil when disabled).
func (r *Relay) DeviceNDJSONAddr() net.Addr { return r.net.NDJSONAddr() }

// TeltonikaTCPAddr and TeltonikaUDPAddr are the Teltonika listeners' addresses (nil when
// disabled).
func (r *Relay) TeltonikaTCPAddr() net.Addr { return r.net.TeltonikaTCPAddr() }

// TeltonikaUDPAddr: see TeltonikaTCPAddr.
func (r *Relay) TeltonikaUDPAddr() net.Addr { return r.net.TeltonikaUDPAddr() }

// TeltonikaTLSAddr is the address of Teltonika's TLS listener (nil when disabled).
func (r *Relay) TeltonikaTLSAddr() net.Addr { return r.net.TeltonikaTLSAddr() }

// TeltonikaStats are the Teltonika counters of the listeners and of the actors.
type TeltonikaStats struct {
	Net    netio.TeltonikaStats  // packets, bad packets, datagrams
	Actors actors.TeltonikaStats // records stored, duplicates, answers
}

// TeltonikaStats returns the Teltonika counters. Safe for concurrent use.
func (r *Relay) TeltonikaStats() TeltonikaStats {
	return TeltonikaStats{r.net.TeltonikaStats(), r.sys.TeltonikaStats()}
}

// AdminAddr is the admin server's address (nil when disabled).
func (r *Relay) AdminAddr() net.Addr { return r.adminAddr }
