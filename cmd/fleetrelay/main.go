// Command fleetrelay runs the relay: flags → config → relay → Run until SIGINT/SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetrelay/fleetrelay/internal/relay"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("fleetrelay", flag.ContinueOnError)
	path := fs.String("config", "", "YAML config file (default: embedded defaults)")
	check := fs.Bool("check-config", false, "validate the config and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, log, err := relay.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *check {
		fmt.Println("config ok")
		return 0
	}
	log.Debug("gomaxprocs", "n", relay.SetProcs(cfg))
	r, err := relay.New(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := r.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}
