package relay_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/fleetrelay/fleetrelay/"

// layers is the import direction of the design notes (internal/DESIGN.md), package by package:
// the module's packages each may import. A pattern ending in "/..." stands for the folder's
// packages. Every package must be listed, so a new one is placed deliberately.
var layers = []struct {
	pkg string
	may []string
}{
	// Leaves: pure codecs (native, ndjson, teltonika, the formats…), and the parts below the
	// actors that know nothing of each other.
	{"codec/...", []string{"codec/..."}},
	{"internal/throttle", nil},
	{"internal/netutil", nil}, // the glue between gnet and the socket packages
	{"internal/checkfor", nil},
	{"internal/proxytest", nil}, // tests only: the PROXY v2 header as an end server reads it
	{"internal/testcert", nil},  // tests only: a private CA and the certificates it signs
	{"internal/udpport", nil},
	{"internal/udpport/udpporttest", nil}, // tests only: another process's gnet UDP socket
	{"internal/store", nil},
	{"internal/deliver", nil},
	{"internal/auth", nil},
	{"internal/config", []string{"codec/..."}},
	// A device link's client-leg cipher (standard library only): the relay's links and the
	// load generator's link client share it.
	{"netio/link/linkcrypt", nil},
	// The control plane: who may do what (access), the resources (route specs are config's,
	// the one-node backend is the store).
	{"internal/access", []string{"internal/config"}},
	{"internal/registry", []string{"internal/config", "internal/store"}},
	// Cluster mode: what nodes share through NATS JetStream (the registry's log, a registry
	// backend; the devices' journal in the store's frame encoding; the tasks' bucket, a tasks
	// backend); in-process NATS servers (-nats-embedded, benchmarks) and the tests' clusters
	// over them.
	{"internal/cluster", []string{"internal/registry", "internal/store", "internal/tasks", "internal/throttle"}},
	{"internal/natsembed", nil},
	{"internal/natstest", []string{"internal/natsembed"}},
	// The bulk import's readers and its command's client (the relay's admin address and key).
	{"internal/deviceimport", []string{"internal/access", "internal/config"}},
	// Commands to devices: durable tasks in the store (the actors reach them through their
	// Commands interface, the API through its Tasks).
	{"internal/tasks", []string{"internal/store", "internal/throttle"}},
	// The sockets, then the actors over them.
	{"netio", []string{"codec/...", "internal/netutil", "internal/throttle", "internal/udpport"}},
	// Device links and the raw TCP connector: sockets paired on their own gnet engines.
	{"netio/link", []string{"internal/netutil", "internal/throttle", "internal/udpport"}},
	{"actors", []string{"codec/...", "netio", "internal/store", "internal/throttle"}},
	// What the actors call through their interfaces, and what builds it.
	{"internal/pipeline", []string{"actors", "codec/...", "internal/auth", "internal/deliver", "internal/throttle"}},
	{"internal/route", []string{"actors", "codec/...", "internal/auth", "internal/config", "internal/deliver", "internal/pipeline"}},
	// Live apply over the registry (control); the admin API's server, kit and endpoints over it
	// (api: the routes and devices handlers write through control) and its contract checker for
	// tests (api/apitest).
	{"internal/control", []string{"actors", "codec/format", "internal/config", "internal/registry", "internal/route"}},
	{"internal/api", []string{"internal/access", "internal/config", "internal/control", "internal/deviceimport", "internal/registry", "internal/tasks", "netio/link"}},
	{"internal/api/apitest", []string{"internal/api"}},
	{"internal/deadletter", []string{"internal/access", "internal/api", "internal/config", "internal/store"}},
	// The composition root imports every part, and only cmd (and the test harness) imports it.
	{"internal/relay", []string{"actors", "codec/...", "netio", "internal/access", "internal/api", "internal/auth", "internal/cluster", "internal/config",
		"internal/control", "internal/deadletter", "internal/deliver", "internal/pipeline", "internal/registry", "internal/route", "internal/store", "internal/tasks", "internal/throttle", "netio/link", "netio/link/linkcrypt"}},
	{"internal/relaytest", []string{"internal/relay", "internal/config", "internal/checkfor", "loadgen", "codec/..."}},
	// The tools beside the relay: they speak the device protocol and nothing else of it (the
	// floor claims its UDP port as the relay does).
	{"loadgen", []string{"codec/...", "internal/udpport", "netio/link/linkcrypt"}},
	// bench: the device-link scenario's encrypted clients; the cluster scenarios' NATS nodes
	// (natsembed) and the journal's partition of a device (cluster.Partition), which must be
	// the relay's.
	{"bench", []string{"loadgen", "codec/...", "netio/link/linkcrypt", "internal/natsembed", "internal/cluster"}},
	{"cmd/...", []string{"..."}},
}

func matches(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
	}
	return pkg == pattern
}

// The module's import graph follows the layers: no package imports a higher one, and each
// package is placed in the table.
func TestImportLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list found %d packages, want the module's", len(lines))
	}
	for _, line := range lines {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], module)
		if !ok {
			continue
		}
		rule := -1
		for i, l := range layers {
			if matches(l.pkg, pkg) {
				rule = i
				break
			}
		}
		if rule < 0 {
			t.Errorf("package %s has no place in the layers: add it to the table and to the design notes", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			allowed := false
			for _, p := range layers[rule].may {
				allowed = allowed || matches(p, dep)
			}
			if !allowed {
				t.Errorf("%s imports %s, which its layer does not allow", pkg, dep)
			}
		}
	}
}

// The matcher the layer check depends on.
func TestLayerPatterns(t *testing.T) {
	f := func(pattern, pkg string, want bool) {
		t.Helper()
		if got := matches(pattern, pkg); got != want {
			t.Errorf("matches(%q, %q) = %v, want %v", pattern, pkg, got, want)
		}
	}
	f("codec/...", "codec/native", true)
	f("codec/...", "codec", true)
	f("codec/...", "codecx/native", false)
	f("actors", "actors", true)
	f("actors", "actors/x", false)
	f("...", "internal/relay", true)
}
