package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Exit codes of fleetrelay store.
const (
	exitOK       = 0 // healthy (verify), nothing lost (salvage)
	exitDamage   = 1 // problems found (verify), something known lost (salvage: the new directory is usable)
	exitUsage    = 2
	exitCannotDo = 3 // could not check or salvage: the directory is in use, missing, ...
)

const storeUsage = `usage:
  fleetrelay store verify [-data-dir DIR | -config FILE] [-json]
  fleetrelay store salvage -from DIR -to NEW_DIR [-route NAME=ID]... [-json]`

// storeCmd runs fleetrelay store verify|salvage (see README, Store recovery).
func storeCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "salvage") {
		fmt.Fprintln(stderr, storeUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("fleetrelay store "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if args[0] == "verify" {
		dataDir := fs.String("data-dir", "", "the data directory (default: the config's data_dir)")
		path := fs.String("config", "", "YAML config file whose data_dir to check (default: embedded defaults)")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			fmt.Fprintln(stderr, storeUsage)
			return exitUsage
		}
		dir := *dataDir
		if dir == "" {
			cfg, _, err := relay.LoadConfig(*path)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return exitCannotDo
			}
			dir = cfg.DataDir
		}
		return verify(dir, *asJSON, stdout, stderr)
	}
	from := fs.String("from", "", "the damaged data directory (only read)")
	to := fs.String("to", "", "the new data directory (must not exist, or be empty)")
	names := routeFlag{}
	fs.Var(names, "route", "NAME=ID: a route name to write for a route ID whose name was lost (repeatable)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || *from == "" || *to == "" {
		fmt.Fprintln(stderr, storeUsage)
		return exitUsage
	}
	return salvage(store.SalvageOptions{From: *from, To: *to, RouteNames: names}, *asJSON, stdout, stderr)
}

func verify(dir string, asJSON bool, stdout, stderr io.Writer) int {
	rep, err := store.Verify(dir)
	if err != nil {
		fmt.Fprintf(stderr, "fleetrelay store verify: %v\n", err)
		if errors.Is(err, store.ErrInUse) {
			fmt.Fprintln(stderr, "stop the relay first: verify reads the files the relay writes")
		}
		return exitCannotDo
	}
	if asJSON {
		_ = json.NewEncoder(stdout).Encode(rep)
	} else {
		if len(rep.Problems) == 0 {
			fmt.Fprintf(stdout, "%s: no problems found\n", dir)
		} else {
			fmt.Fprintf(stdout, "%s: %d problems\n", dir, len(rep.Problems))
			for _, p := range rep.Problems {
				fmt.Fprintf(stdout, "  %s\n", p)
			}
		}
		fmt.Fprintf(stdout, "read: %d tables, %d value-log files, %d memtable logs; marker %s\n",
			rep.Tables, rep.ValueLogs, rep.MemtableLogs, map[bool]string{true: "present", false: "missing (written at the next start)"}[rep.Marker])
		fmt.Fprintf(stdout, "holds: %d keys: %d segments (%d records), %d dead letters, %d device checkpoints, routes %s\n",
			rep.Keys, rep.Segments, rep.Records, rep.DeadLetters, rep.Checkpoints, routeList(rep.Routes))
		if len(rep.Problems) > 0 {
			fmt.Fprintf(stdout, "the relay refuses to start on it; copy out what is readable: fleetrelay store salvage -from %s -to NEW_DIR\n", dir)
		}
	}
	if len(rep.Problems) > 0 {
		return exitDamage
	}
	return exitOK
}

func salvage(opts store.SalvageOptions, asJSON bool, stdout, stderr io.Writer) int {
	rep, err := store.Salvage(opts)
	if err != nil {
		fmt.Fprintf(stderr, "fleetrelay store salvage: %v\n", err)
		if errors.Is(err, store.ErrInUse) {
			fmt.Fprintln(stderr, "stop the relay first: salvage reads the files the relay writes")
		}
		return exitCannotDo
	}
	if asJSON {
		_ = json.NewEncoder(stdout).Encode(rep)
	} else {
		fmt.Fprintf(stdout, "salvaged %s into %s\n", rep.From, rep.To)
		if len(rep.Problems) > 0 {
			fmt.Fprintf(stdout, "damage found in %s:\n", rep.From)
			for _, p := range rep.Problems {
				fmt.Fprintf(stdout, "  %s\n", p)
			}
		}
		kinds := make([]string, 0, len(rep.Kept))
		for k, n := range rep.Kept {
			kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
		}
		sort.Strings(kinds)
		fmt.Fprintf(stdout, "kept: %s; %d records, %d devices\n", strings.Join(kinds, ", "), rep.Records, rep.Devices)
		pend := make([]string, 0, len(rep.Pending))
		for name, n := range rep.Pending {
			pend = append(pend, fmt.Sprintf("%s %d", name, n))
		}
		sort.Strings(pend)
		fmt.Fprintf(stdout, "pending per route: %s\n", strings.Join(pend, ", "))
		for _, n := range rep.NamedRoutes {
			fmt.Fprintf(stdout, "route name restored: %s\n", n)
		}
		if len(rep.Unreadable) > 0 {
			fmt.Fprintln(stdout, "unreadable (small values there — delivery bitmaps, device checkpoints, route names — are lost: delivered records may be delivered again):")
			for _, u := range rep.Unreadable {
				fmt.Fprintf(stdout, "  %s\n", u)
			}
		}
		if len(rep.Uncertain) > 0 {
			fmt.Fprintf(stdout, "copied from an unreadable place's key range (a newer state or a deletion may have been lost: may be delivered again): %d keys\n", len(rep.Uncertain))
		}
		if len(rep.Lost) > 0 {
			fmt.Fprintf(stdout, "lost: %d\n", len(rep.Lost))
			for _, l := range rep.Lost {
				fmt.Fprintf(stdout, "  %s\n", l)
			}
		} else {
			fmt.Fprintln(stdout, "lost: nothing known")
		}
		ids := make([]int, 0, len(rep.UnnamedRoutes))
		for id := range rep.UnnamedRoutes {
			ids = append(ids, int(id))
		}
		sort.Ints(ids)
		for _, id := range ids {
			fmt.Fprintf(stdout, "route ID %d has no name (%d records): run salvage again with -route NAME=%d, or they are not delivered\n",
				id, rep.UnnamedRoutes[uint16(id)], id)
		}
		fmt.Fprintf(stdout, "start the relay with data_dir: %s\n", rep.To)
	}
	if len(rep.Lost) > 0 || len(rep.UnnamedRoutes) > 0 {
		return exitDamage
	}
	return exitOK
}

func routeList(routes map[string]uint16) string {
	if len(routes) == 0 {
		return "none"
	}
	names := make([]string, 0, len(routes))
	for name, id := range routes {
		names = append(names, fmt.Sprintf("%s=%d", name, id))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// routeFlag collects -route NAME=ID.
type routeFlag map[string]uint16

func (r routeFlag) String() string { return "" }

func (r routeFlag) Set(s string) error {
	name, idStr, ok := strings.Cut(s, "=")
	id, err := strconv.ParseUint(idStr, 10, 16)
	if !ok || name == "" || err != nil || id == 0 {
		return fmt.Errorf("want NAME=ID with ID 1-65535, got %q", s)
	}
	r[name] = uint16(id)
	return nil
}
