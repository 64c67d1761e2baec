package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// FailoverResult is what a failover scenario measured: each kill of a relay that holds no
// devices but owns partitions, and how long until every partition it owned delivered again.
type FailoverResult struct {
	Kills      int    `json:"kills"` // asked for
	Relay      int    `json:"relay"` // the relay killed, 1-based
	Lease      string `json:"lease"` // cluster.nats.lease
	Partitions int    `json:"partitions"`
	// Ownership says how the killed relay's partitions were known: "metric" (its /metrics
	// fleetrelay_cluster_partition_owned before each kill: the devices watched are those of
	// its partitions) or "delivery gaps" (no such metric: every device is watched, and the
	// figure is the longest any device waited for its next message after the kill).
	Ownership string         `json:"ownership"`
	Runs      []FailoverKill `json:"runs"`
	// Error says why the kills stopped early (a restart that failed), if they did.
	Error string `json:"error,omitempty"`

	RecoverP50Ms  float64 `json:"recoverP50Ms"` // kill → every watched device delivering again, median over the kills
	RecoverMaxMs  float64 `json:"recoverMaxMs"`
	BaselineP50Ms float64 `json:"baselineP50Ms"` // the same wait without a kill, median over the kills
	// TakeoverP50Ms and TakeoverMaxMs: kill → the other relays own every partition (metric).
	TakeoverP50Ms float64 `json:"takeoverP50Ms"`
	TakeoverMaxMs float64 `json:"takeoverMaxMs"`
	// Unrecovered counts the kills after which a watched device got nothing within the timeout
	// (or no device was in the killed relay's partitions).
	Unrecovered int `json:"unrecovered"`
}

// FailoverKill is one kill and restart.
type FailoverKill struct {
	AtSeconds float64 `json:"atSeconds"` // since the load started
	Owned     int     `json:"owned"`     // partitions the killed relay owned (-1: unknown)
	Watched   int     `json:"watched"`   // devices whose next message was waited for
	// RecoverMs is kill → every watched device's next message at the sink (-1: not within the
	// timeout); DeviceP50Ms the median over the watched devices.
	RecoverMs   float64 `json:"recoverMs"`
	DeviceP50Ms float64 `json:"deviceP50Ms"`
	// BaselineMs is the same wait without a kill, just before it: the time every watched device
	// takes to have a new message anyway (its rate, batching), the resolution of RecoverMs.
	BaselineMs float64 `json:"baselineMs"`
	TakeoverMs float64 `json:"takeoverMs"` // kill → the others own every partition (-1: unknown)
	ReadyMs    float64 `json:"readyMs"`    // kill → the restarted relay ready (after the recovery)
	RegainMs   float64 `json:"regainMs"`   // its restart → it owns partitions again (-1: unknown)
}

// OK reports whether every kill asked for was done and followed by a working restart.
func (f *FailoverResult) OK() bool { return f.Error == "" && len(f.Runs) == f.Kills }

// settleAfterKill is the pause after the killed relay died before the sink's counts are read:
// batches it had written completely before it died are counted by then and do not pass for a
// recovery.
const settleAfterKill = 50 * time.Millisecond

