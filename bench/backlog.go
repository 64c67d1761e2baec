package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// backlogMetric is the relay's queue depth: stored for the route, not yet delivered.
const backlogMetric = "fleetrelay_route_backlog_messages"

// BacklogResult is what a backlog scenario measured: relay memory with and without a backlog,
// a restart with it, and its drain.
type BacklogResult struct {
	Target  int64 `json:"target"`  // queued messages asked for
	Backlog int64 `json:"backlog"` // fleetrelay_route_backlog_messages once the fleet stopped and its ACKs were in

	Idle      Mem     `json:"idle"`      // no backlog: the relay started, before the load
	AtBacklog Mem     `json:"atBacklog"` // the fleet stopped, its ACKs in, backlog.settle later
	PeakMiB   float64 `json:"peakMiB"`   // VmHWM of the process that built the backlog
	// AnonBytesPerMessage is RssAnon's growth from idle to the backlog per queued message;
	// RSSBytesPerMessage the same of VmRSS, which includes the store's mapped files.
	AnonBytesPerMessage float64 `json:"anonBytesPerMessage"`
	RSSBytesPerMessage  float64 `json:"rssBytesPerMessage"`
	// MarginalAnonBytesPerMessage is RssAnon's growth per message between the first sample at a
	// fifth of the target or more and the backlog: the cost of one more queued message once
	// the relay's in-memory queue is full and the load's own memory has grown.
	MarginalAnonBytesPerMessage float64 `json:"marginalAnonBytesPerMessage"`
	DiskMiB                     float64 `json:"diskMiB"` // the data directory on disk at the backlog

	StopSeconds       float64 `json:"stopSeconds"`       // SIGTERM → exit, with the backlog
	StartSeconds      float64 `json:"startSeconds"`      // exec → device listener accepting and /healthz ok
	BacklogAfterStart int64   `json:"backlogAfterStart"` // the metric, backlog.settle after the start
	AtStart           Mem     `json:"atStart"`           // when the restarted relay was ready
	AfterStart        Mem     `json:"afterStart"`        // backlog.settle later

	DrainSeconds float64 `json:"drainSeconds"` // endpoint back → the sink has every acknowledged message
	DrainPerSec  float64 `json:"drainPerSec"`  // messages delivered per second of that
	DrainPeakMiB float64 `json:"drainPeakMiB"` // VmHWM of the restarted process, start-up and drain

	Samples []BacklogSample `json:"samples"` // about one per second while the backlog built
}

// BacklogSample is the relay's backlog and memory at one moment of the build-up.
type BacklogSample struct {
	T       float64 `json:"t"` // seconds since the load started
	Backlog int64   `json:"backlog"`
	Mem
}

