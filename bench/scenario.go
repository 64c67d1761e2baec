// Package bench runs whole scenarios: the relay as its own process (its CPU and memory read from
// /proc), a sink receiving what it delivers, and a simulated fleet, and reports throughput,
// latency, memory and exact loss accounting as JSON, an HTML page and a Markdown table. Each
// scenario's floors (loadgen floor) run alternately beside the relay in the same invocation, and
// the relay's figures are reported as ratios to theirs.
package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Scenario is one benchmark, read from a YAML file under bench/scenarios/.
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Quick scenarios make up `make bench`.
	Quick bool `yaml:"quick"`
	// Order sorts scenarios (lower first); scenarios that use another's result come after it.
	Order int `yaml:"order"`

	// Floors are run beside the relay in the same invocation, with the same fleet and sink:
	// "ack" (a minimal gnet server that acknowledges each DATA frame on receipt and stores
	// nothing) and "pipeline" (the same, forwarding every record to the sink as the route would,
	// without storing). The relay's figures are reported as ratios to theirs.
	Floors []string `yaml:"floors"`

	Relay RelaySpec `yaml:"relay"`
	Load  LoadSpec  `yaml:"load"`
	Sink  SinkSpec  `yaml:"sink"`

	// Crash makes the scenario a crash test: the relay is killed with SIGKILL under load and
	// restarted on the same data directory, again and again (bench -run crash).
	Crash *CrashSpec `yaml:"crash"`
	// Backlog makes the scenario a backlog test: with the endpoint down the fleet sends until
	// the relay holds a number of queued messages (the fleet stops once it sent them; the
	// relay's fleetrelay_route_backlog_messages confirms); memory, a restart with the backlog and
	// the drain are measured (bench -run backlog).
	Backlog *BacklogSpec `yaml:"backlog"`
	// Churn replaces device metadata through the admin API while the fleet sends (the relay
	// runs only; floors have no API), so the data path's cost of a busy control plane shows in
	// the ratios to the floors.
	Churn *ChurnSpec `yaml:"churn"`
	// Failover makes the scenario a cluster failover test (bench -run cluster-failover): with
	// relay.cluster's relays running, one of them is killed with SIGKILL again and again, and
	// the time until every partition it owned delivers again is measured (FailoverSpec).
	Failover *FailoverSpec `yaml:"failover"`
	// Link makes the scenario a device-link benchmark (bench -run device-link): one TCP link's
	// throughput and round trips and the relay's memory per idle link, beside the floors
	// "direct" and "proxy" (LinkSpec). It has no fleet: the load section is not used.
	Link *LinkSpec `yaml:"link"`
}

// CrashSpec describes the kills of a crash scenario. The load's duration caps the test: the fleet
// stops Tail after the last restart, or when the duration passes (the result then says how many
// kills were done). The scenario's sink section applies too: an endpoint outage builds a backlog
// to crash with.
type CrashSpec struct {
	Kills int `yaml:"kills"` // SIGKILLs (0 or absent: 20; bench -kills overrides it)
	// Each kill comes a random time, uniform in [MinGap, MaxGap], after the relay was ready
	// again (default 500ms..3s).
	MinGap Duration `yaml:"min_gap"`
	MaxGap Duration `yaml:"max_gap"`
	Tail   Duration `yaml:"tail"` // load after the last restart (default 3s)
	Seed   uint64   `yaml:"seed"` // of the gaps (0: random; the result records the one used)
}

// BacklogSpec describes a backlog scenario. The load's duration caps the build-up.
type BacklogSpec struct {
	Messages int64 `yaml:"messages"` // queued messages to build (default 10,000,000; bench -backlog overrides it)
	// Settle is the pause before each memory reading once the fleet stopped or the relay
	// started (default 2s).
	Settle Duration `yaml:"settle"`
}

// RelaySpec is the part of the relay's configuration a scenario varies.
type RelaySpec struct {
	Ack         string   `yaml:"ack"`          // persist (default) or delivery
	Sync        bool     `yaml:"sync"`         // store.sync
	MaxMessages int      `yaml:"max_messages"` // route batch size (default 500)
	Linger      Duration `yaml:"linger"`       // route linger (default 20ms)
	Concurrency int      `yaml:"concurrency"`  // route concurrency (default 4)
	NoRoute     bool     `yaml:"no_route"`     // run without a route (connections scenario)
	Format      string   `yaml:"format"`       // the route's format (default envelope)
	Template    string   `yaml:"template"`     // the route's template (format template)
	MaxBackoff  Duration `yaml:"max_backoff"`  // delivery.retry.max_backoff (default: the relay's)
	// Cluster runs the relay in cluster mode: a NATS JetStream cluster inside the bench process
	// and the relay process(es) with cluster.nats pointing at it (ClusterSpec).
	Cluster *ClusterSpec `yaml:"cluster"`
}

