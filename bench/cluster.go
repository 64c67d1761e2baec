package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natsembed"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// FloorBadger is the comparison target of a cluster scenario: the same relay, load and sink in
// Badger mode (the scenario without relay.cluster), run alternately with cluster mode.
const FloorBadger = "badger"

// ownedMetric is the relay's gauge of the journal partitions it owns (1 per owned partition).
const ownedMetric = "fleetrelay_cluster_partition_owned"

func (c *ClusterSpec) defaults() {
	if c.NATSNodes == 0 {
		c.NATSNodes = 3
	}
	if c.Replicas == 0 {
		c.Replicas = min(3, c.NATSNodes)
	}
	if c.Relays == 0 {
		c.Relays = 1
	}
	if len(c.FleetOn) == 0 {
		for i := range c.Relays {
			c.FleetOn = append(c.FleetOn, i+1)
		}
	}
	if c.Partitions == 0 {
		c.Partitions = cluster.DefaultPartitions
	}
}

func (f *FailoverSpec) defaults() {
	if f.Kills == 0 {
		f.Kills = 5
	}
	if f.Relay == 0 {
		f.Relay = 1
	}
	if f.Warmup == 0 {
		f.Warmup = Duration(3 * time.Second)
	}
	if f.Gap == 0 {
		f.Gap = Duration(2 * time.Second)
	}
	if f.Timeout == 0 {
		f.Timeout = Duration(time.Minute)
	}
}

// validateCluster checks relay.cluster and failover.
func (s *Scenario) validateCluster() []string {
	var errs []string
	c := s.Relay.Cluster
	if c != nil {
		if c.NATSNodes < 1 || c.NATSNodes > 5 {
			errs = append(errs, "relay.cluster.nats_nodes: must be 1 to 5")
		}
		if c.Replicas < 1 || c.Replicas > c.NATSNodes {
			errs = append(errs, "relay.cluster.replicas: must be 1 to nats_nodes")
		}
		if c.Relays < 1 || c.Relays > 9 {
			errs = append(errs, "relay.cluster.relays: must be 1 to 9")
		}
		for i, r := range c.FleetOn {
			if r < 1 || r > c.Relays {
				errs = append(errs, fmt.Sprintf("relay.cluster.fleet_on[%d]: relay %d of %d", i, r, c.Relays))
			}
		}
		if c.Partitions < 1 || c.Partitions > 1024 {
			errs = append(errs, "relay.cluster.partitions: must be 1 to 1024")
		}
		if c.Lease < 0 {
			errs = append(errs, "relay.cluster.lease: must be >= 0")
		}
		if s.Load.Protocol != "native" || s.Load.Idle || s.Relay.Ack != "persist" || s.Crash != nil || s.Backlog != nil || s.Link != nil {
			errs = append(errs, "relay.cluster: needs native devices that send, persist acks, and no crash, backlog or link")
		}
		if len(c.FleetOn) > 1 && s.Load.RateOf != "" {
			errs = append(errs, "relay.cluster.fleet_on: a fleet on several relays takes a rate of its own (no rate_of)")
		}
	}
	if f := s.Failover; f != nil {
		switch {
		case c == nil || c.Relays < 2:
			errs = append(errs, "failover: needs relay.cluster with at least 2 relays")
		case f.Relay < 1 || f.Relay > c.Relays:
			errs = append(errs, fmt.Sprintf("failover.relay: relay %d of %d", f.Relay, c.Relays))
		case slices.Contains(c.FleetOn, f.Relay):
			errs = append(errs, "failover.relay: the killed relay holds no devices (leave it out of relay.cluster.fleet_on)")
		}
		if f.Kills < 1 || f.Warmup < 0 || f.Gap < 0 || f.Timeout <= 0 {
			errs = append(errs, "failover: want kills >= 1, warmup and gap >= 0, timeout > 0")
		}
		if len(s.Floors) > 0 || s.Churn != nil || s.Load.RateOf != "" || s.Load.Rate <= 0 {
			errs = append(errs, "failover: no floors, churn or rate_of; devices at a rate of their own (load.rate > 0)")
		}
	}
	return errs
}

