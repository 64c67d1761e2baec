package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"go.yaml.in/yaml/v3"
)

func TestLoadSpine(t *testing.T) {
	c, err := config.Load(filepath.Join("testdata", "spine.yaml"))
	if err != nil {
		t.Fatalf("Load(spine.yaml) = %v", err)
	}
	want := config.Default()
	want.Delivery.AllowPrivateNetworks = true
	r := config.DefaultRoute()
	r.Name = "demo"
	r.URL = "http://127.0.0.1:9000/ingest/[SERIAL]"
	want.Routes = []config.Route{r}
	want.Resolve()
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Load(spine.yaml) =\n%+v\nwant\n%+v", c, want)
	}
	got := c.Routes[0]
	if !got.IsEnabled() || got.Method != "POST" || got.Batch.MaxBytes != 1<<20 ||
		got.Batch.MaxMessages != 500 || time.Duration(got.Batch.Linger) != 50*time.Millisecond ||
		time.Duration(got.Timeout) != 10*time.Second || got.Retry == nil ||
		time.Duration(got.Retry.InitialBackoff) != 200*time.Millisecond {
		t.Fatalf("route demo = %+v (retry %+v)", got, got.Retry)
	}
}

func TestDefault(t *testing.T) {
	if err := config.Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	for _, in := range []string{"", "# nothing but a comment\n", "---\n", "devices:\nlog:\n"} {
		c, err := config.Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%q) = %v", in, err)
		}
		if !reflect.DeepEqual(c, config.Default()) {
			t.Fatalf("Parse(%q) = %+v, want the defaults", in, c)
		}
	}
	d := config.Default()
	if d.DataDir != "./data" || d.Devices.Native.TCP != "127.0.0.1:5000" || d.Devices.Native.UDP != "127.0.0.1:5000" ||
		d.Admin.Listen != "127.0.0.1:8080" || d.Devices.Ack != config.AckPersist || d.Devices.MaxFrame != 65536 ||
		len(d.Routes) != 0 || d.Delivery.AllowPrivateNetworks || d.Store.Sync ||
		d.Devices.NDJSON != (config.NDJSON{TCP: "", IdentityField: "serial", MaxLine: 64 * config.KiB, MaxInflight: 16 * config.MiB}) {
		t.Fatalf("Default() = %+v", d)
	}
}

func TestExample(t *testing.T) {
	c, err := config.Parse([]byte(config.ExampleYAML))
	if err != nil {
		t.Fatalf("Parse(ExampleYAML) = %v", err)
	}
	if !reflect.DeepEqual(c, config.Example()) {
		t.Fatalf("Example() differs from Parse(ExampleYAML)")
	}
	// Outside routes, fleet and connectors (examples, none by default), ExampleYAML shows the
	// defaults.
	c.Routes, c.Fleet, c.Connectors = nil, nil, nil
	if !reflect.DeepEqual(c, config.Default()) {
		t.Fatalf("ExampleYAML outside routes and fleet =\n%+v\nwant the defaults\n%+v", c, config.Default())
	}

	// ExampleYAML names every key the types define.
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(config.ExampleYAML), &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	nodePaths(doc.Content[0], "", have)
	want := map[string]bool{}
	typePaths(reflect.TypeFor[config.Config](), "", want)
	var missing []string
	for p := range want {
		if !have[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("ExampleYAML does not show %s", strings.Join(missing, ", "))
	}
}

// nodePaths collects the dotted paths of a YAML tree, writing every list index as [].
func nodePaths(n *yaml.Node, path string, out map[string]bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := joinPath(path, n.Content[i].Value)
			out[p] = true
			nodePaths(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			nodePaths(item, path+"[]", out)
		}
	}
}

// typePaths collects the dotted paths of every key of a config type, writing every list index as [].
func typePaths(t reflect.Type, path string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			p := joinPath(path, name)
			out[p] = true
			typePaths(f.Type, p, out)
		}
	case reflect.Slice:
		typePaths(t.Elem(), path+"[]", out)
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, c := range []*config.Config{config.Default(), config.Example()} {
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal = %v", err)
		}
		back, err := config.Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)) = %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("Parse(Marshal(c)) =\n%+v\nwant\n%+v\nYAML:\n%s", back, c, out)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want os.ErrNotExist", err)
	}

	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("devices:\n  ack: sometimes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = config.Load(path)
	var ve *config.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), path) ||
		!slices.Equal(ve.Problems, []string{`devices.ack: must be one of persist, delivery, got "sometimes" (line 2)`}) {
		t.Fatalf("Load(bad.yaml) = %v, want a ValidationError naming the file and devices.ack", err)
	}
}

