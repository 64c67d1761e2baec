package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// CheckMachine: event loops bounded per CPU, max_connections against the open-file limit; each
// message names its key and both numbers.
func TestCheckMachine(t *testing.T) {
	f := func(mod func(*config.Config), m config.Machine, wantWarn, wantErr []string) {
		t.Helper()
		c := config.Default()
		mod(c)
		warnings, err := c.CheckMachine(m)
		var problems []string
		if err != nil {
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("CheckMachine(%+v) = %T %v, want a *ValidationError", m, err, err)
			}
			problems = ve.Problems
		}
		match := func(kind string, got, want []string) {
			t.Helper()
			if len(got) != len(want) {
				t.Fatalf("CheckMachine(%+v) %s = %q, want %d containing %q", m, kind, got, len(want), want)
			}
			for i, w := range want {
				for _, part := range strings.Split(w, "|") {
					if !strings.Contains(got[i], part) {
						t.Fatalf("CheckMachine(%+v) %s[%d] = %q, want it to contain %q", m, kind, i, got[i], part)
					}
				}
			}
		}
		match("warnings", warnings, wantWarn)
		match("problems", problems, wantErr)
	}
	two := config.Machine{CPUs: 2, OpenFiles: 20000}
	none := func(*config.Config) {}
	loops := func(n int) func(*config.Config) { return func(c *config.Config) { c.Devices.EventLoops = n } }
	conns := func(n int) func(*config.Config) { return func(c *config.Config) { c.Devices.MaxConnections = n } }

	f(none, two, nil, nil)
	f(loops(8), two, nil, nil)
	f(loops(9), two, nil, []string{"devices.event_loops: 9 is more than 4 per CPU|at most 8|2 CPUs"})
	f(loops(100000), two, nil, []string{"devices.event_loops: 100000 |at most 8 on this machine's 2 CPUs"})
	f(loops(100000), config.Machine{}, nil, nil) // unknown machine: nothing checked

	// Own files by default on 2 CPUs: 256 + 2 listeners × 2 loops × 2 = 264.
	if got := config.Default().OwnFiles(two); got != 264 {
		t.Fatalf("Default().OwnFiles(2 CPUs) = %d, want 264", got)
	}
	f(conns(20000-264), two, nil, nil)
	f(conns(20000-263), two, []string{"devices.max_connections: 19737 leaves 263 of the open-file limit 20000|need about 264|at most 19736"}, nil)
	f(conns(19999), two, []string{"devices.max_connections: 19999 leaves 1 of the open-file limit 20000"}, nil)
	f(conns(20000), two, nil, []string{"devices.max_connections: 20000 can never be reached|open-file limit (RLIMIT_NOFILE) is 20000|at most 19736"})
	f(conns(1<<20), config.Machine{CPUs: 2, OpenFiles: 1024}, nil, []string{"devices.max_connections: 1048576 can never be reached|is 1024|at most 760"})
	f(conns(1<<20), config.Machine{CPUs: 2}, nil, nil) // unlimited
	// Device links: 5 files per port of the range (listeners TCP and UDP, a TCP link's two
	// sockets, a UDP link's one), 1,000 ports by default: 264 + 5,000.
	links := func(c *config.Config) { c.DeviceLink.Listen = "10.0.0.1"; c.Devices.MaxConnections = 15000 }
	f(links, two, []string{"devices.max_connections: 15000 leaves 5000 of the open-file limit 20000|need about 5264|at most 14736"}, nil)
	// TCP links only: 3 files per port (the listener, a link's two sockets): 264 + 3,000.
	tcpLinks := func(c *config.Config) {
		links(c)
		c.DeviceLink.Protocols, c.Devices.MaxConnections = []string{config.LinkTCP}, 17000
	}
	f(tcpLinks, two, []string{"devices.max_connections: 17000 leaves 3000 of the open-file limit 20000|need about 3264|at most 16736"}, nil)
	// UDP links only: 2 (the port's socket, a link's device socket): 264 + 2,000.
	udpLinks := func(c *config.Config) {
		links(c)
		c.DeviceLink.Protocols, c.Devices.MaxConnections = []string{config.LinkUDP}, 18000
	}
	f(udpLinks, two, []string{"devices.max_connections: 18000 leaves 2000 of the open-file limit 20000|need about 2264|at most 17736"}, nil)
	// Connectors: each may hold 2 files per connection up to its max_connections and its
	// listener, counted with devices.max_connections and the relay's own files (264).
	connectors := func(devices int, maxConns ...int) func(*config.Config) {
		return func(c *config.Config) {
			c.Devices.MaxConnections = devices
			for i, n := range maxConns {
				cn := config.DefaultConnector()
				cn.Name, cn.Listen, cn.Upstream, cn.MaxConnections = fmt.Sprint("c", i), fmt.Sprint(":", 5100+i), "up:1", n
				c.Connectors = append(c.Connectors, cn)
			}
		}
	}
	if got := config.DefaultConnector().Files(); got != 2001 {
		t.Fatalf("DefaultConnector().Files() = %d, want 2001 (2 × 1000 connections + the listener)", got)
	}
	f(connectors(10000, 1000), two, nil, nil)      // 264 + 10,000 + 2,001
	f(connectors(17735, 1000), two, nil, nil)      // 264 + 17,735 + 2,001 = 20,000: fits exactly
	f(connectors(17736, 1000), two, nil, []string{ // one file too many
		"connectors[0].max_connections: 1000 does not fit in the open-file limit 20000|may hold 2001 files|devices.max_connections (17736)|about 264|20001 in all|connectors[0].max_connections to at most 999"})
	f(connectors(18000, 1000), two, nil, []string{"connectors[0].max_connections: 1000 does not fit|at most 867"})
	// Several: the first connector past the limit and every one after it are named, each with
	// what would fit where it stands (0 once the ones before it fill the limit).
	f(connectors(15000, 1000, 2000, 1), two, nil, []string{
		"connectors[1].max_connections: 2000 does not fit|connectors before it (2001)|21266 in all|at most 1367",
		"connectors[2].max_connections: 1 does not fit|may hold 3 files|connectors before it (6002)|at most 0",
	})
	f(connectors(15000, 1000, 2000, 1), config.Machine{CPUs: 2}, nil, nil) // unlimited
	// devices.max_connections 0 (no limit of its own) adds nothing.
	f(connectors(0, 9867), two, nil, nil) // 264 + 2 × 9,867 + 1 = 19,999
	f(connectors(0, 9868), two, nil, []string{"connectors[0].max_connections: 9868 does not fit|devices.max_connections (0)|20001 in all|at most 9867"})
	// A tiny limit that the relay's own files exceed: at most 0.
	f(conns(100), config.Machine{CPUs: 2, OpenFiles: 200}, []string{"devices.max_connections: 100 leaves 100 of the open-file limit 200|at most 0"}, nil)
	// Both at once, with routes counted: each enabled route adds concurrency + 1; the loops
	// count as at most 4 per CPU: 256 + 2 × 8 × 2 + 101 = 389.
	f(func(c *config.Config) {
		c.Devices.EventLoops = 64
		c.Devices.MaxConnections = 19700
		r := config.DefaultRoute()
		r.Name, r.URL, r.Concurrency = "r", "https://example.com/", 100
		off := r
		off.Name, off.Enabled = "off", new(bool)
		c.Routes = []config.Route{r, off}
	}, two, []string{"devices.max_connections: 19700 leaves 300 of the open-file limit 20000|need about 389"},
		[]string{"devices.event_loops: 64 is more than 4 per CPU"})
}