// ClusterSpec is cluster mode for a scenario: NATSNodes in-process JetStream nodes on loopback
// (internal/natsembed: file storage, every write fsynced), Relays relay processes sharing a
// fresh cluster.nats.prefix, the fleet spread over the relays of FleetOn.
type ClusterSpec struct {
	NATSNodes int `yaml:"nats_nodes"` // default 3
	Replicas  int `yaml:"replicas"`   // cluster.nats.replicas (default 3; at most nats_nodes)
	Relays    int `yaml:"relays"`     // relay processes (default 1)
	// FleetOn lists the relays (1-based) the fleet connects to, its devices split evenly over
	// them (default: every relay).
	FleetOn    []int    `yaml:"fleet_on"`
	Partitions int      `yaml:"partitions"` // cluster.nats.partitions (default 32, the relay's)
	Lease      Duration `yaml:"lease"`      // cluster.nats.lease (0: the relay's default, 3s)
}

// FailoverSpec describes the kills of a failover scenario. The load's duration caps the test.
type FailoverSpec struct {
	Kills int `yaml:"kills"` // SIGKILLs of the relay (default 5; bench -kills overrides it)
	Relay int `yaml:"relay"` // which relay is killed, 1-based (default 1)
	// Warmup is the load before the first kill (default 3s); Gap the pause after the killed
	// relay was restarted and owns partitions again, before the next kill (default 2s).
	Warmup Duration `yaml:"warmup"`
	Gap    Duration `yaml:"gap"`
	// Timeout bounds the wait for every partition to deliver again after a kill (default 60s).
	Timeout Duration `yaml:"timeout"`
}

// LoadSpec is the simulated fleet.
type LoadSpec struct {
	// Protocol is native (default: TCP, persist or delivery acks), ndjson (lines over TCP, no
	// acknowledgements, the protocol general-purpose pipelines accept), teltonika-tcp or
	// teltonika-udp (Teltonika trackers on the relay's devices.teltonika listeners: AVL packets
	// of records..records_max records, one at a time per tracker; rate counts packets).
	Protocol string  `yaml:"protocol"`
	Devices  int     `yaml:"devices"`
	Rate     float64 `yaml:"rate"` // frames per second per device; 0: as fast as the relay takes
	// RateOf and RateFraction set the total rate to a fraction of another scenario's measured
	// end-to-end (delivered) messages/s (its result file must exist), e.g. latency at half the
	// maximum.
	RateOf       string   `yaml:"rate_of"`
	RateFraction float64  `yaml:"rate_fraction"`
	Poisson      bool     `yaml:"poisson"`
	Records      int      `yaml:"records"`     // per frame (default 1)
	RecordsMax   int      `yaml:"records_max"` // Teltonika: packets of records..records_max records, drawn uniformly
	Window       int      `yaml:"window"`      // default 64
	Payload      string   `yaml:"payload"`     // sensor (default), gps
	Duration     Duration `yaml:"duration"`
	Ramp         Duration `yaml:"ramp"`
	Idle         bool     `yaml:"idle"` // connect and hold the connections without sending
}

// SinkSpec describes the receiving endpoint's behaviour.
type SinkSpec struct {
	Delay   Duration `yaml:"delay"`    // added to every answer
	DownAt  Duration `yaml:"down_at"`  // outage start, from the start of the load
	DownFor Duration `yaml:"down_for"` // outage length (0: none)
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// Load reads a scenario file strictly (unknown keys are errors) and fills in defaults.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	s.defaults()
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return &s, nil
}

func (s *Scenario) defaults() {
	if s.Relay.Ack == "" {
		s.Relay.Ack = "persist"
	}
	if s.Relay.MaxMessages == 0 {
		s.Relay.MaxMessages = 500
	}
	if s.Relay.Linger == 0 {
		s.Relay.Linger = Duration(20 * time.Millisecond)
	}
	if s.Relay.Concurrency == 0 {
		s.Relay.Concurrency = 4
	}
	if s.Load.Records == 0 {
		s.Load.Records = 1
	}
	if s.Load.Window == 0 {
		s.Load.Window = 64
	}
	if s.Load.Protocol == "" {
		s.Load.Protocol = "native"
	}
	if s.Load.Payload == "" {
		s.Load.Payload = "sensor"
	}
	if c := s.Crash; c != nil {
		if c.Kills == 0 {
			c.Kills = 20
		}
		if c.MinGap == 0 && c.MaxGap == 0 {
			c.MinGap, c.MaxGap = Duration(500*time.Millisecond), Duration(3*time.Second)
		}
		if c.Tail == 0 {
			c.Tail = Duration(3 * time.Second)
		}
	}
	if c := s.Relay.Cluster; c != nil {
		c.defaults()
	}
	if f := s.Failover; f != nil {
		f.defaults()
	}
	if c := s.Churn; c != nil && c.Rate == 0 {
		c.Rate = 1000
	}
	if l := s.Link; l != nil {
		l.defaults()
	}
	if b := s.Backlog; b != nil {
		if b.Messages == 0 {
			b.Messages = 10_000_000
		}
		if b.Settle == 0 {
			b.Settle = Duration(2 * time.Second)
		}
	}
}