// TestParse checks every decoding and validation rule: f parses in and expects an error containing each
// of wantErrs, or success when there are none.
func TestParse(t *testing.T) {
	f := func(in string, wantErrs ...string) {
		t.Helper()
		c, err := config.Parse([]byte(in))
		if len(wantErrs) == 0 {
			if err != nil {
				t.Fatalf("Parse(%q) = %v, want success", in, err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse(%q).Validate() = %v, want nil", in, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("Parse(%q) = success, want errors %q", in, wantErrs)
		}
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("Parse(%q) = %T %v, want a *ValidationError", in, err, err)
		}
		// Every wanted text is in some problem, and every problem holds some wanted text.
		for _, want := range wantErrs {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Parse(%q) = %v\nwant it to contain %q", in, err, want)
			}
		}
		for _, p := range ve.Problems {
			if !slices.ContainsFunc(wantErrs, func(w string) bool { return strings.Contains(p, w) }) {
				t.Fatalf("Parse(%q) reports an unexpected problem %q; want only %q", in, p, wantErrs)
			}
		}
	}
	route := func(extra string) string {
		return "routes:\n  - name: r\n    url: https://example.com/in\n" + extra
	}

	// Unknown keys, with path, line and a suggestion.
	f("dta_dir: x\n", "dta_dir: unknown key; did you mean data_dir? (line 1)")
	f("bogus: 1\n", "bogus: unknown key; known keys: admin, cluster, commands, connectors, data_dir, delivery, devicelink, devices, fleet, gc_percent, log, memory_limit, routes, store (line 1)")
	f("devices:\n  native:\n    tcp: :1\n    sctp: :2\n", "devices.native.sctp: unknown key", "(line 4)")
	f(route("    batch:\n      max_message: 10\n"), "routes[0].batch.max_message: unknown key; did you mean max_messages? (line 5)")
	f(route("    retry:\n      backoff: 1s\n"), "routes[0].retry.backoff: unknown key")
	f(route("    format: json\n"), "routes[0].format: must be one of envelope, raw, sensoro, bewhere, bewhere-full, measurement, template, notification, got \"json\"")

	// Notification routes: format notification (set for envelope, the default), no filter; the
	// format is theirs alone.
	f(route("    notifications: true\n    account: acme\n"))
	f(route("    notifications: true\n    format: notification\n"))
	f(route("    notifications: true\n    format: raw\n"), `routes[0].format: a notification route's format is notification, got "raw"`)
	f(route("    notifications: true\n    filter:\n      tags: [a]\n"), "routes[0].filter: a notification route takes no device data")
	f(route("    format: notification\n"), "routes[0].format: notification is the format of a notification route (notifications: true)")
	f("routes:\n  - name: r\n    url: https://example.com/in/[SERIAL]\n    notifications: true\n    headers:\n      X-A: 'k [CUSTOM1]'\n",
		"routes[0].url: a notification route's messages are no device's: no dynamic fields",
		"routes[0].headers.X-A: a notification route's messages are no device's: no dynamic fields")
	if c, err := config.Parse([]byte(route("    notifications: true\n"))); err != nil || c.Routes[0].Format != format.NameNotification {
		t.Errorf("a notification route's format = %v, %v; want notification", c, err)
	}
	f("data_dir: a\ndata_dir: b\n", "data_dir: duplicate key (first at line 1) (line 2)")

	// Values of the wrong kind.
	f("data_dir: [a]\n", `data_dir: expected a string, got a list`)
	f("devices: 5\n", `devices: expected a mapping, got "5"`)
	f("routes: {}\n", "routes: expected a list, got a mapping")
	f("routes:\n  -\n", "routes[0]: expected a mapping, got an empty value (line 2)")
	f("store:\n  sync: yes\n", `store.sync: expected true or false, got "yes" (line 2)`)
	f("devices:\n  max_connections: many\n", `devices.max_connections: expected an integer, got "many"`)
	f("devices:\n  max_connections: 1.5\n", `devices.max_connections: expected an integer, got "1.5"`)
	f(route("    headers:\n      X-A: {b: c}\n"), "routes[0].headers.X-A: expected a string, got a mapping")
	f("1\n", `expected a mapping, got "1"`)
	f("a: [\n", "did not find expected node content")
	f("a: 1\n---\nb: 2\n", "the file must hold a single YAML document")

	// Sizes.
	f("devices:\n  max_frame: 1048576\n")
	f("devices:\n  max_frame: 512KiB\n")
	f("devices:\n  max_frame: 64KB\n")
	f("devices:\n  max_frame: 100 B\n")
	f("devices:\n  max_frame: 12XB\n", `devices.max_frame: invalid size "12XB": unknown unit "XB"`, "(line 2)")
	f("devices:\n  max_frame: 1.5MiB\n", `devices.max_frame: invalid size "1.5MiB"`)
	f("devices:\n  max_frame: -1\n", `devices.max_frame: invalid size "-1"`)
	f("devices:\n  max_frame: mib\n", `devices.max_frame: invalid size "mib"`)
	f("devices:\n  max_frame: {a: 1}\n", "devices.max_frame: invalid size: want a value such as 1MiB, got a mapping")
	f("devices:\n  max_frame: 99999999999GiB\n", `invalid size "99999999999GiB": out of range`)
	f("devices:\n  max_frame: 8\n", "devices.max_frame: must be between 16B and 1MiB, got 8B (line 2)")
	f("devices:\n  max_frame: 2MiB\n", "devices.max_frame: must be between 16B and 1MiB, got 2MiB")
	f("memory_limit: 1MiB\n", "memory_limit: must be 0 (no limit) or at least 32MiB, got 1MiB (line 1)")
	f("gc_percent: 0\n", "gc_percent: must be -1 (collect only near memory_limit) or > 0, got 0 (line 1)")
	f("gc_percent: -1\nmemory_limit: 0\n", "gc_percent: -1 needs a memory_limit")
	f("devices:\n  max_frame: 16\n")
	f("devices:\n  max_frame: 1MiB\n")

	// Free space.
	f("store:\n  min_free: 512MiB\n")
	f("store:\n  min_free: 2.5%\n")
	f("store:\n  min_free: 0\n")
	f("store:\n  min_free: 99%\n")
	f("store:\n  min_free: 100%\n", "store.min_free: a percentage must be below 100%, got 100% (line 2)")
	f("store:\n  min_free: -5%\n", `store.min_free: invalid percentage "-5%"`)
	f("store:\n  min_free: five%\n", `store.min_free: invalid percentage "five%"`)
	f("store:\n  min_free: 5 percent\n", `store.min_free: invalid size "5 percent": unknown unit "percent" (use B, KB, MB, GB, KiB, MiB or GiB), or a percentage such as 5%`)
	f("store:\n  min_free: [5%]\n", "store.min_free: invalid free space: want a size such as 512MiB or a percentage such as 5%, got a list")

	// Durations.
	f("devices:\n  idle_timeout: 0\n")
	f("store:\n  gc_interval: 168h\n")
	f("devices:\n  hello_timeout: 10\n", `devices.hello_timeout: invalid duration "10": want a number with a unit`)
	f("devices:\n  hello_timeout: 10 seconds\n", `devices.hello_timeout: invalid duration "10 seconds"`)
	f("devices:\n  hello_timeout: [1s]\n", "devices.hello_timeout: invalid duration: want a value such as 10s, got a list")
	f("devices:\n  hello_timeout: 0\n", "devices.hello_timeout: must be > 0, got 0s")
	f("devices:\n  idle_timeout: -1s\n", "devices.idle_timeout: must not be negative, got -1s")
	f("store:\n  gc_interval: -1m\n", "store.gc_interval: must not be negative, got -1m")
	f("delivery:\n  timeout: 0\n", "delivery.timeout: must be > 0, got 0s")
	f("delivery:\n  shutdown_grace: -1s\n", "delivery.shutdown_grace: must not be negative")
	f("delivery:\n  retry:\n    initial_backoff: 0\n", "delivery.retry.initial_backoff: must be > 0")
	f("delivery:\n  retry:\n    initial_backoff: 1m\n    max_backoff: 1s\n", "delivery.retry.max_backoff: must be at least initial_backoff (1m), got 1s")

	// Top-level and device rules.
	f(`data_dir: ""`+"\n", "data_dir: required")
	f("log:\n  level: trace\n", `log.level: must be one of debug, info, warn, error, got "trace"`)
	f("log:\n  format: xml\n", `log.format: must be one of text, json, got "xml"`)
	f("log:\n  level: debug\n  format: json\n")
	f("devices:\n  ack: delivery\n")
	// Cluster mode.
	f("cluster:\n  nats:\n    url: nats://127.0.0.1:4222, tls://n2.example:4222\n    replicas: 1\n    prefix: site_a-1\n")
	f("cluster:\n  nats:\n    url: 127.0.0.1:4222\n", `cluster.nats.url: "127.0.0.1:4222": want scheme://host:port, scheme nats, tls, ws or wss`)
	f("cluster:\n  nats:\n    url: http://h:4222\n", `cluster.nats.url: "http://h:4222": want scheme://host:port`)
	f("cluster:\n  nats:\n    replicas: 0\n", "cluster.nats.replicas: must be between 1 and 5, got 0")
	f("cluster:\n  nats:\n    replicas: 7\n", "cluster.nats.replicas: must be between 1 and 5, got 7")
	f("cluster:\n  nats:\n    prefix: a.b\n", `cluster.nats.prefix: must be 1 to 64 letters, digits, - or _, got "a.b"`)
	f("cluster:\n  nats:\n    prefix: \"\"\n", `cluster.nats.prefix: must be 1 to 64 letters`)
	f("cluster:\n  nats:\n    tls:\n      cert_file: c.pem\n", "cluster.nats.tls: cert_file and key_file go together")
	f("cluster:\n  nats:\n    partitions: 0\n", "cluster.nats.partitions: must be between 1 and 1024, got 0")
	f("cluster:\n  nats:\n    partitions: 2000\n", "cluster.nats.partitions: must be between 1 and 1024, got 2000")
	f("cluster:\n  nats:\n    lease: 100ms\n", "cluster.nats.lease: must be between 1s and 1m, got 100ms")
	f("cluster:\n  nats:\n    node: a b\n", `cluster.nats.node: must be 1 to 64 letters, digits, - or _, got "a b"`)
	f("devices:\n  ack: delivery\ncluster:\n  nats:\n    url: nats://127.0.0.1:4222\n", "devices.ack: delivery is not supported in cluster mode yet")
	f("cluster:\n  nats:\n    tls:\n      cert_file: c.pem\n      key_file: k.pem\n")
	f("devices:\n  ack: always\n", `devices.ack: must be one of persist, delivery, got "always" (line 2)`)
	f("devices:\n  auth: token\nfleet:\n  - id: SN1\n    token: t0k\n  - id: SN2\n    token: {env: SN2_TOKEN}\n")
	f("devices:\n  auth: tokens\n", `devices.auth: must be one of open, known, token, got "tokens" (line 2)`)
	f("fleet:\n  - id: SN1\n    token: "+strings.Repeat("x", 256)+"\n", "fleet[0].token: longer than 255 bytes")
	f("fleet:\n  - id: SN1\n    token: \"\"\n", "fleet[0].token: invalid secret: empty")
	f("devices:\n  max_connections: 0\n", "devices.max_connections: must be > 0, got 0")
	f("devices:\n  event_loops: -1\n", "devices.event_loops: must not be negative")
	f("devices:\n  event_loops: 4\n")
	f("devices:\n  max_connections_per_source: -1\n", "devices.max_connections_per_source: must not be negative")
	f("devices:\n  max_connections_per_source: 0\n  first_data_timeout: 0\n  max_unknown_identities: 0\n")
	f("devices:\n  first_data_timeout: -1s\n", "devices.first_data_timeout: must not be negative")
	f("devices:\n  max_unknown_identities: -5\n", "devices.max_unknown_identities: must not be negative")
	f("devices:\n  secret_fields: [custom1, custom3]\n")
	f("devices:\n  secret_fields: []\n")
	f("devices:\n  secret_fields: [custom1, token, Custom2, custom1]\n",
		`devices.secret_fields[1]: must be custom1, custom2 or custom3, got "token"`,
		`devices.secret_fields[2]: must be custom1, custom2 or custom3, got "Custom2"`,
		"devices.secret_fields[3]: custom1 is listed twice")
	f("devices:\n  secret_fields: custom1\n", "devices.secret_fields")

	// Listen addresses.
	f("devices:\n  native:\n    tcp: \"\"\n    udp: \"\"\nadmin:\n  listen: \"\"\n")
	f("devices:\n  native:\n    tcp: :5000\n    udp: '[::1]:5000'\n")
	f("admin:\n  listen: 127.0.0.1:0\n")
	f("devices:\n  native:\n    tcp: 5000\n", `devices.native.tcp: "5000" is not host:port (missing port in address)`)
	f("devices:\n  native:\n    udp: localhost:http\n", `devices.native.udp: "localhost:http" has an invalid port "http"`)
	f("admin:\n  listen: 127.0.0.1:70000\n", `admin.listen: "127.0.0.1:70000" has an invalid port "70000"`)
	f("admin:\n  listen: 127.0.0.1:5000\n", "admin.listen: uses the same TCP address as devices.native.tcp (127.0.0.1:5000)")
	f("admin:\n  listen: :5000\n", "admin.listen: uses the same TCP address as devices.native.tcp")
	f("admin:\n  listen: 127.0.0.2:5000\n")
	f("admin:\n  hosts: [relay.example.com, 10.0.0.5, \"::1\", \"[fe80::1]\"]\n  bootstrap_key: {env: FLEETRELAY_KEY}\n  open_metrics: true\n")
	f("admin:\n  hosts: [\"relay.example.com:8080\", \"\"]\n", `admin.hosts[0]: want a host name or an address without a port, got "relay.example.com:8080"`,
		`admin.hosts[1]: want a host name or an address without a port, got ""`)
	f("admin:\n  bootstrap_key: \"\"\n", "invalid secret: empty")
	f("admin:\n  bogus: 1\n", "admin.bogus: unknown key; known keys: bootstrap_key, hosts, listen, open_metrics")

	// Commands: retention and ttls positive, the default ttl within the longest.
	f("commands:\n  retention: 1h\n  default_ttl: 10m\n  max_ttl: 10m\n")
	f("commands:\n  retain: 1h\n", "commands.retain: unknown key; known keys: default_ttl, max_ttl, retention")
	f("commands:\n  retention: 0\n  max_ttl: -1h\n", "commands.retention: must be > 0, got 0", "commands.max_ttl: must be > 0, got -1h")
	f("commands:\n  default_ttl: 0\n", "commands.default_ttl: must be > 0, got 0")
	f("commands:\n  default_ttl: 48h\n  max_ttl: 24h\n", "commands.default_ttl: must be at most commands.max_ttl (24h), got 48h")

	// Teltonika listeners.
	f("devices:\n  teltonika:\n    tcp: 127.0.0.1:5027\n    udp: 127.0.0.1:5027\n")
	f("devices:\n  teltonika:\n    tcp: :5000\n", "devices.teltonika.tcp: uses the same TCP address as devices.native.tcp (127.0.0.1:5000) (line 3)")
	f("devices:\n  teltonika:\n    udp: :5000\n", "devices.teltonika.udp: uses the same UDP address as devices.native.udp (127.0.0.1:5000) (line 3)")
	f("devices:\n  teltonika:\n    tcp: 5027\n", `devices.teltonika.tcp: "5027" is not host:port`)
	f("devices:\n  teltonika:\n    sctp: :1\n", "devices.teltonika.sctp: unknown key")
	f("devices:\n  ndjson:\n    tcp: :5100\n  teltonika:\n    tcp: 127.0.0.1:5100\n", "devices.teltonika.tcp: uses the same TCP address as devices.ndjson.tcp (:5100)")
	// NDJSON ingest.
	f("devices:\n  ndjson:\n    tcp: 127.0.0.1:5100\n    identity_field: imei\n    max_line: 1MiB\n")
	f("devices:\n  ndjson:\n    tcp: :5100\n    max_line: 16\n")
	f("routes:\n  - name: a\n    url: https://x.example/\n    format: sensoro\n    app_id: '123456'\n    device_type: node\n    body: object\n")
	f("routes:\n  - name: a\n    url: https://x.example/\n    format: template\n    template: '{\"sensorData\": {\"speed\": \"$$speed\", \"t\": \"$$timestamp_seconds\"}}'\n")
	f("devices:\n  ndjson:\n    tcp: 127.0.0.1:0\n")
	f("devices:\n  ndjson:\n    identity_field: \"device id\"\n")
	f("devices:\n  ndjson:\n    tcp: 5100\n", `devices.ndjson.tcp: "5100" is not host:port`)
	f("devices:\n  ndjson:\n    tcp: 127.0.0.1:5000\n", "devices.ndjson.tcp: uses the same TCP address as devices.native.tcp (127.0.0.1:5000) (line 3)")
	f("devices:\n  ndjson:\n    tcp: :5000\n", "devices.ndjson.tcp: uses the same TCP address as devices.native.tcp")
	f("devices:\n  ndjson:\n    tcp: 127.0.0.1:5000\n  native:\n    tcp: \"\"\n")
	tls := "devices:\n  native:\n    tls:\n"
	f(tls + "      listen: :5443\n      cert: relay.pem\n      key: relay-key.pem\n      client_ca: devices-ca.pem\n      min_version: \"1.3\"\n")
	f(tls + "      cert: relay.pem\n") // disabled: nothing more is needed
	f(tls+"      listen: :5443\n", "devices.native.tls.cert: required with devices.native.tls.listen", "devices.native.tls.key: required")
	f(tls+"      listen: :5000\n      cert: c\n      key: k\n", "devices.native.tls.listen: uses the same TCP address as devices.native.tcp (127.0.0.1:5000)")
	f(tls+"      listen: 127.0.0.1:8080\n      cert: c\n      key: k\n", "admin.listen: uses the same TCP address as devices.native.tls.listen (127.0.0.1:8080)")
	f(tls+"      listen: :5443\n      cert: c\n      key: k\n  ndjson:\n    tcp: :5443\n", "devices.ndjson.tcp: uses the same TCP address as devices.native.tls.listen (:5443)")
	f(tls+"      min_version: \"1.1\"\n", `devices.native.tls.min_version: must be 1.2 or 1.3, got "1.1"`)
	f(tls+"      listen: 5443\n      cert: c\n      key: k\n", `devices.native.tls.listen: "5443" is not host:port`)
	f("devices:\n  ndjson:\n    tcp: 127.0.0.1:8080\n", "admin.listen: uses the same TCP address as devices.ndjson.tcp (127.0.0.1:8080)")
	// devices.teltonika.tls: devices.native.tls's settings and checks, under its own path.
	ttls := "devices:\n  teltonika:\n    tls:\n"
	f(ttls + "      listen: :5027\n      cert: relay.pem\n      key: relay-key.pem\n      client_ca: trackers-ca.pem\n      min_version: \"1.3\"\n")
	f(ttls+"      listen: :5027\n", "devices.teltonika.tls.cert: required with devices.teltonika.tls.listen", "devices.teltonika.tls.key: required")
	f(ttls+"      min_version: \"1.0\"\n", `devices.teltonika.tls.min_version: must be 1.2 or 1.3, got "1.0"`)
	f(ttls+"      listen: :5000\n      cert: c\n      key: k\n", "devices.teltonika.tls.listen: uses the same TCP address as devices.native.tcp (127.0.0.1:5000)")
	f("devices:\n  teltonika:\n    tcp: :5027\n    tls:\n      listen: 127.0.0.1:5027\n      cert: c\n      key: k\n",
		"devices.teltonika.tls.listen: uses the same TCP address as devices.teltonika.tcp (:5027)")
	f("devices:\n  native:\n    tls:\n      listen: :5443\n      cert: c\n      key: k\n  teltonika:\n    tls:\n      listen: :5443\n      cert: c\n      key: k\n",
		"devices.teltonika.tls.listen: uses the same TCP address as devices.native.tls.listen (:5443)")
	f(ttls+"      listen: 127.0.0.1:8080\n      cert: c\n      key: k\n", "admin.listen: uses the same TCP address as devices.teltonika.tls.listen (127.0.0.1:8080)")
	f(ttls+"      listen: :5027\n      cert: c\n      key: k\nconnectors:\n  - name: c\n    listen: :5027\n    upstream: b:1\n",
		"connectors[0].listen: uses the same TCP address as devices.teltonika.tls.listen (:5027)")
	f("devices:\n  ndjson:\n    identity_field: \"\"\n", "devices.ndjson.identity_field: required (line 3)")
	f("devices:\n  ndjson:\n    identity_field: "+strings.Repeat("f", 256)+"\n", "devices.ndjson.identity_field: longer than 255 bytes")
	f("devices:\n  ndjson:\n    max_line: 8\n", "devices.ndjson.max_line: must be between 16B and 1MiB, got 8B (line 3)")
	f("devices:\n  ndjson:\n    max_line: 2MiB\n", "devices.ndjson.max_line: must be between 16B and 1MiB, got 2MiB")
	f("devices:\n  ndjson:\n    max_inflight: 1KiB\n", "devices.ndjson.max_inflight: must be at least devices.ndjson.max_line (64KiB), got 1KiB")
	f("routes:\n  - name: a\n    url: https://x.example/\n    success_codes: [200, 302]\n", "routes[0].success_codes[1]: 302 is a redirect: redirects are not followed, so it cannot mean delivered")
	f("routes:\n  - name: a\n    url: https://x.example/\n    success_codes: [99]\n", "routes[0].success_codes[0]: must be an HTTP status from 200 to 599, got 99")
	f("routes:\n  - name: a\n    url: https://x.example/\n    success_codes: [200, 200]\n", "routes[0].success_codes[1]: 200 listed twice")
	f("routes:\n  - name: a\n    url: https://x.example/\n    compression: br\n", "routes[0].compression: must be none, gzip or zstd, got \"br\"")
	f("routes:\n  - name: a\n    url: https://x.example/\n    body: list\n", "routes[0].body: must be array or object, got \"list\"")
	f("routes:\n  - name: a\n    url: https://x.example/\n    filter:\n      imeis: ['123']\n", "routes[0].filter.imeis[0]: \"123\" is not an IMEI (15 digits)")
	f("fleet:\n  - id: A\n  - id: A\n", "fleet[1].id: duplicate device \"A\" (first listed as fleet[0])")
	f("fleet:\n  - imei: '356938035643809'\n", "fleet[0].id: required")
	f("fleet:\n  - id: A\n    imei: '35693803564380X'\n", "fleet[0].imei: \"35693803564380X\" is not an IMEI (15 digits)")
	f("fleet:\n  - id: A\n    custom1: \"a\\nb\"\n", "fleet[0].custom1: must not contain line breaks or NUL")
	f("fleet:\n  - id: A\n    colour: red\n", "fleet[0].colour: unknown key")
	f("routes:\n  - name: a\n    url: https://x.example/\n    format: template\n    template: '{\"a\": \"$$nosuch\"}'\n", "routes[0].template:", "nosuch")
	f("routes:\n  - name: a\n    url: https://x.example/\n    format: template\n    template: '{\"a\": '\n", "routes[0].template:")
	f("routes:\n  - name: a\n    url: https://x.example/\n    format: sensoro\n", "routes[0].format:")
	f("routes:\n  - name: a\n    url: https://x.example/\n    template: '{}'\n", "routes[0].format:")
	f("devices:\n  ndjson:\n    udp: :5100\n", "devices.ndjson.udp: unknown key")

	// Device links.
	f("devicelink:\n  listen: 10.0.0.1\n  ports: 40000-40009\n  device_port: 7000\n  timeout: 30s\n  buffer: 1MiB\n")
	f("devicelink:\n  listen: '::1'\n  ports: '40000'\n")
	f("devicelink:\n  listen: '[::1]'\n")
	f("devicelink:\n  listen: 10.0.0.1:40000\n", `devicelink.listen: want an IP address without a port (such as 10.0.0.1 or ::1), got "10.0.0.1:40000" (line 2)`)
	f("devicelink:\n  listen: relay.example.com\n", `devicelink.listen: want an IP address without a port`)
	f("devicelink:\n  ports: 40999-40000\n", "devicelink.ports: the first port 40999 is above the last 40000 (line 2)")
	f("devicelink:\n  ports: 0-10\n", `devicelink.ports: want a port range such as 40000-40999 (ports 1 to 65535), got "0-10"`)
	f("devicelink:\n  ports: 40000-70000\n", `devicelink.ports: want a port range such as 40000-40999 (ports 1 to 65535), got "40000-70000"`)
	f("devicelink:\n  ports: a-b\n", `devicelink.ports: want a port range`)
	f("devicelink:\n  device_port: 65536\n", "devicelink.device_port: must be 0 (none) or a port from 1 to 65535, got 65536")
	f("devicelink:\n  device_port: -1\n", "devicelink.device_port: must be 0 (none) or a port from 1 to 65535, got -1")
	f("devicelink:\n  timeout: -1s\n", "devicelink.timeout: must not be negative, got -1s")
	f("devicelink:\n  timeout: soon\n", `devicelink.timeout: invalid duration "soon"`)
	f("devicelink:\n  buffer: 1KiB\n", "devicelink.buffer: must be between 4KiB and 64MiB, got 1KiB")
	f("devicelink:\n  buffer: 128MiB\n", "devicelink.buffer: must be between 4KiB and 64MiB, got 128MiB")
	f("devicelink:\n  busy_poll: 0\n")
	f("devicelink:\n  busy_poll: 200us\n")
	f("devicelink:\n  busy_poll: 1ms\n")
	f("devicelink:\n  busy_poll: 2ms\n", "devicelink.busy_poll: must be between 0 (off) and 1ms, got 2ms (line 2)")
	f("devicelink:\n  busy_poll: -1us\n", "devicelink.busy_poll: must be between 0 (off) and 1ms, got -1µs")
	f("devicelink:\n  busy_poll: often\n", `devicelink.busy_poll: invalid duration "often"`)
	f("devicelink:\n  port: 1\n", "devicelink.port: unknown key; did you mean ports?")
	f("devicelink:\n  listen: 0.0.0.0\n  advertise: 10.0.0.1\ncluster:\n  nats:\n    url: nats://127.0.0.1:4222\n")
	f("devicelink:\n  listen: 0.0.0.0\n")
	f("devicelink:\n  listen: 0.0.0.0\ncluster:\n  nats:\n    url: nats://127.0.0.1:4222\n", "devicelink.advertise: required in cluster mode when devicelink.listen is 0.0.0.0")
	f("devicelink:\n  listen: 10.0.0.1\n  advertise: 0.0.0.0\n", `devicelink.advertise: want an IP address the other relay nodes reach, without a port (such as 10.0.0.1), got "0.0.0.0" (line 3)`)
	f("devicelink:\n  advertise: relay-a.example:40000\n", `devicelink.advertise: want an IP address`)
	f("devicelink:\n  protocols: [tcp]\n")
	f("devicelink:\n  protocols: [udp]\n")
	f("devicelink:\n  protocols: [udp, tcp]\n")
	f("devicelink:\n  protocols: []\n", "devicelink.protocols: name at least one protocol: tcp, udp or both (line 2)")
	f("devicelink:\n  protocols: [tcp, sctp]\n", `devicelink.protocols[1]: want tcp or udp, got "sctp" (line 2)`)
	f("devicelink:\n  protocols: [TCP]\n", `devicelink.protocols[0]: want tcp or udp, got "TCP"`)
	f("devicelink:\n  protocols: [udp, udp]\n", "devicelink.protocols[1]: udp is listed twice (first as devicelink.protocols[0])")
	f("devicelink:\n  protocols: tcp\n", "devicelink.protocols")

	// Connectors.
	conn := func(extra string) string {
		return "connectors:\n  - name: c\n    listen: 127.0.0.1:5100\n    upstream: ingest.example.com:7000\n" + extra
	}
	f(conn(""))
	f(conn("    connect_timeout: 1s\n    idle_timeout: 10m\n    proxy_protocol: v2\n"))
	f(conn("  - name: d\n    listen: 127.0.0.1:5101\n    upstream: '[::1]:7000'\n"))
	f("connectors:\n  - {}\n", "connectors[0].name: required", "connectors[0].listen: required (host:port)", "connectors[0].upstream: required (host:port)")
	f(conn("  - name: c\n    listen: 127.0.0.1:5101\n    upstream: b:1\n"), `connectors[1].name: duplicate connector name "c" (first used by connectors[0]) (line 5)`)
	f(conn("  - name: d\n    listen: :5100\n    upstream: b:1\n"), "connectors[1].listen: uses the same TCP address as connectors[0].listen (127.0.0.1:5100)")
	f(conn("  - name: 'a b'\n    listen: 127.0.0.1:5101\n    upstream: b:1\n"), `connectors[1].name: "a b": use only letters, digits`)
	f("connectors:\n  - name: c\n    listen: 127.0.0.1:5000\n    upstream: b:1\n", "connectors[0].listen: uses the same TCP address as devices.native.tcp (127.0.0.1:5000)")
	f("connectors:\n  - name: c\n    listen: :8080\n    upstream: b:1\n", "connectors[0].listen: uses the same TCP address as admin.listen (127.0.0.1:8080)")
	f("devicelink:\n  listen: 127.0.0.1\nconnectors:\n  - name: c\n    listen: 127.0.0.1:40005\n    upstream: b:1\n",
		"connectors[0].listen: port 40005 is in devicelink.ports (40000-40999) on the same address")
	f("devicelink:\n  listen: 127.0.0.2\nconnectors:\n  - name: c\n    listen: 127.0.0.1:40005\n    upstream: b:1\n")
	// UDP links only: the range binds no TCP port, so a connector may listen in it.
	f("devicelink:\n  listen: 127.0.0.1\n  protocols: [udp]\nconnectors:\n  - name: c\n    listen: 127.0.0.1:40005\n    upstream: b:1\n")
	f("connectors:\n  - name: c\n    listen: 5100\n    upstream: b:1\n", `connectors[0].listen: "5100" is not host:port`)
	f(strings.Replace(conn(""), "ingest.example.com:7000", "ingest.example.com", 1), `connectors[0].upstream: "ingest.example.com" is not host:port (missing port in address)`)
	f(strings.Replace(conn(""), "ingest.example.com:7000", "ingest.example.com:0", 1), `connectors[0].upstream: "ingest.example.com:0" has an invalid port "0" (want 1 to 65535)`)
	f(strings.Replace(conn(""), "ingest.example.com:7000", ":7000", 1), `connectors[0].upstream: ":7000" needs a host name or address`)
	f(conn("    connect_timeout: 0\n"), "connectors[0].connect_timeout: must be > 0, got 0")
	f(conn("    idle_timeout: -1s\n"), "connectors[0].idle_timeout: must not be negative")
	f(conn("    proxy_protocol: v1\n"), `connectors[0].proxy_protocol: must be "" (none) or "v2", got "v1" (line 5)`)
	f(conn("    max_connections: 0\n"), "connectors[0].max_connections: must be at least 1, got 0")
	f(conn("    max_connections: -5\n"), "connectors[0].max_connections: must be at least 1, got -5")
	f(conn("    max_connections: 1\n    buffer: 4KiB\n"))
	f(conn("    buffer: 64MiB\n"))
	f(conn("    buffer: 4095\n"), "connectors[0].buffer: must be between 4KiB and 64MiB, got 4095")
	f(conn("    buffer: 65MiB\n"), "connectors[0].buffer: must be between 4KiB and 64MiB, got 65MiB")
	f(conn("    upsteam: x:1\n"), "connectors[0].upsteam: unknown key; did you mean upstream?")

	// Routes: name.
	f(route(""))
	f("routes:\n  - url: https://example.com/\n", "routes[0].name: required (line 2)")
	f("routes:\n  - name: a b\n    url: https://example.com/\n", `routes[0].name: "a b" may only contain letters, digits, '_', '.' and '-' (line 2)`)
	f("routes:\n  - name: a\n    url: https://example.com/\n  - name: b\n    url: https://example.com/\n  - name: a\n    url: https://example.com/\n",
		`routes[2].name: duplicate route name "a" (first used by routes[0]) (line 6)`)

	// Routes: url.
	f("routes:\n  - name: r\n", "routes[0].url: required")
	f("routes:\n  - name: r\n    url: example.com/in\n", `routes[0].url: "example.com/in" must start with http:// or https://`)
	f("routes:\n  - name: r\n    url: ftp://example.com/in\n", `must start with http:// or https://`)
	f("routes:\n  - name: r\n    url: https:///in\n", `routes[0].url: "https:///in" has no host`)
	f("routes:\n  - name: r\n    url: 'https://exa mple.com/'\n", `routes[0].url: "https://exa mple.com/" is not a valid URL`)
	f("routes:\n  - name: r\n    url: https://example.com:0/\n", `has an invalid port "0"`)
	f("routes:\n  - name: r\n    url: https://example.com/[SERIAL]/[IMEI]/[ICCID]?a=[CUSTOM1]&b=[CUSTOM2]#[CUSTOM3]\n")
	f("routes:\n  - name: r\n    url: https://[SERIAL].example.com/\n")
	f("routes:\n  - name: r\n    url: https://example.com/%5Bliteral%5D\n")
	f("routes:\n  - name: r\n    url: https://example.com/[serial]\n", "routes[0].url: unknown dynamic field [serial]; known fields are [SERIAL] [IMEI] [ICCID] [CUSTOM1] [CUSTOM2] [CUSTOM3]")
	f("routes:\n  - name: r\n    url: https://example.com/[FOO]/[BAR]\n", "unknown dynamic fields [FOO] [BAR]")

	// Routes: private networks.
	for _, host := range []string{"127.0.0.1", "localhost", "LOCALHOST.", "api.localhost", "10.1.2.3", "172.16.0.1", "192.168.1.1",
		"169.254.169.254", "[::1]", "[fc00::1]", "[fe80::1]", "0.0.0.0", "[::ffff:127.0.0.1]"} {
		in := "routes:\n  - name: r\n    url: http://" + host + ":9000/in\n"
		f(in, "routes[0].url: host ", "set delivery.allow_private_networks: true")
		f("delivery:\n  allow_private_networks: true\n" + in)
	}
	f("routes:\n  - name: r\n    url: http://8.8.8.8/in\n")
	f("routes:\n  - name: r\n    url: http://[2001:4860::8888]/in\n")
	f("routes:\n  - name: r\n    url: http://internal.example/in\n") // hostnames are checked when connecting
	f("routes:\n  - name: r\n    url: http://[CUSTOM1]/in\n")

	// Routes: method, headers.
	f(route("    method: PUT\n"))
	f(route("    method: GET\n"), `routes[0].method: must be POST or PUT, got "GET"`)
	f(route("    method: post\n"), `routes[0].method: must be POST or PUT, got "post"`)
	f(route("    headers:\n      Authorization: Bearer x\n      X-Imei: '[IMEI]'\n      X-N: 5\n"))
	f(route("    headers:\n      Bad Name: x\n"), `routes[0].headers.Bad Name: "Bad Name" is not a valid header name`)
	f(route("    headers:\n      Content-Length: '5'\n"), "routes[0].headers.Content-Length: is set by the relay")
	f(route("    headers:\n      X-A: \"a\\r\\nX-B: b\"\n"), "routes[0].headers.X-A: value must not contain line breaks")
	f(route("    headers:\n      X-A: '[NOPE]'\n"), "routes[0].headers.X-A: unknown dynamic field [NOPE]")
	f(route("    headers:\n      X-A: a\n      x-a: b\n"), "routes[0].headers.x-a: same header as X-A")

	// Routes: batch, timeout, concurrency, retry, enabled.
	f(route("    batch:\n      max_messages: 0\n"), "routes[0].batch.max_messages: must be between 1 and 100000, got 0 (line 5)")
	f(route("    batch:\n      max_messages: 100001\n"), "routes[0].batch.max_messages: must be between 1 and 100000")
	f(route("    batch:\n      max_messages: 100000\n"))
	f(route("    batch:\n      max_bytes: 0\n"), "routes[0].batch.max_bytes: must be > 0, got 0")
	f(route("    batch:\n      linger: 0\n"))
	f(route("    batch:\n      linger: -1ms\n"), "routes[0].batch.linger: must not be negative, got -1ms")
	f(route("    timeout: -1s\n"), "routes[0].timeout: must not be negative")
	f(route("    concurrency: 0\n"), "routes[0].concurrency: must be between 1 and 1024, got 0")
	f(route("    concurrency: 1025\n"), "routes[0].concurrency: must be between 1 and 1024")
	f(route("    retry:\n      initial_backoff: 10s\n      max_backoff: 1s\n"), "routes[0].retry.max_backoff: must be at least initial_backoff (10s), got 1s")
	f(route("    retry:\n      initial_backoff: -1s\n"), "routes[0].retry.initial_backoff: must be > 0, got -1s")
	f(route("    enabled: false\n"))

	// Anchors and merge keys are followed.
	f("x-batch: &b\n  max_messages: 10\n", "x-batch: unknown key")
	f("routes:\n  - &r\n    name: a\n    url: https://example.com/\n    batch: &b {max_messages: 10}\n  - <<: *r\n    name: b\n    batch: *b\n")
	f("routes:\n  - name: a\n    url: https://example.com/\n    batch: &b {max_mesages: 10}\n  - name: b\n    url: https://example.com/\n    batch: *b\n",
		"routes[0].batch.max_mesages: unknown key", "routes[1].batch.max_mesages: unknown key")
}

