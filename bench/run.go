package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Options configure a bench run.
type Options struct {
	RelayBin   string    // the fleetrelay binary
	ResultsDir string    // where result files are read (rate_of) and written
	Log        io.Writer // progress lines (nil: none)
	// DrainTimeout bounds the wait for the sink to receive everything after the load (default 5m).
	DrainTimeout time.Duration
	// DrainQuiet ends that wait when the sink received nothing new for this long (default 30s):
	// acknowledged messages are missing.
	DrainQuiet time.Duration
	// ProfileDir, when set, receives CPU profiles of the relay (over its admin listener's
	// /debug/pprof) and of this process (loadgen and sink) taken during the load, and the
	// relay's heap profile at its end: <scenario>-relay.cpu.pprof, <scenario>-bench.cpu.pprof,
	// <scenario>-relay.heap.pprof, with its /metrics at the end of the load and a 5 s execution
	// trace from the middle of it (<scenario>-relay.trace.pprof, for go tool trace). A cluster
	// scenario's Badger-mode runs write theirs as <scenario>-badger-….
	ProfileDir string
	// LoadgenBin is the loadgen binary whose floor command serves the floors (RunFloor, Measure).
	LoadgenBin string
	// Count is how many times Measure runs the relay and each floor, alternating (default 1).
	Count int
	// Watch, when set, gets one line per second while the fleet runs: what the fleet sent and
	// had acknowledged, what the sink received, and the relay's memory (make demo).
	Watch io.Writer
	// Kills, if positive, overrides a crash scenario's crash.kills (bench -kills).
	Kills int
	// Backlog, if positive, overrides a backlog scenario's backlog.messages (bench -backlog).
	Backlog int64
	// SinkChaos makes the sink lose or duplicate messages on purpose after accepting them: for
	// the harness's own tests, which check that the accounting catches it.
	SinkChaos loadgen.Chaos
}

// Result is one scenario's measurements.
type Result struct {
	Scenario    string    `json:"scenario"`
	Description string    `json:"description"`
	When        time.Time `json:"when"`
	Machine     Machine   `json:"machine"`
	Config      Scenario  `json:"config"`

	// Target is what was measured: "relay", or a floor ("ack", "pipeline"). The Relay* fields
	// below are that process's, whichever it was.
	Target string `json:"target,omitempty"`

	Devices         int     `json:"devices"`
	RatePerDevice   float64 `json:"ratePerDevice"` // frames/s per device asked for (0: as fast as acknowledged)
	FramesAcked     int64   `json:"framesAcked"`
	MessagesAcked   int64   `json:"messagesAcked"`
	AckedPerSec     float64 `json:"ackedPerSec"`     // messages acknowledged per second of load
	Delivered       int64   `json:"delivered"`       // distinct messages the sink received
	DeliveredPerSec float64 `json:"deliveredPerSec"` // delivered / (load + drain) seconds
	DrainSeconds    float64 `json:"drainSeconds"`    // after the load, until the sink had everything

	AckLatency            loadgen.Latency        `json:"ackLatency"` // ms, from due
	AckLatencyUncorrected loadgen.Latency        `json:"ackLatencyUncorrected"`
	EndToEnd              loadgen.LatencySummary `json:"endToEndUs"` // µs, device send to sink arrival
	Account               loadgen.AccountReport  `json:"account"`

	RelayCPUSeconds float64 `json:"relayCpuSeconds"` // user+system during load and drain
	RelayCPUPerMsg  float64 `json:"relayCpuPerMsgUs"`
	CPUPerFrame     float64 `json:"cpuPerFrameUs"` // CPU µs per frame acknowledged (NDJSON: per line written)
	RelayRSSPeakMiB float64 `json:"relayRssPeakMiB"`
	RelayRSSIdleMiB float64 `json:"relayRssIdleMiB"`         // before devices connected
	BenchCPUSeconds float64 `json:"benchCpuSeconds"`         // loadgen and sink (this process) during load and drain
	RSSPerConnKiB   float64 `json:"rssPerConnKiB,omitempty"` // idle scenario: (RSS connected - idle) / devices

	// Sustained compares what was acknowledged with what was delivered while the fleet sent.
	Sustained *Sustained `json:"sustained,omitempty"`
	// Floors holds, when the scenario has floors, the figures of every run (relay and floors,
	// alternating), their medians and the relay's ratios to its floors. This Result's other
	// fields are those of one relay run (Floors.Shown), the one with the median figure.
	Floors *Comparison `json:"floors,omitempty"`

	Churn   *ChurnResult   `json:"churn,omitempty"`   // the control plane's work during the load
	Crash   *CrashResult   `json:"crash,omitempty"`   // crash scenarios
	Backlog *BacklogResult `json:"backlog,omitempty"` // backlog scenarios
	Link    *LinkResult    `json:"link,omitempty"`    // device-link scenarios
	// Cluster is what a run in cluster mode measured of the cluster (relay.cluster).
	Cluster *ClusterResult `json:"cluster,omitempty"`
	// Failover is a failover scenario's kills and how long the killed relay's partitions took
	// to deliver again.
	Failover *FailoverResult   `json:"failover,omitempty"`
	Sink     loadgen.SinkStats `json:"sink"` // the sink's counters at the end

	Notes         []string         `json:"notes,omitempty"`
	Timeline      []loadgen.Second `json:"timeline"`
	SinkPerSecond []int64          `json:"sinkPerSecond"`
	RelayRSSMiB   []float64        `json:"relayRssMiB"` // one sample per second
}

