package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fleetrelay/fleetrelay/internal/deviceimport"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// devicesCmd runs `fleetrelay devices import FILE`: it prints every rejected row as a JSON
// line on stdout and the counts on stderr, and exits 0 when every row was written, 3 when the
// import ran but rejected rows, 1 when it did not run, 2 for a usage error.
func devicesCmd(args []string, stdout, stderr io.Writer) int {
	usage := "usage: fleetrelay devices import FILE [-format csv|ndjson|azure] [-key-field custom1] [-config FILE] [-key KEY]"
	if len(args) == 0 || args[0] != "import" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("fleetrelay devices import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML config file (default: embedded defaults): the relay's admin listener")
	format := fs.String("format", "", "csv, ndjson or azure (an Azure IoT Hub device-identity export) (default: csv for a .csv file, else ndjson)")
	keyField := fs.String("key-field", "custom1", "azure: the device field the primary key goes to (custom1, custom2 or custom3)")
	key := fs.String("key", os.Getenv("FLEETRELAY_KEY"), "API key of the running relay, holding devices:create and devices:update (default: $FLEETRELAY_KEY)")
	rest := args[1:]
	var file string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") { // FILE first, flags after it
		file, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		file = ""
	}
	if file == "" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	o := deviceimport.Options{Format: deviceimport.Format(*format)}
	if o.Format == "" {
		o.Format = deviceimport.FormatOf(file)
	}
	if o.Format == deviceimport.Azure {
		o.KeyField = *keyField
	}
	if err := o.Check(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	cfg, _, err := relay.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := deviceimport.Send(ctx, cfg, *key, file, o)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	for _, r := range res.Rejected {
		_ = enc.Encode(r)
	}
	fmt.Fprintf(stderr, "%s: %d devices written, %d rows rejected\n", file, res.Upserted, len(res.Rejected))
	if len(res.Rejected) > 0 {
		return 3
	}
	return 0
}