// ClusterResult is what a run in cluster mode adds to its Result.
type ClusterResult struct {
	NATSNodes  int    `json:"natsNodes"`
	Replicas   int    `json:"replicas"`
	Relays     int    `json:"relays"`
	FleetOn    []int  `json:"fleetOn"`
	Partitions int    `json:"partitions"`
	Lease      string `json:"lease"` // cluster.nats.lease, or "3s (default)"
	Prefix     string `json:"prefix"`
	// NATSStartSeconds is how long the in-process NATS cluster took to elect its meta leader.
	NATSStartSeconds float64 `json:"natsStartSeconds"`
	// BenchCPUPerMsgUs is this process's CPU per message: the fleet, the sink and the NATS
	// nodes. Against the same figure of the Badger run (which has no NATS) it gives the NATS
	// nodes' CPU per message (Comparison.VsBadger).
	BenchCPUPerMsgUs float64 `json:"benchCpuPerMsgUs"`
	// NATSDiskMiB is what the NATS nodes' stores held on disk at the end (every replica).
	NATSDiskMiB float64 `json:"natsDiskMiB"`
	// RelayCPUSeconds is each relay process's CPU over load and drain (Result.RelayCPUSeconds
	// is their sum).
	RelayCPUSeconds []float64 `json:"relayCpuSeconds"`
}

// BadgerRatios are a cluster scenario's medians divided by the same load's in Badger mode,
// measured alternately in the same invocation.
type BadgerRatios struct {
	Acked     float64 `json:"acked"`     // acknowledged msgs/s
	Delivered float64 `json:"delivered"` // delivered msgs/s
	CPUPerMsg float64 `json:"cpuPerMsg"` // relay CPU per message (every relay's)
	AckP50    float64 `json:"ackP50"`
	AckP99    float64 `json:"ackP99"`
	// NATSCPUPerMsgUs is the NATS nodes' CPU per message, µs: this process's CPU per message
	// in cluster mode less its CPU per message in Badger mode (the fleet and the sink do the
	// same work in both; the NATS nodes run only in the first). Medians by medians.
	NATSCPUPerMsgUs float64 `json:"natsCpuPerMsgUs"`
}

// clusterRun is cluster mode for one run: the NATS cluster in this process, one env per relay
// (relays[0] is the run's own; the others share its sink and key) and the relay processes.
type clusterRun struct {
	spec   ClusterSpec
	nats   *natsembed.Cluster
	dir    string
	prefix string
	envs   []*env
	group  *relayGroup
	res    *ClusterResult
}

// startCluster starts s's NATS cluster and relays beside e (the run's env), every relay in
// cluster mode on a fresh prefix, and waits until each is ready.
func startCluster(ctx context.Context, s *Scenario, o Options, e *env, logf func(string, ...any)) (*clusterRun, error) {
	spec := *s.Relay.Cluster
	var b [4]byte
	_, _ = rand.Read(b[:])
	c := &clusterRun{spec: spec, dir: filepath.Join(e.dir, "nats"), prefix: "bench" + hex.EncodeToString(b[:]), group: &relayGroup{}}
	lease := time.Duration(spec.Lease).String()
	if spec.Lease == 0 {
		lease = "3s (default)"
	}
	c.res = &ClusterResult{NATSNodes: spec.NATSNodes, Replicas: spec.Replicas, Relays: spec.Relays, FleetOn: spec.FleetOn,
		Partitions: spec.Partitions, Lease: lease, Prefix: c.prefix}
	t0 := time.Now()
	var err error
	if c.nats, err = natsembed.StartCluster(spec.NATSNodes, c.dir); err != nil {
		return nil, err
	}
	c.res.NATSStartSeconds = time.Since(t0).Seconds()
	logf("NATS: %d in-process JetStream nodes (R%d) ready after %.1f s; %d relay(s) on prefix %s, lease %s",
		spec.NATSNodes, spec.Replicas, c.res.NATSStartSeconds, spec.Relays, c.prefix, lease)
	for i := range spec.Relays {
		re := e
		if i > 0 {
			if re, err = e.sibling(s, i+1); err != nil {
				c.close()
				return nil, err
			}
		}
		re.cluster = &clusterConf{url: c.nats.URL(), prefix: c.prefix, node: fmt.Sprintf("relay%d", i+1), spec: &spec}
		if err := re.writeConfig(s); err != nil {
			c.close()
			return nil, err
		}
		c.envs = append(c.envs, re)
	}
	for i, re := range c.envs {
		p, err := re.startRelay(ctx, o.RelayBin, time.Minute)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("relay %d: %w", i+1, err)
		}
		c.group.procs = append(c.group.procs, p)
	}
	return c, nil
}