// runFailover runs a failover scenario: the NATS cluster and the relays of relay.cluster, the
// fleet on the relays of fleet_on, and failover.relay (which holds no devices but owns
// partitions) killed with SIGKILL failover.kills times; after each kill the sink is watched
// until every device of the partitions it owned received a message again, then it is
// restarted, and killed again once it owns partitions again. At the end the sink's account
// says whether anything acknowledged was lost.
func runFailover(ctx context.Context, s *Scenario, o Options, res *Result, logf func(string, ...any)) (*Result, error) {
	f := *s.Failover
	if o.Kills > 0 {
		f.Kills = o.Kills
	}
	res.Config.Failover = &f
	res.RatePerDevice = s.Load.Rate
	e, err := newEnv(s, o, true)
	if err != nil {
		return nil, err
	}
	defer e.close()
	cl, err := startCluster(ctx, s, o, e, logf)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	fr := &FailoverResult{Kills: f.Kills, Relay: f.Relay, Lease: cl.res.Lease, Partitions: cl.spec.Partitions, Ownership: "delivery gaps"}
	res.Failover = fr
	payload, err := loadgen.NewPayload(s.Load.Payload)
	if err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond)
	res.RelayRSSIdleMiB = float64(cl.group.rss()) / (1 << 20)
	samp := sample(time.Second, func() float64 { return float64(cl.group.rss()) / (1 << 20) })
	cpu0, self0 := cl.group.cpu(), selfCPU()

	var (
		acked    atomic.Int64
		stop     = make(chan struct{})
		loadDone = make(chan struct{})
		kwg      sync.WaitGroup
		peakRSS  int64
	)
	wait := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-loadDone:
		case <-ctx.Done():
		}
		return false
	}
	start := time.Now()
	k := &failoverKiller{ctx: ctx, cl: cl, sink: e.sink, victim: f.Relay - 1, timeout: time.Duration(f.Timeout), bin: o.RelayBin, wait: wait, logf: logf}
	kwg.Add(1)
	go func() {
		defer kwg.Done()
		defer close(stop)
		if !wait(time.Duration(s.Load.Ramp+f.Warmup)) || !k.owning() {
			return
		}
		for i := range f.Kills {
			peakRSS = max(peakRSS, cl.group.list()[k.victim].peakRSS())
			r, err := k.once(start)
			if err != nil {
				fr.Error = fmt.Sprintf("kill %d: %v", i+1, err)
				logf("%s", fr.Error)
				return
			}
			if k.found {
				fr.Ownership = "metric"
			}
			fr.Runs = append(fr.Runs, r)
			logf("kill %d/%d at %.1fs: %d partitions owned, %d devices watched; every one delivering again after %s (median device %s; without a kill just before: %s); partitions taken over after %s; restarted relay ready %s after the kill, owning partitions %s later",
				i+1, f.Kills, r.AtSeconds, r.Owned, r.Watched, msOrTimeout(r.RecoverMs, k.timeout), msOrTimeout(r.DeviceP50Ms, k.timeout),
				msOrTimeout(r.BaselineMs, k.timeout), msOrTimeout(r.TakeoverMs, k.timeout), msOrTimeout(r.ReadyMs, k.timeout), msOrTimeout(r.RegainMs, k.timeout))
			if i+1 < f.Kills && !wait(time.Duration(f.Gap)) {
				return
			}
		}
		wait(2 * time.Second) // the fleet sends on a little after the last restart
	}()

	logf("load: %d devices at %s on relays %v for at most %v; relay %d killed %d times", s.Load.Devices, rateText(s.Load.Rate),
		cl.spec.FleetOn, time.Duration(s.Load.Duration), f.Relay, f.Kills)
	rep, err := runFleet(ctx, cl.fleetAddrs(), loadgen.RunOptions{
		Devices: s.Load.Devices, Rate: s.Load.Rate, Poisson: s.Load.Poisson, Records: s.Load.Records, Payload: payload,
		Window: s.Load.Window, RampUp: time.Duration(s.Load.Ramp), Duration: time.Duration(s.Load.Duration),
		Prefix: "F", Stop: stop, Acked: &acked, OnSecond: watch(o.Watch, e.sink, cl.group.rss),
	})
	close(loadDone)
	kwg.Wait()
	if err != nil {
		samp.stop()
		return nil, fmt.Errorf("load: %w", err)
	}
	loadEnd := time.Now()
	if !fr.OK() {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d kills done", len(fr.Runs), f.Kills))
		if fr.Error != "" {
			res.Notes = append(res.Notes, fr.Error)
		}
	}
	fillLoad(res, s, rep)
	a, err := e.drain(ctx, rep, o)
	if err != nil {
		samp.stop()
		return nil, fmt.Errorf("drain: %w", err)
	}
	drainEnd := time.Now()
	res.RelayCPUSeconds = cl.group.cpu() - cpu0
	res.BenchCPUSeconds = selfCPU() - self0
	samp.stop()
	res.RelayRSSPeakMiB = float64(max(peakRSS, cl.group.peakRSS())) / (1 << 20)
	res.RelayRSSMiB = samp.values()
	fillAccount(res, e.sink, a, rep.Start, loadEnd, drainEnd)
	cl.finish(res)

	var rec, take, base []float64
	for _, r := range fr.Runs {
		base = append(base, r.BaselineMs)
		if r.RecoverMs >= 0 {
			rec = append(rec, r.RecoverMs)
		} else {
			fr.Unrecovered++
		}
		if r.TakeoverMs >= 0 {
			take = append(take, r.TakeoverMs)
		}
	}
	fr.RecoverP50Ms, fr.RecoverMaxMs = median(rec), slices.Max(append(rec, 0))
	fr.TakeoverP50Ms, fr.TakeoverMaxMs = median(take), slices.Max(append(take, 0))
	fr.BaselineP50Ms = median(base)
	if fr.Ownership != "metric" {
		res.Notes = append(res.Notes, "the relays have no "+ownedMetric+" metric: every device was watched, and a kill's figure is the longest any device waited for its next message after it")
	}
	logf("%d kills (lease %s): every partition delivering again after p50 %.0f ms, max %.0f ms (%s); taken over p50 %.0f ms; acknowledged %d, delivered %d, lost %d, duplicates %d",
		len(fr.Runs), fr.Lease, fr.RecoverP50Ms, fr.RecoverMaxMs, fr.Ownership, fr.TakeoverP50Ms, a.Expected, a.Received, a.Lost, a.Dups)
	return res, nil
}

