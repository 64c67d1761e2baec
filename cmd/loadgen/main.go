// Command loadgen simulates device fleets against a relay (run) and receives what the relay
// delivers (sink), searches the rate a relay sustains (capacity), serves the floors bench reads
// the relay against (floor) and measures a device link as its client (link). Usage: loadgen
// run|sink|capacity|floor|link [flags]; loadgen <command> -h lists the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := loadgen.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