// fleetAddrs are the device addresses of the relays the fleet connects to.
func (c *clusterRun) fleetAddrs() []string {
	var a []string
	for _, r := range c.spec.FleetOn {
		a = append(a, c.envs[r-1].devAddr)
	}
	return a
}

// finish fills in what the run measured of the cluster: CPU per relay, the NATS stores' size.
func (c *clusterRun) finish(res *Result) {
	c.res.RelayCPUSeconds = c.group.cpus()
	c.res.NATSDiskMiB = float64(diskUsage(c.dir)) / (1 << 20)
	if n := max(res.Delivered, res.MessagesAcked); n > 0 {
		c.res.BenchCPUPerMsgUs = res.BenchCPUSeconds / float64(n) * 1e6
	}
	res.Cluster = c.res
}

// close stops the relays, then the NATS nodes.
func (c *clusterRun) close() {
	c.group.stop()
	if c.nats != nil {
		c.nats.Shutdown()
	}
}

// clusterConf is the cluster section of a relay's config.
type clusterConf struct {
	url, prefix, node string
	spec              *ClusterSpec
}

// writeClusterConfig appends the cluster section to a relay's config.
func writeClusterConfig(b *strings.Builder, c *clusterConf) {
	fmt.Fprintf(b, "cluster:\n  nats:\n    url: %q\n    replicas: %d\n    prefix: %s\n    partitions: %d\n    node: %s\n",
		c.url, c.spec.Replicas, c.prefix, c.spec.Partitions, c.node)
	if c.spec.Lease > 0 {
		fmt.Fprintf(b, "    lease: %s\n", time.Duration(c.spec.Lease))
	}
}

// proc is a measured process, or several counted as one: the relay, a floor, the relays of a
// cluster.
type proc interface {
	cpu() float64 // user+system seconds
	rss() int64
	peakRSS() int64
	stop()
}

var _ proc = (*relayProc)(nil)

// relayGroup is a cluster's relay processes counted as one: CPU and memory summed. A process
// replaced after a kill adds the CPU it had used to dead.
type relayGroup struct {
	mu    sync.Mutex
	procs []*relayProc
	dead  float64
}

func (g *relayGroup) list() []*relayProc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.procs)
}

func (g *relayGroup) cpu() float64 {
	g.mu.Lock()
	n := g.dead
	g.mu.Unlock()
	for _, p := range g.list() {
		n += p.cpu()
	}
	return n
}

// cpus is each relay's CPU seconds so far (a restarted relay's only since its restart).
func (g *relayGroup) cpus() []float64 {
	var v []float64
	for _, p := range g.list() {
		v = append(v, p.cpu())
	}
	return v
}

func (g *relayGroup) rss() int64 {
	var n int64
	for _, p := range g.list() {
		n += p.rss()
	}
	return n
}

