// Command bench runs benchmark scenarios end to end (relay process + sink + simulated fleet) and
// writes bench/results/*.json, an HTML chart per scenario and a Markdown table.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetrelay/fleetrelay/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