// Machine describes where a result was measured.
type Machine struct {
	CPUs    int    `json:"cpus"`
	Model   string `json:"model"`
	Go      string `json:"go"`
	FDLimit int    `json:"fdLimit"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), FDLimit: loadgen.FDLimit()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				m.Model = strings.TrimSpace(line[strings.Index(line, ":")+1:])
				break
			}
		}
	}
	return m
}

// env is what a scenario runs in: a sink, a temporary directory with the relay's config and
// data directory, and the relay's addresses.
type env struct {
	sink                           *loadgen.Sink
	dir, cfgPath, dataDir          string
	devAddr, ndjsonAddr, adminAddr string
	telAddr, telUDPAddr            string // the Teltonika listeners (Teltonika scenarios)
	key                            string // admin.bootstrap_key: a super key for the API and pprof
	log                            io.Writer
	cluster                        *clusterConf // cluster mode's section of the config, nil in Badger mode
	shared                         bool         // another relay's env, sharing the first's sink and directory
}

// newEnv starts the sink and writes the relay's config; the admin listener is configured when
// admin is true.
func newEnv(s *Scenario, o Options, admin bool) (*env, error) {
	e := &env{log: o.Log}
	if err := e.setup(s, o, admin); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// drain waits until the sink has every message the fleet of rep had acknowledged (or the
// drain times out) and accounts for them against the acknowledgements.
func (e *env) drain(ctx context.Context, rep *loadgen.RunReport, o Options) (loadgen.AccountReport, error) {
	req := rep.AccountRequest(false)
	return loadgen.WaitAccount(ctx, req.Expect().Total(),
		func(context.Context) (int64, error) { return int64(e.sink.Stats().Unique), nil },
		func(context.Context) (loadgen.AccountReport, error) { return e.sink.Account(req.Expect()), nil },
		loadgen.DrainOptions{Quiet: o.DrainQuiet, Timeout: o.DrainTimeout})
}

func (e *env) setup(s *Scenario, o Options, admin bool) error {
	var err error
	if e.sink, err = loadgen.StartSinkWith(loadgen.SinkOptions{Addr: "127.0.0.1:0", Chaos: o.SinkChaos}); err != nil {
		return err
	}
	if e.dir, err = os.MkdirTemp("", "fleetrelay-bench-"); err != nil {
		return err
	}
	e.dataDir = filepath.Join(e.dir, "data")
	if e.devAddr, err = freeAddr(); err != nil {
		return err
	}
	if s.Load.Protocol == "ndjson" {
		if e.ndjsonAddr, err = freeAddr(); err != nil {
			return err
		}
	}
	switch s.Load.Protocol {
	case loadgen.ProtocolTeltonikaTCP:
		if e.telAddr, err = freeAddr(); err != nil {
			return err
		}
	case loadgen.ProtocolTeltonikaUDP:
		if e.telUDPAddr, err = freeUDPAddr(); err != nil {
			return err
		}
	}
	if admin {
		if e.adminAddr, err = freeAddr(); err != nil {
			return err
		}
	}
	e.cfgPath = filepath.Join(e.dir, "relay.yaml")
	e.key = newKey()
	return e.writeConfig(s)
}

// writeConfig writes the relay's config file for s.
func (e *env) writeConfig(s *Scenario) error {
	return os.WriteFile(e.cfgPath, []byte(relayConfig(s, e)), 0o600)
}

// sibling returns the env of relay n of a cluster: a directory, device and admin listeners of
// its own under e's, e's sink and key. It is removed with e.
func (e *env) sibling(s *Scenario, n int) (*env, error) {
	x := &env{sink: e.sink, dir: filepath.Join(e.dir, "relay"+strconv.Itoa(n)), key: e.key, log: e.log, shared: true}
	if err := os.MkdirAll(x.dir, 0o700); err != nil {
		return nil, err
	}
	x.dataDir = filepath.Join(x.dir, "data")
	x.cfgPath = filepath.Join(x.dir, "relay.yaml")
	var err error
	if x.devAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if x.adminAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	return x, x.writeConfig(s)
}

// close stops the sink and removes the directory, the relay's data included.
func (e *env) close() {
	if e.shared {
		return
	}
	if e.sink != nil {
		_ = e.sink.Close()
	}
	if e.dir != "" {
		removeAll(e.dir, e.log)
	}
}

// startRelay starts the relay on e's config and waits until it is ready (timeout).
func (e *env) startRelay(ctx context.Context, bin string, timeout time.Duration) (*relayProc, error) {
	return startRelay(ctx, bin, e.cfgPath, e.devAddr, e.adminAddr, timeout)
}

// startFloor starts a floor of kind (loadgen floor) on e's addresses, delivering to e's sink as
// the scenario's route would, and waits until it accepts devices.
func (e *env) startFloor(ctx context.Context, bin, kind string, s *Scenario, timeout time.Duration) (*relayProc, error) {
	args := []string{"floor", "-" + kind, "-listen", e.devAddr}
	if e.ndjsonAddr != "" {
		args = append(args, "-ndjson", e.ndjsonAddr)
	}
	if e.telAddr != "" {
		args = append(args, "-teltonika", e.telAddr)
	}
	if e.telUDPAddr != "" {
		args = append(args, "-teltonika-udp", e.telUDPAddr)
	}
	if kind == FloorPipeline {
		args = append(args, "-sink", e.sink.URL()+"/ingest", "-max-messages", strconv.Itoa(s.Relay.MaxMessages),
			"-linger", time.Duration(s.Relay.Linger).String(), "-concurrency", strconv.Itoa(s.Relay.Concurrency))
	}
	return startProc(ctx, "floor", exec.Command(bin, args...), e.devAddr, "", timeout)
}

// prepare fills in o's defaults and returns a progress logger whose lines start with name, and
// the result to fill in.
func prepare(s *Scenario, o *Options, name string) (func(string, ...any), *Result) {
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Minute
	}
	if o.DrainQuiet <= 0 {
		o.DrainQuiet = 30 * time.Second
	}
	log := o.Log
	logf := func(format string, a ...any) {
		if log != nil {
			fmt.Fprintf(log, "[%s] "+format+"\n", append([]any{name}, a...)...)
		}
	}
	return logf, &Result{Scenario: s.Name, Description: s.Description, When: time.Now().UTC(), Machine: machine(), Config: *s}
}

// Run runs one scenario end to end.
func Run(ctx context.Context, s *Scenario, o Options) (*Result, error) {
	logf, res := prepare(s, &o, s.Name)
	switch {
	case s.Crash != nil:
		return runCrash(ctx, s, o, res, logf)
	case s.Backlog != nil:
		return runBacklog(ctx, s, o, res, logf)
	case s.Link != nil:
		return runLink(ctx, s, o, res, logf)
	case s.Failover != nil:
		return runFailover(ctx, s, o, res, logf)
	}

	return runOnce(ctx, s, o, res, TargetRelay, logf)
}

// Targets of a run: the relay, or one of its floors (Scenario.Floors).
const (
	TargetRelay   = "relay"
	FloorAck      = "ack"      // loadgen floor -ack
	FloorPipeline = "pipeline" // loadgen floor -pipeline
)

// RunFloor runs one scenario against one of its floors (FloorAck or FloorPipeline) instead of
// the relay: the same fleet, sink and /proc accounting, the floor a process of its own
// (Options.LoadgenBin floor).
func RunFloor(ctx context.Context, s *Scenario, kind string, o Options) (*Result, error) {
	if kind == FloorBadger {
		return runBadger(ctx, s, o)
	}
	if kind != FloorAck && kind != FloorPipeline {
		return nil, fmt.Errorf("floor %q: want %s or %s", kind, FloorAck, FloorPipeline)
	}
	if o.LoadgenBin == "" {
		return nil, errors.New("floor: Options.LoadgenBin is not set")
	}
	logf, res := prepare(s, &o, s.Name+" "+kind+" floor")
	return runOnce(ctx, s, o, res, kind, logf)
}

// runBadger runs a cluster scenario's load once against the relay in Badger mode (FloorBadger):
// the same scenario without relay.cluster.
func runBadger(ctx context.Context, s *Scenario, o Options) (*Result, error) {
	b := *s
	b.Relay.Cluster, b.Floors = nil, nil
	logf, res := prepare(&b, &o, s.Name+" badger")
	return runOnce(ctx, &b, o, res, FloorBadger, logf)
}

// runOnce runs the load of s once against target (the relay or a floor).
func runOnce(ctx context.Context, s *Scenario, o Options, res *Result, target string, logf func(string, ...any)) (*Result, error) {
	res.Target = target
	rate := s.Load.Rate
	if s.Load.RateOf != "" {
		base, err := ReadResult(filepath.Join(o.ResultsDir, s.Load.RateOf+".json"))
		if err != nil {
			return nil, fmt.Errorf("load.rate_of %q: %w (run that scenario first)", s.Load.RateOf, err)
		}
		// The measured maximum is what the whole pipeline sustained: delivered, not just acknowledged.
		rate = base.DeliveredPerSec * s.Load.RateFraction / float64(s.Load.Devices) / float64(s.Load.Records)
		res.Notes = append(res.Notes, fmt.Sprintf("rate: %.0f%% of %s's %s msgs/s delivered end to end", s.Load.RateFraction*100, s.Load.RateOf, Count(base.DeliveredPerSec)))
	}
	res.RatePerDevice = rate

	relayRun := target == TargetRelay || target == FloorBadger // the relay, in cluster or Badger mode
	e, err := newEnv(s, o, relayRun)                           // the relay's admin listener: its backlog metric, profiles
	if err != nil {
		return nil, err
	}
	defer e.close()
	sink, devAddr, ndjsonAddr, adminAddr := e.sink, e.devAddr, e.ndjsonAddr, e.adminAddr
	var relay proc
	var cl *clusterRun
	switch {
	case relayRun && s.Relay.Cluster != nil:
		if cl, err = startCluster(ctx, s, o, e, logf); err == nil {
			defer cl.close()
			relay = cl.group
		}
	case relayRun:
		relay, err = e.startRelay(ctx, o.RelayBin, 30*time.Second)
	default:
		relay, err = e.startFloor(ctx, o.LoadgenBin, target, s, 30*time.Second)
	}
	if err != nil {
		return nil, err
	}
	defer relay.stop()
	fleetAddrs := []string{devAddr}
	if cl != nil {
		fleetAddrs = cl.fleetAddrs()
	}
	time.Sleep(200 * time.Millisecond) // let the process settle before the idle reading
	res.RelayRSSIdleMiB = float64(relay.rss()) / (1 << 20)
	samp := sample(time.Second, func() float64 { return float64(relay.rss()) / (1 << 20) })

	if err := setSinkFaults(sink, s); err != nil {
		return nil, err
	}
	payload, err := loadgen.NewPayload(s.Load.Payload)
	if err != nil {
		return nil, err
	}
	cpu0, self0 := relay.cpu(), selfCPU()
	var prof *profiler
	if o.ProfileDir != "" && relayRun {
		name := s.Name
		if target == FloorBadger { // beside the cluster run's, not over them
			name += "-badger"
		}
		prof = startProfiles(o.ProfileDir, name, s, adminAddr, e.key, logf)
	}
	var churn *churner
	if s.Churn != nil && relayRun {
		churn = startChurn(ctx, s.Churn, adminAddr, e.key, "B", s.Load.Devices)
	}
	var acked, sent, ackedRecords atomic.Int64
	var flow *flowSampler
	tel := s.Load.Protocol == loadgen.ProtocolTeltonikaTCP || s.Load.Protocol == loadgen.ProtocolTeltonikaUDP
	if !s.Relay.NoRoute && !s.Load.Idle && target != FloorAck {
		count, records := &acked, int64(s.Load.Records)
		switch {
		case s.Load.Protocol == "ndjson":
			count = &sent // no acknowledgements: what was written stands for what was acknowledged
		case tel:
			count, records = &ackedRecords, 1
		}
		flow = sampleFlow(ctx, count, records, sink, adminAddr)
	}
	if tel {
		fleetAddrs = []string{e.telAddr}
	}
	logf("load: %d devices at %s for %v", s.Load.Devices, rateText(rate), time.Duration(s.Load.Duration))
	rep, err := runFleet(ctx, fleetAddrs, loadgen.RunOptions{
		Devices: s.Load.Devices, Rate: rate, Poisson: s.Load.Poisson, Records: s.Load.Records,
		Payload: payload, Window: s.Load.Window, RampUp: time.Duration(s.Load.Ramp), Duration: time.Duration(s.Load.Duration),
		Idle: s.Load.Idle, Prefix: "B", NDJSONAddr: ndjsonAddr, OnSecond: watch(o.Watch, sink, relay.rss),
		Acked: &acked, Sent: &sent,
		Protocol: s.Load.Protocol, RecordsMax: s.Load.RecordsMax, UDPAddr: e.telUDPAddr, AckedRecords: &ackedRecords,
		OnConnected: func() {
			if s.Load.Idle {
				res.RSSPerConnKiB = float64(relay.rss()) // fixed up below
			}
		},
	})
	if err != nil {
		if flow != nil {
			flow.stop()
		}
		if churn != nil {
			churn.stop(0)
		}
		return nil, fmt.Errorf("load: %w", err)
	}
	loadEnd := time.Now()
	atLoadEnd := int64(sink.Stats().Unique)
	if churn != nil {
		res.Churn = churn.stop(rep.SendSeconds)
		note := fmt.Sprintf("churn: %s device updates/s answered 2xx (asked %s), p50 %.1f ms, p99 %.1f ms, %d errors",
			Count(res.Churn.PerSec), Count(res.Churn.Asked), res.Churn.P50Ms, res.Churn.P99Ms, res.Churn.Errors)
		if res.Churn.LastErr != "" {
			note += " (last: " + res.Churn.LastErr + ")"
		}
		res.Notes = append(res.Notes, note)
		logf("%s", note)
	}
	if flow != nil {
		flow.stop()
		res.Sustained = flow.sustained(rep.Start, time.Duration(s.Load.Ramp), loadEnd)
	}
	if prof != nil {
		prof.finish()
	}
	res.Devices = rep.Devices
	res.Notes = append(res.Notes, rep.Notes...)
	res.FramesAcked = rep.FramesAcked
	res.MessagesAcked = rep.FramesAcked * int64(s.Load.Records)
	if t := rep.Teltonika; t != nil { // packets of varying size: count their records
		res.MessagesAcked = t.RecordsAcked
		res.Notes = append(res.Notes, fmt.Sprintf("%s: a frame is an AVL packet (%.1f records on average); %d resends, %d reconnects",
			t.Protocol, float64(t.RecordsAcked)/float64(max(t.Packets, 1)), t.Resends, t.Reconnects))
	}
	if rep.Lines != nil { // NDJSON: nothing is acknowledged; what was written is what is expected
		res.MessagesAcked = rep.RecordsSent
		res.FramesAcked = rep.FramesSent // lines: each its own frame
		res.Notes = append(res.Notes, "ndjson: no acknowledgements; 'acked' is what the fleet wrote, a frame is a line")
	}
	res.AckedPerSec = float64(res.MessagesAcked) / rep.SendSeconds
	res.AckLatency, res.AckLatencyUncorrected = rep.AckLatency, rep.AckLatencyUncorrected
	res.Timeline = rep.Timeline
	if s.Load.Idle && rep.Devices > 0 {
		res.RSSPerConnKiB = (res.RSSPerConnKiB - res.RelayRSSIdleMiB*(1<<20)) / float64(rep.Devices) / 1024
	}

	// Drain: wait until every acknowledged message arrived (or nothing arrives for a while). The
	// sink's distinct count is cheap to read; the full account walks every message under the
	// sink's lock, so it runs only once the count says everything may be there. The ACK floor
	// delivers nothing: it has no drain and no account.
	expect := rep.AccountRequest(false).Expect() // Teltonika: one "frame" per record counter
	account := func() loadgen.AccountReport { return sink.Account(expect) }
	want := expect.Total()
	if rep.Lines != nil {
		account = func() loadgen.AccountReport { return accountLines(sink, rep.Lines, s.Load.Records) }
		want = 0
		for _, n := range rep.Lines {
			want += n * int64(s.Load.Records)
		}
	}
	delivers := !s.Relay.NoRoute && target != FloorAck
	deadline := time.Now().Add(o.DrainTimeout)
	last, lastChange := int64(-1), time.Now()
	for delivers {
		got := int64(sink.Stats().Unique)
		if got >= want && account().Lost == 0 {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastChange) > o.DrainQuiet {
			res.Notes = append(res.Notes, "drain ended with messages missing")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	drainEnd := time.Now()
	res.DrainSeconds = drainEnd.Sub(loadEnd).Seconds()
	res.RelayCPUSeconds = relay.cpu() - cpu0
	res.BenchCPUSeconds = selfCPU() - self0
	if prof != nil {
		prof.done()
	}
	samp.stop()
	res.RelayRSSPeakMiB = float64(relay.peakRSS()) / (1 << 20)
	res.RelayRSSMiB = samp.values()

	snap := sink.Snapshot()
	res.Sink = snap.SinkStats
	if delivers {
		res.Account = account()
		res.Delivered = res.Account.Received
		res.DeliveredPerSec = float64(res.Delivered) / drainEnd.Sub(rep.Start).Seconds()
	}
	res.EndToEnd = snap.LatencyUs
	res.SinkPerSecond = snap.PerSecond
	if n := max(res.Delivered, res.MessagesAcked); n > 0 && !s.Load.Idle {
		res.RelayCPUPerMsg = res.RelayCPUSeconds / float64(n) * 1e6
	}
	if su := res.Sustained; su != nil && res.DrainSeconds >= 1 && res.Delivered > atLoadEnd {
		su.DrainPerSec = float64(res.Delivered-atLoadEnd) / res.DrainSeconds
	}
	if res.FramesAcked > 0 && !s.Load.Idle {
		res.CPUPerFrame = res.RelayCPUSeconds / float64(res.FramesAcked) * 1e6
	}
	if cl != nil {
		cl.finish(res)
		logf("cluster: this process (fleet, sink, NATS nodes) %s CPU per msg; NATS stores %s on disk", Micros(res.Cluster.BenchCPUPerMsgUs), MiB(res.Cluster.NATSDiskMiB))
	}
	logf("acked %s msgs/s, delivered %d, lost %d, CPU %s per frame, %s per msg, RSS peak %s",
		Count(res.AckedPerSec), res.Delivered, res.Account.Lost, Micros(res.CPUPerFrame), Micros(res.RelayCPUPerMsg), MiB(res.RelayRSSPeakMiB))
	return res, nil
}

// setSinkFaults makes the sink answer as the scenario's sink section says, from now on.
func setSinkFaults(sink *loadgen.Sink, s *Scenario) error {
	if s.Sink.DownFor <= 0 && s.Sink.Delay <= 0 {
		return nil
	}
	f := loadgen.Faults{Delay: time.Duration(s.Sink.Delay)}
	if s.Sink.DownFor > 0 {
		f.Outages = []loadgen.Outage{{From: time.Duration(s.Sink.DownAt), Duration: time.Duration(s.Sink.DownFor)}}
	}
	return sink.SetFaults(f)
}

// watch returns loadgen's per-second hook for Options.Watch (nil without a writer); rss is the
// relay's.
func watch(w io.Writer, sink *loadgen.Sink, rss func() int64) func(loadgen.Second) {
	if w == nil {
		return nil
	}
	var lastUnique int
	return func(s loadgen.Second) {
		st := sink.Stats()
		fmt.Fprintf(w, "%4.0fs  devices %5d  sent %7d/s  acked %7d/s  ack p99 %7.2f ms  |  sink %7d/s  total %9d  dups %d  |  relay RSS %4.0f MiB\n",
			s.T, s.Connected, s.Sent, s.Acked, s.P99ms, st.Unique-lastUnique, st.Unique, st.Dups, float64(rss())/(1<<20))
		lastUnique = st.Unique
	}
}

// accountLines compares, per identity, the lines written with the distinct messages received.
func accountLines(sink *loadgen.Sink, lines map[string]int64, records int) loadgen.AccountReport {
	var a loadgen.AccountReport
	got := sink.Devices()
	for id, n := range lines {
		want := n * int64(records)
		d := got[id]
		a.Expected += want
		a.Received += min(d.Unique, want)
		a.Dups += d.Dups
		a.Reordered += d.Reordered
		if d.Unique < want {
			a.LostDevices++
		}
		if d.Unique > want {
			a.Extra += d.Unique - want
		}
	}
	a.Lost = a.Expected - a.Received
	return a
}

func rateText(r float64) string {
	if r == 0 {
		return "max"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + " frames/s"
}

// freeUDPAddr is a loopback UDP address no socket uses now.
func freeUDPAddr() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

// freeAddr is a loopback TCP address no socket uses now. Its port is below Linux's ephemeral
// range (32768 and up): a port the kernel hands out (":0") can be taken, before the relay
// binds it or between a kill and a restart, as the local port of an outgoing connection (the
// NATS nodes' routes and clients in this process, the fleet's devices).
func freeAddr() (string, error) {
	var last error
	for range 500 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+mrand.IntN(12000)))
		if err != nil {
			last = err
			continue
		}
		defer l.Close()
		return l.Addr().String(), nil
	}
	return "", fmt.Errorf("no free port from 20000 to 31999 on 127.0.0.1: %w", last)
}

// relayConfig is the relay's config file for s.
func relayConfig(s *Scenario, e *env) string {
	dataDir, devAddr, ndjsonAddr, adminAddr, key, sinkURL := e.dataDir, e.devAddr, e.ndjsonAddr, e.adminAddr, e.key, e.sink.URL()
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\nlog:\n  level: warn\n", dataDir)
	fmt.Fprintf(&b, "devices:\n  native:\n    tcp: %s\n    udp: \"\"\n  ack: %s\n  max_connections: %d\n", devAddr, s.Relay.Ack, max(s.Load.Devices+16, 10000))
	if ndjsonAddr != "" {
		fmt.Fprintf(&b, "  ndjson:\n    tcp: %s\n", ndjsonAddr)
	}
	if e.telAddr != "" || e.telUDPAddr != "" {
		fmt.Fprintf(&b, "  teltonika:\n    tcp: %q\n    udp: %q\n", e.telAddr, e.telUDPAddr)
	}
	fmt.Fprintf(&b, "store:\n  sync: %t\nadmin:\n  listen: %q\n  bootstrap_key: %q\ndelivery:\n  allow_private_networks: true\n", s.Relay.Sync, adminAddr, key)
	if s.Relay.MaxBackoff > 0 {
		fmt.Fprintf(&b, "  retry:\n    max_backoff: %s\n", time.Duration(s.Relay.MaxBackoff))
	}
	if e.cluster != nil {
		writeClusterConfig(&b, e.cluster)
	}
	if !s.Relay.NoRoute {
		fmt.Fprintf(&b, "routes:\n  - name: bench\n    url: %s/ingest\n    concurrency: %d\n    batch:\n      max_messages: %d\n      linger: %s\n",
			sinkURL, s.Relay.Concurrency, s.Relay.MaxMessages, time.Duration(s.Relay.Linger))
		if s.Relay.Format != "" {
			fmt.Fprintf(&b, "    format: %s\n", s.Relay.Format)
		}
		if s.Relay.Template != "" {
			fmt.Fprintf(&b, "    template: %q\n", s.Relay.Template)
		}
	}
	return b.String()
}

// relayProc is the relay (or a floor) running as a child process.
type relayProc struct {
	name    string // relay, floor
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process exited; err is then set
	err     error
	started time.Time // exec
	ready   time.Time // device listener accepting and, with an admin listener, /healthz ok
}

// startRelay starts the relay binary on cfgPath and waits until it accepts devices on devAddr
// and, with adminAddr set, answers /healthz with 200; it gives up after timeout.
func startRelay(ctx context.Context, bin, cfgPath, devAddr, adminAddr string, timeout time.Duration) (*relayProc, error) {
	return startProc(ctx, "relay", exec.Command(bin, "-config", cfgPath), devAddr, adminAddr, timeout)
}

// startProc starts cmd (the relay or a floor, named name) and waits until it accepts devices
// on devAddr and, with adminAddr set, answers /healthz with 200; it gives up after timeout.
func startProc(ctx context.Context, name string, cmd *exec.Cmd, devAddr, adminAddr string, timeout time.Duration) (*relayProc, error) {
	cmd.Stderr = os.Stderr
	p := &relayProc{name: name, cmd: cmd, done: make(chan struct{}), started: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	if err := p.waitReady(ctx, devAddr, adminAddr, timeout); err != nil {
		p.stop()
		return nil, err
	}
	p.ready = time.Now()
	return p, nil
}

func (p *relayProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu is the relay's user+system CPU time in seconds, from /proc/PID/stat.
func (p *relayProc) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	return statCPU(b)
}

func (p *relayProc) status(key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func (p *relayProc) rss() int64     { return p.status("VmRSS") }
func (p *relayProc) peakRSS() int64 { return p.status("VmHWM") }

type sampler struct {
	mu   sync.Mutex
	rss  []float64
	quit chan struct{}
	done chan struct{}
}

// sample records f (the relay's RSS in MiB) every interval until stop.
func sample(every time.Duration, f func() float64) *sampler {
	s := &sampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				s.mu.Lock()
				s.rss = append(s.rss, f())
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *sampler) stop() { close(s.quit); <-s.done }

func (s *sampler) values() []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]float64(nil), s.rss...)
}

// ReadResult reads a result file.
func ReadResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}