func TestParseValues(t *testing.T) {
	c, err := config.Parse([]byte(`
devices:
  native:
    tcp: ""
  hello_timeout:        # no value: keeps the default
  idle_timeout: 0
routes:
  - name: a
    url: https://example.com/
    enabled: false
    timeout: 3s
    retry:
      max_backoff: 1m
  - name: b
    url: https://example.com/
    batch:
      max_bytes: 256KiB
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Devices.Native.TCP != "" || c.Devices.Native.UDP != "127.0.0.1:5000" ||
		time.Duration(c.Devices.HelloTimeout) != 10*time.Second || c.Devices.IdleTimeout != 0 {
		t.Fatalf("devices = %+v", c.Devices)
	}
	a, b := c.Routes[0], c.Routes[1]
	if a.IsEnabled() || time.Duration(a.Timeout) != 3*time.Second ||
		time.Duration(a.Retry.InitialBackoff) != 200*time.Millisecond || time.Duration(a.Retry.MaxBackoff) != time.Minute {
		t.Fatalf("route a = %+v retry %+v", a, a.Retry)
	}
	if !b.IsEnabled() || b.Batch.MaxBytes != 256*config.KiB || b.Batch.MaxMessages != 500 ||
		time.Duration(b.Timeout) != 10*time.Second || *b.Retry != c.Delivery.Retry {
		t.Fatalf("route b = %+v retry %+v", b, b.Retry)
	}
}

// devicelink.protocols: both by default, a list given replaces the default (not appended to
// it), and each choice counts its own files per port.
func TestDeviceLinkProtocols(t *testing.T) {
	for _, tc := range []struct {
		yaml       string
		want       []string
		tcp, udp   bool
		filesPerPt int
	}{
		{"devicelink:\n  listen: 10.0.0.1\n", []string{"tcp", "udp"}, true, true, 5},
		{"devicelink:\n  protocols: [tcp]\n", []string{"tcp"}, true, false, 3},
		{"devicelink:\n  protocols: [udp]\n", []string{"udp"}, false, true, 2},
	} {
		c, err := config.Parse([]byte(tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		d := &c.DeviceLink
		if !slices.Equal(d.Protocols, tc.want) || d.Allows(config.LinkTCP) != tc.tcp || d.Allows(config.LinkUDP) != tc.udp ||
			d.FilesPerPort() != tc.filesPerPt {
			t.Errorf("%q: protocols %q, tcp %v, udp %v, files per port %d; want %q, %v, %v, %d", tc.yaml,
				d.Protocols, d.Allows(config.LinkTCP), d.Allows(config.LinkUDP), d.FilesPerPort(), tc.want, tc.tcp, tc.udp, tc.filesPerPt)
		}
	}
}

// TestAllProblemsAtOnce checks that one Validate reports every problem, in order, with its path.
func TestAllProblemsAtOnce(t *testing.T) {
	c := config.Default()
	c.DataDir = ""
	c.Devices.Ack = "eventually"
	c.Devices.MaxFrame = 0
	c.Delivery.Timeout = 0
	r := config.DefaultRoute()
	r.Name = "x"
	r.URL = "http://192.168.0.10/[SERIAL]"
	r.Batch.MaxBytes = 0
	c.Routes = append(c.Routes, r, r)
	c.Resolve()
	err := c.Validate()
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate() = %v, want a *ValidationError", err)
	}
	want := []string{
		"data_dir: required",
		`devices.ack: must be one of persist, delivery, got "eventually"`,
		"devices.max_frame: must be between 16B and 1MiB, got 0",
		"delivery.timeout: must be > 0, got 0s",
		"routes[0].url: host 192.168.0.10 is a private address; set delivery.allow_private_networks: true to deliver to it",
		"routes[0].batch.max_bytes: must be > 0, got 0",
		`routes[1].name: duplicate route name "x" (first used by routes[0])`,
		"routes[1].url: host 192.168.0.10 is a private address; set delivery.allow_private_networks: true to deliver to it",
		"routes[1].batch.max_bytes: must be > 0, got 0",
	}
	if !slices.Equal(ve.Problems, want) {
		t.Fatalf("Validate() problems =\n%s\nwant\n%s", strings.Join(ve.Problems, "\n"), strings.Join(want, "\n"))
	}
	if !strings.HasPrefix(err.Error(), "invalid configuration:\n  data_dir: required\n  devices.ack") {
		t.Fatalf("Validate().Error() = %q", err.Error())
	}

	// Decoding problems are reported all at once too, before validation.
	_, err = config.Parse([]byte("nope: 1\ndevices:\n  max_frame: big\n  ack: 5\nroutes:\n  - name: a\n    colour: red\n"))
	if !errors.As(err, &ve) || len(ve.Problems) != 3 {
		t.Fatalf("Parse = %v, want 3 problems", err)
	}
}

func TestValidateProgrammatic(t *testing.T) {
	c := config.Default()
	r := config.DefaultRoute()
	r.Name, r.URL = "r", "https://example.com/"
	c.Routes = append(c.Routes, r)
	if err := c.Validate(); err != nil { // unresolved: timeout 0 and nil retry inherit
		t.Fatalf("Validate() before Resolve = %v", err)
	}
	c.Resolve()
	c.Resolve()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if c.Routes[0].Timeout != c.Delivery.Timeout || *c.Routes[0].Retry != c.Delivery.Retry {
		t.Fatalf("Resolve() left route %+v", c.Routes[0])
	}
}

func TestSlogLevel(t *testing.T) {
	for in, want := range map[string]string{"debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR", "": "INFO"} {
		if got := (config.Log{Level: in}).SlogLevel().String(); got != want {
			t.Errorf("SlogLevel(%q) = %s, want %s", in, got, want)
		}
	}
}