func (s *Scenario) validate() error {
	if s.Link != nil {
		return s.validateLink()
	}
	var errs []string
	if s.Load.Devices <= 0 {
		errs = append(errs, "load.devices: must be > 0")
	}
	if s.Load.Duration <= 0 {
		errs = append(errs, "load.duration: must be > 0")
	}
	if (s.Load.RateOf == "") != (s.Load.RateFraction == 0) {
		errs = append(errs, "load.rate_of and load.rate_fraction: set both or neither")
	}
	switch s.Load.Protocol {
	case "native", "ndjson":
		if s.Load.RecordsMax != 0 {
			errs = append(errs, "load.records_max: for Teltonika protocols only")
		}
	case loadgen.ProtocolTeltonikaTCP, loadgen.ProtocolTeltonikaUDP:
		if max(s.Load.Records, s.Load.RecordsMax) > 255 {
			errs = append(errs, "load.records, load.records_max: a Teltonika packet holds at most 255 records")
		}
		if s.Load.RecordsMax != 0 && s.Load.RecordsMax < s.Load.Records {
			errs = append(errs, "load.records_max: must be >= load.records")
		}
		if s.Load.RateOf != "" {
			errs = append(errs, "load.rate_of: not for Teltonika protocols (their packets vary in size)")
		}
	default:
		errs = append(errs, "load.protocol: must be native, ndjson, teltonika-tcp or teltonika-udp")
	}
	if s.Relay.Ack != "persist" && s.Relay.Ack != "delivery" {
		errs = append(errs, "relay.ack: must be persist or delivery")
	}
	if s.Crash != nil && s.Backlog != nil {
		errs = append(errs, "crash and backlog: a scenario is one or the other")
	}
	if (s.Crash != nil || s.Backlog != nil) && (s.Load.Protocol != "native" || s.Relay.NoRoute || s.Load.Idle || s.Load.RateOf != "") {
		errs = append(errs, "crash, backlog: need native devices sending to a route at a rate of their own (no idle, no_route, ndjson, rate_of)")
	}
	if c := s.Crash; c != nil {
		if c.Kills < 0 {
			errs = append(errs, "crash.kills: must be >= 0")
		}
		if c.MinGap < 0 || c.MaxGap < c.MinGap {
			errs = append(errs, "crash.min_gap, crash.max_gap: want 0 <= min_gap <= max_gap")
		}
	}
	errs = append(errs, s.validateCluster()...)
	for i, f := range s.Floors {
		switch {
		case f == FloorBadger && s.Relay.Cluster == nil:
			errs = append(errs, fmt.Sprintf("floors[%d]: %s is the relay in Badger mode beside its cluster mode: it needs relay.cluster", i, FloorBadger))
		case f == FloorBadger:
		case f != FloorAck && f != FloorPipeline:
			errs = append(errs, fmt.Sprintf("floors[%d]: must be %s or %s, got %q", i, FloorAck, FloorPipeline, f))
		case s.Crash != nil || s.Backlog != nil:
			errs = append(errs, fmt.Sprintf("floors[%d]: crash and backlog scenarios have no floor (a floor stores nothing to crash with)", i))
		case f == FloorPipeline && (s.Relay.NoRoute || (s.Relay.Format != "" && s.Relay.Format != "envelope")):
			errs = append(errs, fmt.Sprintf("floors[%d]: the pipeline floor renders the default envelope: it needs a route of format envelope", i))
		}
	}
	if c := s.Churn; c != nil && (c.Rate < 0 || s.Load.Idle || s.Load.Protocol != "native") {
		errs = append(errs, "churn: needs native devices that send, and rate >= 0")
	}
	if b := s.Backlog; b != nil && b.Messages < 0 {
		errs = append(errs, "backlog.messages: must be > 0")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// validateLink checks a device-link scenario: its link section and floors, and nothing of a
// fleet's (crash, backlog, churn) beside them.
func (s *Scenario) validateLink() error {
	errs := s.Link.validate()
	if s.Crash != nil || s.Backlog != nil || s.Churn != nil {
		errs = append(errs, "link: a device-link scenario has no crash, backlog or churn")
	}
	for i, f := range s.Floors {
		if f != FloorDirect && f != FloorProxy {
			errs = append(errs, fmt.Sprintf("floors[%d]: a device-link scenario's floors are %s and %s, got %q", i, FloorDirect, FloorProxy, f))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// LoadDir reads every *.yaml scenario in dir, sorted by Order then name.
func LoadDir(dir string) ([]*Scenario, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	for _, p := range paths {
		s, err := Load(p)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Order != out[j].Order {
			return out[i].Order < out[j].Order
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
