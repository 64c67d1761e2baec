// Package relay is the composition root: it turns a config into a running relay (store, actors,
// device listeners, delivery client, admin server) and owns the start-up and shutdown order.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
	"github.com/fleetrelay/fleetrelay/internal/route"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Relay is one running fleetrelay. New, Start and Shutdown are called from one goroutine; the
// address getters are safe once Start returned.
type Relay struct {
	cfg       *config.Config
	log       *slog.Logger
	reg       *prometheus.Registry
	store     *store.Store
	clients   *route.Clients
	sys       *actors.System
	net       *netio.Server
	admin     *api.Server
	adminAddr net.Addr
	routes    []*actors.Route

	stopOnce sync.Once
	stopErr  error
}

// New opens the store and builds every part; nothing listens until Start.
//
// It first runs [Preflight]: its warnings are logged, its problems (all of them) returned.
func New(cfg *config.Config, log *slog.Logger) (*Relay, error) {
	cfg.Resolve() // route timeouts and retries inherit delivery's (idempotent)
	warnings, err := Preflight(cfg)
	for _, w := range warnings {
		log.Warn(w, "component", "config")
	}
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The store's hooks can fire before the actors exist: at Open, repairing dead letters' marks
	// advances delivered watermarks. No device is connected then (a device reads its watermark
	// at HELLO), so until the actors are set the hooks do nothing.
	var sysp atomic.Pointer[actors.System]
	commitHist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "fleetrelay_store_commit_seconds", Help: "Duration of the store's group commits that stored frames.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	waitHist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fleetrelay_store_commit_wait_seconds",
		Help:    "Per group commit, how long its oldest frame waited from arrival at the store to the end of the commit (persist acks go out after it).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	framesHist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "fleetrelay_store_commit_frames", Help: "Frames per group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14),
	})
	r.reg.MustRegister(commitHist, waitHist, framesHist)
	// While the store refuses new data for lack of disk space, NDJSON connections are not read.
	// The store can say so at Open, before the listeners exist: pause keeps the state for them.
	var pause struct {
		sync.Mutex
		refused bool
		net     *netio.Server
	}
	minBytes, minPercent := cfg.Store.MinFree.Value()
	st, err := store.Open(store.Options{
		MinFree: store.FreeSpace{Bytes: int64(minBytes), Percent: minPercent},
		OnSpace: func(refused bool) {
			pause.Lock()
			pause.refused = refused
			if pause.net != nil {
				pause.net.PauseNDJSON(refused)
			}
			pause.Unlock()
		},
		Dir:        cfg.DataDir,
		Sync:       cfg.Store.Sync,
		Logger:     log,
		GCInterval: gcInterval(cfg.Store.GCInterval),
		// Segments beyond what routes hold in memory keep their delivery state on disk.
		MaxResident: cfg.Delivery.MaxQueuedMessages,
		OnCommit: func(seg *store.Segment) {
			if sys := sysp.Load(); sys != nil {
				sys.OnCommit(seg)
			}
		},
		OnDelivered: func(device string, seq uint64) {
			if sys := sysp.Load(); sys != nil {
				sys.OnDelivered(device, seq)
			}
		},
		OnWindowDelivered: func(device string, seq uint64) { // UDP datagrams, ack mode delivery
			if sys := sysp.Load(); sys != nil {
				sys.OnWindowDelivered(device, seq)
			}
		},
		ObserveCommit: func(frames int, commit, wait time.Duration) {
			commitHist.Observe(commit.Seconds())
			waitHist.Observe(wait.Seconds())
			framesHist.Observe(float64(frames))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	r.store = st

	r.clients = route.NewClients(deliver.Options{
		AllowPrivateNetworks: cfg.Delivery.AllowPrivateNetworks,
		Timeout:              time.Duration(cfg.Delivery.Timeout),
		Logger:               log,
	})
	r.routes, err = r.compileRoutes(pipeline.NewMetrics(r.reg))
	if err != nil {
		r.clients.Close()
		_ = st.Close()
		return nil, err
	}
	routes := r.routes
	sys := actors.New(actors.Options{
		AckMode:   string(cfg.Devices.Ack),
		MaxFrame:  int(cfg.Devices.MaxFrame),
		Routes:    routes,
		Fleet:     fleet(cfg.Fleet),
		Journal:   st,
		Logger:    log,
		Metrics:   actors.NewMetrics(r.reg),
		MaxQueued: cfg.Delivery.MaxQueuedMessages,
	})
	r.sys = sys
	sysp.Store(sys)
	r.net = netio.New(netio.Options{
		TCP:          cfg.Devices.Native.TCP,
		UDP:          cfg.Devices.Native.UDP,
		MaxFrame:     int(cfg.Devices.MaxFrame),
		HelloTimeout: time.Duration(cfg.Devices.HelloTimeout),
		IdleTimeout:  time.Duration(cfg.Devices.IdleTimeout),
		MaxConns:     cfg.Devices.MaxConnections,
		EventLoops:   cfg.Devices.EventLoops,
		Logger:       log,

		NDJSON:         cfg.Devices.NDJSON.TCP,
		IdentityField:  cfg.Devices.NDJSON.IdentityField,
		MaxLine:        int(cfg.Devices.NDJSON.MaxLine),
		NDJSONInflight: int(cfg.Devices.NDJSON.MaxInflight),
	}, sys)
	pause.Lock()
	pause.net = r.net
	r.net.PauseNDJSON(pause.refused)
	pause.Unlock()
	r.registerMetrics()
	if cfg.Admin.Listen != "" {
		r.admin = api.New(cfg.Admin.Listen, r.reg, r.health, log)
		registerPprof(r.admin)
		r.registerDeadLetters(r.admin)
	}
	return r, nil
}

// gcInterval maps store.gc_interval to the store's option: 0 leaves only the runs after
// deliveries (the store's negative).
func gcInterval(d config.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return time.Duration(d)
}

// fleet is the device metadata of the config, by identity.
func fleet(devs []config.Device) map[string]*actors.DeviceMeta {
	m := make(map[string]*actors.DeviceMeta, len(devs))
	for _, d := range devs {
		m[d.ID] = &actors.DeviceMeta{IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
			Tags: d.Tags, Groups: d.Groups, Account: d.Account}
	}
	return m
}

// compileRoutes compiles the enabled routes (route.Compile) with their delivery clients and
// names them in the store.
func (r *Relay) compileRoutes(pm *pipeline.Metrics) ([]*actors.Route, error) {
	var out []*actors.Route
	for i := range r.cfg.Routes {
		rc := &r.cfg.Routes[i]
		if !rc.IsEnabled() {
			continue
		}
		c, err := route.Compile(*rc, fmt.Sprintf("routes[%d]", i), route.Deps{Delivery: r.cfg.Delivery, Clients: r.clients,
			Metrics: pm, Logger: r.log, FailureLogInterval: time.Duration(r.cfg.Log.FailureInterval)})
		if err != nil {
			return nil, err
		}
		for _, w := range c.Warnings {
			r.log.Warn("route TLS: "+w, "route", rc.Name)
		}
		if c.Route.ID, err = r.store.RouteID(rc.Name); err != nil {
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
	if r.admin != nil {
		addr, err := r.admin.Start()
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		r.adminAddr = addr
	}
	r.log.Info("relay started", "tcp", r.net.TCPAddr(), "udp", r.net.UDPAddr(), "ndjson", r.net.NDJSONAddr(),
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
// Calls after the first wait for it and return its result.
func (r *Relay) Shutdown(ctx context.Context) error {
	r.stopOnce.Do(func() { r.stopErr = r.shutdown(ctx) })
	return r.stopErr
}

func (r *Relay) shutdown(ctx context.Context) error {
	var errs []error
	r.net.Drain()
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
	r.clients.Close()
	if err := r.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	if r.admin != nil {
		if err := r.admin.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close admin: %w", err))
		}
	}
	r.log.Info("relay stopped")
	return errors.Join(errs...)
}

// health fails once shutdown began, or while the store refuses new data for lack of disk
// space, so a balancer stops sending devices here.
func (r *Relay) health() error {
	if r.net.Draining() {
		return errors.New("shutting down")
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

// DeviceNDJSONAddr is the NDJSON listener's address (nil when disabled).
func (r *Relay) DeviceNDJSONAddr() net.Addr { return r.net.NDJSONAddr() }

// AdminAddr is the admin server's address (nil when disabled).
func (r *Relay) AdminAddr() net.Addr { return r.adminAddr }

func (r *Relay) registerMetrics() {
	n, sys := r.net, r.sys
	gauge := func(name, help string, f func() float64) {
		r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	for i := range sys.Routes() {
		i := i
		r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetrelay_route_oldest_pending_seconds", Help: "Age of the oldest message a route has not delivered yet (0: none).",
			ConstLabels: prometheus.Labels{"route": sys.Routes()[i]},
		}, func() float64 { return sys.OldestPending(i).Seconds() }))
		id := r.routes[i].ID
		r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetrelay_route_backlog_messages", Help: "Messages stored for a route and not yet delivered or dead-lettered: its queue depth, in memory or in the store.",
			ConstLabels: prometheus.Labels{"route": sys.Routes()[i]},
		}, func() float64 { return float64(r.store.Backlog(id)) }))
		r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetrelay_route_dead_letter_messages", Help: "Messages in a route's dead-letter list (fleetrelay dlq), not counting replays in progress.",
			ConstLabels: prometheus.Labels{"route": sys.Routes()[i]},
		}, func() float64 { return float64(r.store.DeadLetterCount(id)) }))
	}
	st := r.store
	gauge("fleetrelay_store_resident_messages", "Stored messages whose delivery state is held in memory (bounded by delivery.max_queued_messages plus what routes hold).",
		func() float64 { return float64(st.Stats().ResidentRecords) })
	gauge("fleetrelay_store_cold_messages", "Stored messages whose delivery state is only on disk until a route reads them back (a backlog beyond memory).",
		func() float64 { return float64(st.Stats().ColdRecords) })
	gauge("fleetrelay_store_free_bytes", "Free bytes on the data directory's filesystem, as the store last read them.",
		func() float64 { return float64(r.store.Space().Free) })
	gauge("fleetrelay_store_min_free_bytes", "Free bytes below which the store refuses new data (store.min_free, never below what the store needs once it refuses).",
		func() float64 { return float64(r.store.Space().MinFree) })
	gauge("fleetrelay_store_ingest_refused", "1 while the store refuses new data for lack of disk space, else 0.", func() float64 {
		if r.store.Space().Refused {
			return 1
		}
		return 0
	})
	counter("fleetrelay_store_refused_frames_total", "Frames the store refused for lack of disk space (native devices got ERROR 503; NDJSON lines were dropped).",
		func() float64 { return float64(r.store.Space().RefusedFrames) })
	gauge("fleetrelay_device_connections", "Open device TCP connections (native and NDJSON).", func() float64 { return float64(n.Stats().Connections) })
	counter("fleetrelay_device_frames_total", "Native frames decoded from devices (TCP and UDP).", func() float64 { return float64(n.Stats().Frames) })
	counter("fleetrelay_device_bytes_total", "Bytes decoded from devices (native frames and NDJSON lines).", func() float64 { return float64(n.Stats().Bytes) })
	counter("fleetrelay_device_errors_total", "Device connections closed with an ERROR frame.", func() float64 { return float64(n.Stats().Errors) })
	counter("fleetrelay_device_refused_total", "Device connections refused (capacity, shutdown), native and NDJSON.", func() float64 { return float64(n.Stats().Refused) })
	counter("fleetrelay_udp_dropped_total", "Malformed or unexpected datagrams dropped unanswered.", func() float64 { return float64(n.Stats().UDPDropped) })
	counter("fleetrelay_ndjson_lines_total", "NDJSON lines accepted for storing.", func() float64 { return float64(n.Stats().NDJSONLines) })
	gauge("fleetrelay_ndjson_inflight_bytes", "Bytes of NDJSON lines read and not yet stored; at devices.ndjson.max_inflight no NDJSON connection is read.",
		func() float64 { return float64(n.Stats().NDJSONInflight) })
	const droppedHelp = "NDJSON lines dropped, by reason: malformed (not a JSON object), identity (identity field missing or invalid), " +
		"too_long (over max_line; closes the connection), shutdown (arrived after shutdown began), " +
		"native (the identity was connected natively), store (the store refused them)."
	for reason, f := range map[string]func() int64{
		"malformed": func() int64 { return n.Stats().NDJSONMalformed },
		"identity":  func() int64 { return n.Stats().NDJSONIdentity },
		"too_long":  func() int64 { return n.Stats().NDJSONTooLong },
		"shutdown":  func() int64 { return n.Stats().NDJSONShutdown },
		"native":    sys.LinesRefused,
		"store":     sys.LinesLost,
	} {
		r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fleetrelay_ndjson_dropped_total", Help: droppedHelp, ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(f()) }))
	}
}