func (g *relayGroup) peakRSS() int64 {
	var n int64
	for _, p := range g.list() {
		n += p.peakRSS()
	}
	return n
}

// replace puts np in place of relay i, whose CPU so far (read before it was killed) was used.
func (g *relayGroup) replace(i int, np *relayProc, used float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.procs[i] = np
	g.dead += used
}

func (g *relayGroup) stop() {
	var wg sync.WaitGroup
	for _, p := range g.list() {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// runFleet runs the fleet o describes over addrs, its devices split evenly over them (a part
// each, named o.Prefix and the relay's number when there are several), and merges the parts'
// reports. With one address it is loadgen.Run.
func runFleet(ctx context.Context, addrs []string, o loadgen.RunOptions) (*loadgen.RunReport, error) {
	if len(addrs) <= 1 {
		if len(addrs) == 1 {
			o.Addr = addrs[0]
		}
		return loadgen.Run(ctx, o)
	}
	reps := make([]*loadgen.RunReport, len(addrs))
	errs := make([]error, len(addrs))
	// Each part counts on counters of its own (its report's figures are read from them); the
	// caller's are their sums, kept up to date while the parts run.
	acked, sent := make([]atomic.Int64, len(addrs)), make([]atomic.Int64, len(addrs))
	sum := func() {
		var a, s int64
		for i := range addrs {
			a, s = a+acked[i].Load(), s+sent[i].Load()
		}
		if o.Acked != nil {
			o.Acked.Store(a)
		}
		if o.Sent != nil {
			o.Sent.Store(s)
		}
	}
	quit, summed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(summed)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				sum()
				return
			case <-t.C:
				sum()
			}
		}
	}()
	defer func() { close(quit); <-summed }()
	var wg sync.WaitGroup
	for i, a := range addrs {
		p := o
		p.Addr = a
		p.Acked, p.Sent = &acked[i], &sent[i]
		p.Devices = o.Devices / len(addrs)
		if i < o.Devices%len(addrs) {
			p.Devices++
		}
		p.Prefix = o.Prefix + strconv.Itoa(i+1)
		if i > 0 {
			p.OnSecond, p.OnConnected = nil, nil
		}
		wg.Add(1)
		go func() { defer wg.Done(); reps[i], errs[i] = loadgen.Run(ctx, p) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return mergeReports(reps), nil
}

// mergeReports adds up the reports of a fleet's parts. Their ACK latencies cannot be added up:
// the merged report has, percentile by percentile, the highest of the parts'.
func mergeReports(reps []*loadgen.RunReport) *loadgen.RunReport {
	m := &loadgen.RunReport{Start: reps[0].Start, FirstSeq: reps[0].FirstSeq, Records: reps[0].Records, Acked: map[string]uint64{}}
	for _, r := range reps {
		if r.Start.Before(m.Start) {
			m.Start = r.Start
		}
		m.Requested += r.Requested
		m.Devices += r.Devices
		m.Notes = append(m.Notes, r.Notes...)
		m.SendSeconds = max(m.SendSeconds, r.SendSeconds)
		m.TotalSeconds = max(m.TotalSeconds, r.TotalSeconds)
		m.FramesSent += r.FramesSent
		m.RecordsSent += r.RecordsSent
		m.FramesAcked += r.FramesAcked
		m.Unacked += r.Unacked
		m.Errors += r.Errors
		m.Reconnects += r.Reconnects
		for id, seq := range r.Acked {
			m.Acked[id] = seq
		}
		m.AckLatency = maxLatency(m.AckLatency, r.AckLatency)
		m.AckLatencyUncorrected = maxLatency(m.AckLatencyUncorrected, r.AckLatencyUncorrected)
		for i, s := range r.Timeline {
			if i == len(m.Timeline) {
				m.Timeline = append(m.Timeline, loadgen.Second{T: s.T, P99ms: s.P99ms})
			}
			t := &m.Timeline[i]
			t.Connected += s.Connected
			t.Sent += s.Sent
			t.Acked += s.Acked
			if s.P99ms > t.P99ms || t.P99ms != t.P99ms {
				t.P99ms = s.P99ms
			}
		}
	}
	if m.SendSeconds > 0 {
		m.SentPerSec = float64(m.FramesSent) / m.SendSeconds
		m.AckedPerSec = float64(m.FramesAcked) / m.SendSeconds
	}
	m.Notes = append(m.Notes, fmt.Sprintf("the fleet ran in %d parts, one per relay; ACK latency percentiles are the highest of the parts'", len(reps)))
	return m
}

func maxLatency(a, b loadgen.Latency) loadgen.Latency {
	m := loadgen.Latency{Count: a.Count + b.Count, P50: max(a.P50, b.P50), P90: max(a.P90, b.P90), P99: max(a.P99, b.P99),
		P999: max(a.P999, b.P999), Max: max(a.Max, b.Max)}
	if m.Count > 0 {
		m.Mean = (a.Mean*float64(a.Count) + b.Mean*float64(b.Count)) / float64(m.Count)
	}
	m.Percentiles = a.Percentiles
	if len(b.Percentiles) > len(a.Percentiles) {
		m.Percentiles = b.Percentiles
	}
	if len(a.Percentiles) == len(b.Percentiles) {
		m.Percentiles = make([]loadgen.Percentile, len(a.Percentiles))
		for i := range a.Percentiles {
			m.Percentiles[i] = loadgen.Percentile{P: a.Percentiles[i].P, Ms: max(a.Percentiles[i].Ms, b.Percentiles[i].Ms)}
		}
	}
	return m
}

// ownedPartitions reads the partitions a relay owns from its /metrics (ownedMetric's series of
// value 1, by their partition label); found is false when the relay has no such metric.
func ownedPartitions(ctx context.Context, admin string) (owned []int, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("scrape %s: %w", ownedMetric, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("scrape %s: %s", ownedMetric, resp.Status)
	}
	owned, found, err = parseOwned(resp.Body)
	return owned, found, err
}

// parseOwned reads ownedMetric's series from a Prometheus text exposition: the partitions whose
// series is 1, sorted.
func parseOwned(r io.Reader) (owned []int, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), ownedMetric+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "}")
		if !ok {
			continue
		}
		found = true
		v, err := strconv.ParseFloat(strings.TrimSpace(strings.Fields(value + " x")[0]), 64)
		if err != nil || v != 1 {
			continue
		}
		for l := range strings.SplitSeq(labels, ",") {
			k, val, _ := strings.Cut(l, "=")
			if strings.TrimSpace(k) != "partition" {
				continue
			}
			if p, err := strconv.Atoi(strings.Trim(val, `"`)); err == nil {
				owned = append(owned, p)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, false, err
	}
	slices.Sort(owned)
	return owned, found, nil
}

