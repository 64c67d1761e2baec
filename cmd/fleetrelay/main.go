// Command fleetrelay runs the relay: flags → config → relay → Run until SIGINT/SIGTERM; SIGHUP
// reloads the config file's routes and fleet.
//
//	fleetrelay [-config FILE] [-check-config]
//	fleetrelay dlq list -route NAME [-config FILE] [-key KEY] [-limit N]
//	fleetrelay dlq replay -route NAME [-config FILE] [-key KEY]
//	fleetrelay dlq purge -route NAME [-config FILE] [-key KEY] [-older-than DURATION]
//	fleetrelay store verify [-data-dir DIR | -config FILE] [-json]
//	fleetrelay store salvage -from DIR -to NEW_DIR [-route NAME=ID]... [-json]
//	fleetrelay devices import FILE [-format csv|ndjson|azure] [-key-field custom1] [-config FILE] [-key KEY]
//
// dlq inspects and replays a route's dead letters: through the running relay's admin API with an
// API key holding the deadLetters rights (-key, else $FLEETRELAY_KEY, else the relay's own
// admin.bootstrap_key or <data_dir>/admin.key when readable), or in the data directory when no
// relay runs (a replay is then delivered when the relay starts).
// store checks a data directory offline, or copies what is readable out of a damaged one.
// devices import sends a file of devices (NDJSON, CSV or an Azure IoT Hub device-identity
// export) to the running relay's POST /api/v1/devices:import, with a key as dlq's; it prints
// the rejected rows, and exits 3 when there were some.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/natsembed"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "dlq" {
		return dlq(args[1:])
	}
	if len(args) > 0 && args[0] == "devices" {
		return devicesCmd(args[1:], os.Stdout, os.Stderr)
	}
	if len(args) > 0 && args[0] == "store" {
		return storeCmd(args[1:], os.Stdout, os.Stderr)
	}
	fs := flag.NewFlagSet("fleetrelay", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file (default: embedded defaults)")
	check := fs.Bool("check-config", false, "validate the config, compile every route as the relay does (reading its secrets and certificate files), check it against this machine (CPUs, open-file limit), and exit")
	natsAddr := fs.String("nats-embedded", "", "run a one-node NATS JetStream server inside the relay, listening on this host:port, its streams in <data_dir>/nats, and run in cluster mode on it (cluster.nats.url must be empty; replicas become 1); other relays on the machine set cluster.nats.url to it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, log, err := relay.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *natsAddr != "" {
		if cfg.Cluster.NATS.URL != "" {
			fmt.Fprintln(os.Stderr, "-nats-embedded: cluster.nats.url is set already: use one or the other")
			return 1
		}
		// Before -check-config: cluster mode's own checks apply to what will run.
		cfg.Cluster.NATS.URL = "nats://" + *natsAddr
	}
	if *check {
		return checkConfig(cfg)
	}
	if *natsAddr != "" {
		dir := filepath.Join(cfg.DataDir, "nats")
		ns, err := natsembed.Start(*natsAddr, dir)
		if err != nil {
			log.Error("start", "err", err)
			return 1
		}
		defer ns.Shutdown() // after the relay has stopped
		cfg.Cluster.NATS.URL = ns.URL()
		log.Info("embedded NATS server with JetStream", "url", ns.URL(), "store", dir)
		if cfg.Cluster.NATS.Replicas > 1 {
			log.Info("one embedded NATS server keeps one replica of each stream", "replicas", cfg.Cluster.NATS.Replicas)
			cfg.Cluster.NATS.Replicas = 1
		}
	}
	r, err := relay.New(cfg, log) // runs relay.Preflight first
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	// After New, which refuses event loops the machine cannot carry.
	log.Debug("runtime", "gomaxprocs", relay.SetProcs(cfg), "memory_limit", relay.SetMemoryLimit(cfg))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		reloadOnHUP(ctx, r, *path, log)
	}()
	defer wg.Wait()
	if err := r.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

// reloadOnHUP reads the config file again on each SIGHUP and applies its routes and fleet
// (relay.Relay.Reload), until ctx ends. A file that does not load or whose routes do not
// compile changes nothing; the error is logged.
func reloadOnHUP(ctx context.Context, r *relay.Relay, path string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if path == "" {
			log.Warn("SIGHUP: no config file to reload (the relay runs on its embedded defaults)")
			continue
		}
		cfg, _, err := relay.LoadConfig(path)
		if err == nil {
			_, _, err = r.Reload(ctx, cfg)
		}
		if err != nil {
			log.Error("config not reloaded; the relay runs on as it was", "path", path, "err", err)
		}
	}
}

// checkConfig prints what relay.Preflight finds in the loaded cfg (the machine checks, and every
// route compiled by route.Compile, then discarded): warnings, then every problem.
func checkConfig(cfg *config.Config) int {
	warnings, err := relay.Preflight(cfg)
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning: "+w)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("config ok")
	return 0
}

func dlq(args []string) int {
	usage := "usage: fleetrelay dlq list|replay|purge -route NAME [-config FILE] [-key KEY] [-limit N] [-older-than DURATION]"
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay" && args[0] != "purge") {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("fleetrelay dlq "+args[0], flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file (default: embedded defaults)")
	route := fs.String("route", "", "route name (required)")
	limit := fs.Int("limit", 100, "list: most dead letters to show (the totals count all)")
	age := fs.Duration("older-than", 0, "purge: only dead letters older than this (default: all)")
	key := fs.String("key", os.Getenv("FLEETRELAY_KEY"), "API key of the running relay, holding the deadLetters rights (default: $FLEETRELAY_KEY)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *route == "" {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	cfg, _, err := relay.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	if args[0] == "list" {
		page, err := deadletter.List(ctx, cfg, *key, *route, *limit)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, d := range page.DeadLetters {
			_ = enc.Encode(d)
		}
		fmt.Fprintf(os.Stderr, "route %s: %d dead letters, %d messages\n", page.Route, page.Letters, page.Messages)
		return 0
	}
	if args[0] == "purge" {
		res, err := deadletter.Purge(ctx, cfg, *key, *route, *age)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = enc.Encode(res)
		return 0
	}
	res, err := deadletter.Replay(ctx, cfg, *key, *route)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = enc.Encode(res)
	return 0
}
