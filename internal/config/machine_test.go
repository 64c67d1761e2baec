package config_test

import (
	"errors"
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
