package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Main is the bench command line. It returns the exit code: 1 if a scenario failed, lost
// acknowledged messages, or (crash) could not do every kill and restart.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("scenarios", "bench/scenarios", "scenario directory")
	results := fs.String("results", "bench/results", "results directory")
	run := fs.String("run", "", "comma-separated scenario names (default: all; see -quick)")
	quick := fs.Bool("quick", false, "only the quick scenarios")
	relayBin := fs.String("relay", "", "fleetrelay binary (default: go build ./cmd/fleetrelay)")
	loadgenBin := fs.String("loadgen", "", "loadgen binary serving the floors (default: go build ./cmd/loadgen)")
	count := fs.Int("count", 1, "runs of the relay and of each floor, alternating (relay, floors, relay, floors, …); tables show medians")
	noFloors := fs.Bool("no-floors", false, "run the relay only, without the scenarios' floors")
	tableOnly := fs.Bool("table", false, "only rewrite the results directory's README.md table from its JSON files")
	demo := fs.Bool("demo", false, "run the demo scenario (a small fleet, relay and sink) with a status line per second; nothing is written to the results")
	profile := fs.String("profile", "", "directory for CPU profiles of the relay and of loadgen+sink during each load, and the relay's heap after it")
	kills := fs.Int("kills", 0, "crash and failover scenarios: SIGKILLs of the relay (default: the scenario's crash.kills, 20, or failover.kills, 5)")
	backlog := fs.Int64("backlog", 0, "backlog scenarios: queued messages to build (default: the scenario's backlog.messages, 10,000,000)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	all, err := LoadDir(*dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *tableOnly {
		if err := writeTable(*results, all); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	if *demo {
		*run = "demo"
	}
	var pick []*Scenario
	want := map[string]bool{}
	for _, n := range strings.Split(*run, ",") {
		if n != "" {
			want[n] = true
		}
	}
	named := len(want) > 0
	for _, s := range all {
		if (!named && (!*quick || s.Quick)) || want[s.Name] {
			pick = append(pick, s)
			delete(want, s.Name)
		}
	}
	for n := range want {
		fmt.Fprintf(stderr, "bench: no scenario %q in %s\n", n, *dir)
		return 2
	}
	if *count < 1 {
		fmt.Fprintln(stderr, "bench: -count must be at least 1")
		return 2
	}
	tmp, err := os.MkdirTemp("", "fleetrelay-bench-bin")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin, lgBin := *relayBin, *loadgenBin
	for _, b := range []struct {
		path *string
		pkg  string
	}{{&bin, "./cmd/fleetrelay"}, {&lgBin, "./cmd/loadgen"}} {
		if *b.path != "" {
			continue
		}
		*b.path = filepath.Join(tmp, filepath.Base(b.pkg))
		if out, err := exec.Command("go", "build", "-o", *b.path, b.pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	if *noFloors {
		for _, s := range pick {
			s.Floors = nil
		}
	}
	code := 0
	var done []*Result
	opts := Options{RelayBin: bin, LoadgenBin: lgBin, Count: *count, ResultsDir: *results, Log: stderr, ProfileDir: *profile, Kills: *kills, Backlog: *backlog}
	if *demo {
		opts.Watch = stdout
		r, err := Run(ctx, pick[0], opts)
		if err != nil {
			fmt.Fprintf(stderr, "demo: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "\n%d devices, %d messages acknowledged, %d delivered to the sink: %s\n",
			r.Devices, r.MessagesAcked, r.Delivered, r.Account.String())
		fmt.Fprintf(stdout, "ACK latency p50/p99 %s / %s, end to end p50/p99 %s / %s, relay %s CPU per message\n",
			Millis(r.AckLatency.P50), Millis(r.AckLatency.P99), Millis(float64(r.EndToEnd.P50)/1000), Millis(float64(r.EndToEnd.P99)/1000), Micros(r.RelayCPUPerMsg))
		if r.Account.Lost > 0 {
			return 1
		}
		return 0
	}
	for _, s := range pick {
		r, err := Measure(ctx, s, opts)
		if err != nil {
			fmt.Fprintf(stderr, "bench %s: %v\n", s.Name, err)
			code = 1
			continue
		}
		if err := r.WriteFiles(*results); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if r.Account.Lost > 0 {
			fmt.Fprintf(stderr, "bench %s: %s\n", s.Name, r.Account.String())
			code = 1
		}
		if c := r.Crash; c != nil && !c.OK() {
			fmt.Fprintf(stderr, "bench %s: %d of %d kills done %s\n", s.Name, len(c.Restarts), c.Kills, c.Error)
			code = 1
		}
		if f := r.Failover; f != nil && !f.OK() {
			fmt.Fprintf(stderr, "bench %s: %d of %d kills done %s\n", s.Name, len(f.Runs), f.Kills, f.Error)
			code = 1
		}
		done = append(done, r)
	}
	WriteMarkdown(stdout, done)
	if err := writeTable(*results, all); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return code
}

// writeTable writes results/README.md: one row per scenario that has a result file.
func writeTable(dir string, all []*Scenario) error {
	var rs []*Result
	for _, s := range all {
		if r, err := ReadResult(filepath.Join(dir, s.Name+".json")); err == nil {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil
	}
	f, err := os.Create(filepath.Join(dir, "README.md"))
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "# Benchmark results\n\nWritten by `go run ./cmd/bench` (`make bench-e2e`); one JSON file and one HTML page per scenario beside this file.\n"+
		"The table leads with ratios: the relay's figure divided by its floor's, measured in the same invocation (ACK floor: CPU, ACK latency, memory; pipeline floor: delivery).\n"+
		"Machine: %d CPUs, %s, %s, open-file limit %d.\n\n",
		rs[0].Machine.CPUs, rs[0].Machine.Model, rs[0].Machine.Go, rs[0].Machine.FDLimit)
	WriteMarkdown(f, rs)
	return f.Close()
}