// watchedDevices are the devices of devs whose partition (of n) is among owned; all of them
// when owned is nil (ownership unknown).
func watchedDevices(devs map[string]loadgen.DeviceStats, owned []int, n int) []string {
	var w []string
	for id := range devs {
		if owned == nil || slices.Contains(owned, cluster.Partition(id, n)) {
			w = append(w, id)
		}
	}
	slices.Sort(w)
	return w
}

// writeClusterTable: cluster mode's medians divided by Badger mode's (same load, same
// invocation), then both sides' figures and the NATS nodes' CPU per message.
func writeClusterTable(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| cluster scenario | relays / NATS nodes / replicas | runs | acked msgs/s ÷ badger | delivered msgs/s ÷ badger | relay CPU/msg ÷ badger | ACK p50 ÷ badger | ACK p99 ÷ badger | cluster: acked / delivered msgs/s | cluster: relay CPU/msg | NATS CPU/msg (bench process) | cluster: ACK p50 / p99 | badger: acked / delivered msgs/s, relay CPU/msg, ACK p50 / p99 | lost | dups |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		cr := r.Cluster
		f, runs, vs, badger := figuresOf(r, 0), 1, BadgerRatios{}, "–"
		if c := r.Floors; c != nil {
			f, runs = c.Relay, c.Count
			if c.VsBadger != nil {
				vs = *c.VsBadger
			}
			if b := c.Badger; b != nil {
				badger = fmt.Sprintf("%s / %s, %s, %s / %s", Count(b.AckedPerSec), Count(b.DeliveredPerSec), Micros(b.CPUPerMsgUs), Millis(b.AckP50Ms), Millis(b.AckP99Ms))
			}
		}
		nats := "–"
		if vs.NATSCPUPerMsgUs > 0 {
			nats = Micros(vs.NATSCPUPerMsgUs)
		}
		fmt.Fprintf(w, "| %s | %d / %d / R%d | %d | **%s** | **%s** | **%s** | %s | %s | %s / %s | %s | %s | %s / %s | %s | %d | %d |\n",
			r.Scenario, cr.Relays, cr.NATSNodes, cr.Replicas, runs, Ratio(vs.Acked), Ratio(vs.Delivered), Ratio(vs.CPUPerMsg), Ratio(vs.AckP50), Ratio(vs.AckP99),
			Count(f.AckedPerSec), Count(f.DeliveredPerSec), Micros(f.CPUPerMsgUs), nats, Millis(f.AckP50Ms), Millis(f.AckP99Ms), badger, r.Account.Lost, r.Account.Dups)
	}
}