// failoverKiller kills and restarts one relay of a cluster and measures the recovery.
type failoverKiller struct {
	ctx     context.Context
	cl      *clusterRun
	sink    *loadgen.Sink
	victim  int // index in cl.envs
	timeout time.Duration
	bin     string
	wait    func(time.Duration) bool // false when the load ended
	logf    func(string, ...any)
	found   bool // the relays have the ownership metric
}

// owning waits until the victim owns a partition (when the relays say which they own); false
// if the load ended first.
func (k *failoverKiller) owning() bool {
	deadline := time.Now().Add(k.timeout)
	for {
		owned, found, err := ownedPartitions(k.ctx, k.cl.envs[k.victim].adminAddr)
		if err == nil && (!found || len(owned) > 0) {
			k.found = found
			return true
		}
		if time.Now().After(deadline) {
			k.logf("relay %d owns no partition after %v: killing it anyway", k.victim+1, k.timeout)
			return true
		}
		if !k.wait(50 * time.Millisecond) {
			return false
		}
	}
}

// once kills the victim, waits until every device of its partitions delivers again (or the
// timeout), restarts it and waits until it owns partitions again.
func (k *failoverKiller) once(start time.Time) (FailoverKill, error) {
	cl, n := k.cl, k.cl.spec.Partitions
	r := FailoverKill{AtSeconds: time.Since(start).Seconds(), Owned: -1, RecoverMs: -1, TakeoverMs: -1, RegainMs: -1}
	var owned []int // nil: unknown, every device watched
	if o, found, err := ownedPartitions(k.ctx, cl.envs[k.victim].adminAddr); err == nil && found {
		owned, r.Owned = append([]int{}, o...), len(o)
	}
	watched := watchedDevices(k.sink.Devices(), owned, n)
	r.Watched = len(watched)
	if len(watched) == 0 {
		k.logf("no device of the fleet is in the partitions relay %d owned: nothing to wait for", k.victim+1)
	}
	// The baseline: how long until every watched device has a new message with nothing killed.
	t0, snap := time.Now(), k.sink.Devices()
	base := slices.Clone(watched)
	for len(base) > 0 && time.Since(t0) < k.timeout {
		time.Sleep(10 * time.Millisecond)
		now := k.sink.Devices()
		base = slices.DeleteFunc(base, func(id string) bool { return now[id].Unique > snap[id].Unique })
	}
	r.BaselineMs = ms(time.Since(t0))
	p := cl.group.list()[k.victim]
	used := p.cpu()
	killed := time.Now()
	p.kill()
	time.Sleep(settleAfterKill)
	snap = k.sink.Devices()
	var got []float64
	left := slices.Clone(watched)
	nextScrape := time.Now()
	for time.Since(killed) < k.timeout && len(watched) > 0 {
		now := k.sink.Devices()
		left = slices.DeleteFunc(left, func(id string) bool {
			if now[id].Unique > snap[id].Unique {
				got = append(got, ms(time.Since(killed)))
				return true
			}
			return false
		})
		if owned != nil && r.TakeoverMs < 0 && !time.Now().Before(nextScrape) {
			nextScrape = time.Now().Add(50 * time.Millisecond)
			if k.survivorsOwnAll(n) {
				r.TakeoverMs = ms(time.Since(killed))
			}
		}
		if len(left) == 0 && (owned == nil || r.TakeoverMs >= 0) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) == 0 && len(got) > 0 {
		r.RecoverMs = slices.Max(got)
	}
	r.DeviceP50Ms = median(got)
	np, err := cl.envs[k.victim].startRelay(k.ctx, k.bin, time.Minute)
	if err != nil {
		return r, fmt.Errorf("restart: %w", err)
	}
	cl.group.replace(k.victim, np, used)
	r.ReadyMs = ms(np.ready.Sub(killed))
	if owned != nil {
		deadline := time.Now().Add(k.timeout)
		for time.Now().Before(deadline) {
			if o, _, err := ownedPartitions(k.ctx, cl.envs[k.victim].adminAddr); err == nil && len(o) > 0 {
				r.RegainMs = ms(time.Since(np.ready))
				break
			}
			if !k.wait(20 * time.Millisecond) {
				break
			}
		}
	}
	return r, nil
}

// survivorsOwnAll reports whether the relays other than the victim own all n partitions.
func (k *failoverKiller) survivorsOwnAll(n int) bool {
	all := map[int]bool{}
	for i, e := range k.cl.envs {
		if i == k.victim {
			continue
		}
		o, _, err := ownedPartitions(k.ctx, e.adminAddr)
		if err != nil {
			return false
		}
		for _, p := range o {
			all[p] = true
		}
	}
	return len(all) == n
}

// msOrTimeout is a kill's time in ms for the log, or what -1 stands for: not within timeout.
func msOrTimeout(ms float64, timeout time.Duration) string {
	if ms < 0 {
		return fmt.Sprintf("not within %v", timeout)
	}
	return fmt.Sprintf("%.0f ms", ms)
}