// runBacklog runs a backlog scenario: the endpoint answers 503 while the fleet sends until it
// has sent backlog.messages, all of which the relay acknowledges and queues (its backlog metric,
// read once the ACKs are in, says how many); memory is read before the load and at the backlog; the relay is stopped with SIGTERM and started again on the same directory (start-up
// time and memory); then the endpoint comes back and the drain is timed and checked against
// every device's acknowledged seqs.
func runBacklog(ctx context.Context, s *Scenario, o Options, res *Result, logf func(string, ...any)) (*Result, error) {
	b := *s.Backlog
	if o.Backlog > 0 {
		b.Messages = o.Backlog
	}
	res.Config.Backlog = &b
	br := &BacklogResult{Target: b.Messages}
	res.Backlog = br
	res.RatePerDevice = s.Load.Rate
	settle := time.Duration(b.Settle)

	e, err := newEnv(s, o, true)
	if err != nil {
		return nil, err
	}
	defer e.close()
	e.sink.SetStatus(func(string, []byte) int { return 503 }) // the endpoint is down
	first, err := e.startRelay(ctx, o.RelayBin, time.Minute)
	if err != nil {
		return nil, err
	}
	var cur atomic.Pointer[relayProc]
	cur.Store(first)
	defer func() { cur.Load().stop() }()
	time.Sleep(settle)
	br.Idle = first.mem(ctx, e.adminAddr)
	res.RelayRSSIdleMiB = br.Idle.RSSMiB
	logf("idle: %s", br.Idle)
	samp := sample(time.Second, func() float64 { return float64(cur.Load().rss()) / (1 << 20) })
	defer func() {
		if samp != nil {
			samp.stop()
		}
	}()
	payload, err := loadgen.NewPayload(s.Load.Payload)
	if err != nil {
		return nil, err
	}

	// The fleet stops once it has sent the target: with the endpoint down every message sent is
	// acknowledged, so stored and queued, which the backlog metric confirms once the ACKs are in.
	// (Stopping on the metric itself overshoots: a starved relay answers /metrics late, and the
	// frames in flight are stored after the stop.) The metric and memory are sampled meanwhile.
	var sent atomic.Int64
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	every := func(d time.Duration, f func() bool) {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-loadDone:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !f() {
				return
			}
		}
	}
	wg.Add(2)
	go every(10*time.Millisecond, func() bool {
		if sent.Load()*int64(s.Load.Records) < b.Messages {
			return true
		}
		close(stop)
		return false
	})
	sampleBacklog := func() bool {
		if v, err := scrape(ctx, e.adminAddr, backlogMetric); err == nil {
			br.Samples = append(br.Samples, BacklogSample{T: time.Since(start).Seconds(), Backlog: int64(v), Mem: first.mem(ctx, e.adminAddr)})
		}
		return true
	}
	sampleBacklog()
	go every(time.Second, sampleBacklog)
	cpu0, self0 := first.cpu(), selfCPU()
	logf("load: %d devices at %s, endpoint down, until %d messages are queued (at most %v)", s.Load.Devices,
		rateText(s.Load.Rate), b.Messages, time.Duration(s.Load.Duration))
	rep, err := loadgen.Run(ctx, loadgen.RunOptions{
		Addr: e.devAddr, Devices: s.Load.Devices, Rate: s.Load.Rate, Poisson: s.Load.Poisson, Records: s.Load.Records,
		Payload: payload, Window: s.Load.Window, RampUp: time.Duration(s.Load.Ramp), Duration: time.Duration(s.Load.Duration),
		Prefix: "Q", Stop: stop, Sent: &sent, OnSecond: watch(o.Watch, e.sink, first.rss),
	})
	close(loadDone)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	loadEnd := time.Now()
	fillLoad(res, s, rep)

	// The backlog, settled.
	time.Sleep(settle)
	v, err := scrape(ctx, e.adminAddr, backlogMetric)
	if err != nil {
		return nil, fmt.Errorf("read the backlog: %w", err)
	}
	br.Backlog = int64(v)
	if br.Backlog < b.Messages {
		res.Notes = append(res.Notes, fmt.Sprintf("the backlog reached %d of %d messages in load.duration", br.Backlog, b.Messages))
	}
	if acked := rep.MessagesAcked(); br.Backlog != acked {
		res.Notes = append(res.Notes, fmt.Sprintf("backlog metric %d, messages acknowledged %d", br.Backlog, acked))
	}
	br.AtBacklog = first.mem(ctx, e.adminAddr)
	br.Samples = append(br.Samples, BacklogSample{T: time.Since(start).Seconds(), Backlog: br.Backlog, Mem: br.AtBacklog})
	br.PeakMiB = float64(first.peakRSS()) / (1 << 20)
	br.DiskMiB = float64(diskUsage(e.dataDir)) / (1 << 20)
	if br.Backlog > 0 {
		br.AnonBytesPerMessage = (br.AtBacklog.AnonMiB - br.Idle.AnonMiB) * (1 << 20) / float64(br.Backlog)
		br.RSSBytesPerMessage = (br.AtBacklog.RSSMiB - br.Idle.RSSMiB) * (1 << 20) / float64(br.Backlog)
	}
	for _, x := range br.Samples[:len(br.Samples)-1] {
		if x.Backlog >= b.Messages/5 && x.Backlog > 0 {
			if d := br.Backlog - x.Backlog; d > 0 {
				br.MarginalAnonBytesPerMessage = (br.AtBacklog.AnonMiB - x.AnonMiB) * (1 << 20) / float64(d)
			}
			break
		}
	}
	logf("backlog %d messages: %s (idle %s): %.0f B of RssAnon per queued message (%.0f B marginal), %.0f B of VmRSS; %.0f MiB on disk",
		br.Backlog, br.AtBacklog, br.Idle, br.AnonBytesPerMessage, br.MarginalAnonBytesPerMessage, br.RSSBytesPerMessage, br.DiskMiB)

	// A restart with the backlog.
	cpuFirst := first.cpu() - cpu0
	took, err := first.terminate(5 * time.Minute)
	br.StopSeconds = took.Seconds()
	if err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("stop with the backlog: %v", err))
	}
	second, err := e.startRelay(ctx, o.RelayBin, 30*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("restart with the backlog: %w", err)
	}
	cur.Store(second)
	br.StartSeconds = second.ready.Sub(second.started).Seconds()
	br.AtStart = second.mem(ctx, e.adminAddr)
	time.Sleep(settle)
	br.AfterStart = second.mem(ctx, e.adminAddr)
	if v, err := scrape(ctx, e.adminAddr, backlogMetric); err == nil {
		br.BacklogAfterStart = int64(v)
	}
	logf("stopped in %.2fs; started again in %.2fs with %d queued: %s, %s later %s", br.StopSeconds, br.StartSeconds,
		br.BacklogAfterStart, br.AtStart, settle, br.AfterStart)

	// The endpoint comes back: drain.
	drainStart := time.Now()
	e.sink.SetStatus(nil)
	a, err := e.drain(ctx, rep, o)
	if err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	drainEnd := time.Now()
	br.DrainSeconds = drainEnd.Sub(drainStart).Seconds()
	if br.DrainSeconds > 0 {
		br.DrainPerSec = float64(a.Received) / br.DrainSeconds
	}
	br.DrainPeakMiB = float64(second.peakRSS()) / (1 << 20)
	res.RelayCPUSeconds = cpuFirst + second.cpu()
	res.BenchCPUSeconds = selfCPU() - self0
	samp.stop()
	res.RelayRSSMiB = samp.values()
	samp = nil
	res.RelayRSSPeakMiB = max(br.PeakMiB, br.DrainPeakMiB)
	fillAccount(res, e.sink, a, rep.Start, loadEnd, drainEnd)
	res.DeliveredPerSec, res.DrainSeconds = br.DrainPerSec, br.DrainSeconds // delivery happens in the drain only
	if a.Lost == 0 && a.Received == 0 {
		return nil, errors.New("nothing was acknowledged")
	}
	logf("drained %d messages in %.1fs (%.0f msgs/s; peak RSS %.0f MiB): lost %d, duplicates %d",
		a.Received, br.DrainSeconds, br.DrainPerSec, br.DrainPeakMiB, a.Lost, a.Dups)
	return res, nil
}