// writeFailoverTable: a failover scenario's kills and the time until the killed relay's
// partitions delivered again.
func writeFailoverTable(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| failover scenario | relays / NATS nodes / replicas | lease | kills done | partitions owned by the killed relay (median) | kill → every partition delivering again p50 / max | the same wait without a kill (p50) | kill → partitions taken over p50 / max | measured by | messages acked | delivered | lost | duplicates |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		f, cr := r.Failover, r.Cluster
		if cr == nil {
			cr = &ClusterResult{}
		}
		var owned []float64
		for _, k := range f.Runs {
			owned = append(owned, float64(k.Owned))
		}
		owns := "–"
		if m := median(owned); m >= 0 && len(owned) > 0 {
			owns = strconv.FormatFloat(m, 'f', 0, 64)
		}
		take := "–"
		if f.TakeoverMaxMs > 0 {
			take = Millis(f.TakeoverP50Ms) + " / " + Millis(f.TakeoverMaxMs)
		}
		fmt.Fprintf(w, "| %s | %d / %d / R%d | %s | %d of %d | %s | %s / %s | %s | %s | %s | %d | %d | %d | %d |\n",
			r.Scenario, cr.Relays, cr.NATSNodes, cr.Replicas, f.Lease, len(f.Runs), f.Kills, owns,
			Millis(f.RecoverP50Ms), Millis(f.RecoverMaxMs), Millis(f.BaselineP50Ms), take, f.Ownership, r.Account.Expected, r.Account.Received, r.Account.Lost, r.Account.Dups)
	}
}

// writeFailoverKills: one row per kill of a failover result.
func writeFailoverKills(w io.Writer, r *Result) {
	fmt.Fprintln(w, "| kill | at | partitions owned | devices watched | every one delivering again | median device | without a kill | taken over | restarted: ready after the kill | owning again after ready |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for i, k := range r.Failover.Runs {
		fmt.Fprintf(w, "| %d | %.1f s | %d | %d | %s | %s | %s | %s | %s | %s |\n", i+1, k.AtSeconds, k.Owned, k.Watched,
			Millis(k.RecoverMs), Millis(k.DeviceP50Ms), Millis(k.BaselineMs), Millis(k.TakeoverMs), Millis(k.ReadyMs), Millis(k.RegainMs))
	}
}
