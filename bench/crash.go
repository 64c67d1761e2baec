package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// CrashResult is what a crash scenario measured: the kills and how the relay came back. The
// messages acknowledged, delivered, lost and duplicated are the Result's Account.
type CrashResult struct {
	Kills    int       `json:"kills"`    // asked for
	Seed     uint64    `json:"seed"`     // of the gaps between kills: the same seed gives the same gaps
	Restarts []Restart `json:"restarts"` // one per kill done
	// Error says why the kills stopped early (a restart that failed), if they did.
	Error string `json:"error,omitempty"`

	ReadyP50Ms float64 `json:"readyP50Ms"` // kill → the new process ready, median over the restarts
	ReadyMaxMs float64 `json:"readyMaxMs"`
	AckP50Ms   float64 `json:"ackP50Ms"` // kill → the fleet's next ACK, median
	AckMaxMs   float64 `json:"ackMaxMs"`
	// DeliverP50Ms and DeliverMaxMs summarise kill → the endpoint's next message over the
	// restarts that delivered before the next kill; Undelivered counts those that did not.
	DeliverP50Ms float64 `json:"deliverP50Ms"`
	DeliverMaxMs float64 `json:"deliverMaxMs"`
	Undelivered  int     `json:"undelivered"`
}

// Restart is one kill and restart.
type Restart struct {
	AtSeconds   float64 `json:"atSeconds"`   // the kill, since the load started
	UpSeconds   float64 `json:"upSeconds"`   // how long the killed process had been ready
	FramesAcked int64   `json:"framesAcked"` // frames the fleet had had acknowledged by then
	Backlog     int64   `json:"backlog"`     // fleetrelay_route_backlog_messages just before the kill (-1: unread)
	StartMs     float64 `json:"startMs"`     // exec → ready: device listener accepting, /healthz ok
	ReadyMs     float64 `json:"readyMs"`     // kill → ready
	AckMs       float64 `json:"ackMs"`       // kill → the fleet's next acknowledged frame (-1: none before the next kill)
	// DeliverMs is kill → the endpoint's next accepted message (-1: none before the next kill).
	// A restarted relay's routes start before its listeners: it can deliver before it is ready.
	DeliverMs float64 `json:"deliverMs"`
	Exit      string  `json:"exit"` // how the killed process ended ("signal: killed")
}

// OK reports whether every kill asked for was done and followed by a working restart.
func (c *CrashResult) OK() bool { return c.Error == "" && len(c.Restarts) == c.Kills }

// runCrash runs a crash scenario: the fleet sends while the relay is killed with SIGKILL
// crash.kills times, each a random gap after it was ready again, and restarted at once on the
// same data directory; the fleet stops crash.tail after the last restart, the endpoint drains
// everything, and the sink's account against every device's acknowledged seqs gives lost and
// duplicated messages exactly.
func runCrash(ctx context.Context, s *Scenario, o Options, res *Result, logf func(string, ...any)) (*Result, error) {
	c := *s.Crash
	if o.Kills > 0 {
		c.Kills = o.Kills
	}
	res.Config.Crash = &c
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	cr := &CrashResult{Kills: c.Kills, Seed: c.Seed}
	res.Crash = cr
	res.RatePerDevice = s.Load.Rate

	e, err := newEnv(s, o, true)
	if err != nil {
		return nil, err
	}
	defer e.close()
	first, err := e.startRelay(ctx, o.RelayBin, time.Minute)
	if err != nil {
		return nil, err
	}
	var cur atomic.Pointer[relayProc] // the running relay; the killer replaces it
	cur.Store(first)
	defer func() { cur.Load().stop() }()
	time.Sleep(200 * time.Millisecond) // let the relay settle before the idle reading
	res.RelayRSSIdleMiB = float64(first.rss()) / (1 << 20)
	samp := sample(time.Second, func() float64 { return float64(cur.Load().rss()) / (1 << 20) })
	payload, err := loadgen.NewPayload(s.Load.Payload)
	if err != nil {
		return nil, err
	}

	var (
		acked    atomic.Int64
		stop     = make(chan struct{}) // closed by the killer: the fleet stops sending
		loadDone = make(chan struct{}) // closed when loadgen.Run returned
		kwg      sync.WaitGroup
		deadCPU  float64 // of the killed processes
		peakRSS  int64
	)
	cpu0, self0 := first.cpu(), selfCPU()
	if err := setSinkFaults(e.sink, s); err != nil { // an endpoint outage builds a backlog to crash with
		samp.stop()
		return nil, err
	}
	start := time.Now()
	kwg.Add(1)
	go func() {
		defer kwg.Done()
		defer close(stop)
		rnd := rand.New(rand.NewPCG(c.Seed, c.Seed^0x5851f42d4c957f2d))
		wait := func(d time.Duration) bool {
			select {
			case <-time.After(d):
				return true
			case <-loadDone:
			case <-ctx.Done():
			}
			return false
		}
		gap := func() time.Duration {
			return time.Duration(c.MinGap) + time.Duration(rnd.Int64N(int64(c.MaxGap-c.MinGap)+1))
		}
		// recovery polls, until the next kill is due at until, for the restart r (killed at
		// killed) to acknowledge and deliver again.
		recovery := func(r *Restart, killed, until time.Time, acks0 int64, sink0 int) {
			for time.Now().Before(until) && (r.AckMs < 0 || r.DeliverMs < 0) {
				if r.AckMs < 0 && acked.Load() > acks0 {
					r.AckMs = ms(time.Since(killed))
				}
				if r.DeliverMs < 0 && e.sink.Stats().Messages > sink0 {
					r.DeliverMs = ms(time.Since(killed))
				}
				if !wait(time.Millisecond) {
					return
				}
			}
		}
		next := first.ready.Add(gap()) // the next kill
		tailEnd := first.ready.Add(time.Duration(c.Tail))
		for i := range c.Kills {
			if !wait(time.Until(next)) {
				return
			}
			p := cur.Load()
			r := Restart{AtSeconds: time.Since(start).Seconds(), UpSeconds: time.Since(p.ready).Seconds(), Backlog: -1, AckMs: -1, DeliverMs: -1}
			if v, err := scrape(ctx, e.adminAddr, backlogMetric); err == nil {
				r.Backlog = int64(v)
			}
			r.FramesAcked = acked.Load()
			deadCPU += p.cpu()
			peakRSS = max(peakRSS, p.peakRSS())
			killed := time.Now()
			p.kill()
			if p.err != nil {
				r.Exit = p.err.Error()
			}
			acks0, sink0 := acked.Load(), e.sink.Stats().Messages
			np, err := e.startRelay(ctx, o.RelayBin, time.Minute)
			if err != nil {
				cr.Error = fmt.Sprintf("restart after kill %d: %v", i+1, err)
				logf("%s", cr.Error)
				return
			}
			cur.Store(np)
			r.StartMs = ms(np.ready.Sub(np.started))
			r.ReadyMs = ms(np.ready.Sub(killed))
			next = np.ready.Add(gap())
			tailEnd = np.ready.Add(time.Duration(c.Tail))
			until := next
			if i+1 == c.Kills {
				until = tailEnd
			}
			recovery(&r, killed, until, acks0, sink0)
			cr.Restarts = append(cr.Restarts, r)
			logf("kill %d/%d at %.1fs (%d frames acknowledged, %d messages queued): ready after %.0f ms (start-up %.0f ms), acknowledging after %.0f ms, delivering after %.0f ms (-1: not before the next kill)",
				i+1, c.Kills, r.AtSeconds, r.FramesAcked, r.Backlog, r.ReadyMs, r.StartMs, r.AckMs, r.DeliverMs)
		}
		wait(time.Until(tailEnd))
	}()

	logf("load: %d devices at %s for at most %v, %d kills %v..%v apart (seed %d)", s.Load.Devices, rateText(s.Load.Rate),
		time.Duration(s.Load.Duration), c.Kills, time.Duration(c.MinGap), time.Duration(c.MaxGap), c.Seed)
	rep, err := loadgen.Run(ctx, loadgen.RunOptions{
		Addr: e.devAddr, Devices: s.Load.Devices, Rate: s.Load.Rate, Poisson: s.Load.Poisson, Records: s.Load.Records,
		Payload: payload, Window: s.Load.Window, RampUp: time.Duration(s.Load.Ramp), Duration: time.Duration(s.Load.Duration),
		Prefix: "C", Stop: stop, Acked: &acked, OnSecond: watch(o.Watch, e.sink, func() int64 { return cur.Load().rss() }),
	})
	close(loadDone)
	kwg.Wait()
	if err != nil {
		samp.stop()
		return nil, fmt.Errorf("load: %w", err)
	}
	loadEnd := time.Now()
	if !cr.OK() {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d kills done", len(cr.Restarts), c.Kills))
		if cr.Error != "" {
			res.Notes = append(res.Notes, cr.Error)
		}
	}
	fillLoad(res, s, rep)

	// Drain: the endpoint ends up with everything acknowledged, or the account says what is not.
	a, err := e.drain(ctx, rep, o)
	if err != nil {
		samp.stop()
		return nil, fmt.Errorf("drain: %w", err)
	}
	drainEnd := time.Now()
	last := cur.Load()
	res.RelayCPUSeconds = deadCPU + last.cpu() - cpu0
	res.BenchCPUSeconds = selfCPU() - self0
	samp.stop()
	res.RelayRSSPeakMiB = float64(max(peakRSS, last.peakRSS())) / (1 << 20)
	res.RelayRSSMiB = samp.values()
	fillAccount(res, e.sink, a, rep.Start, loadEnd, drainEnd)

	var ready, ack, deliver []float64
	for _, r := range cr.Restarts {
		ready = append(ready, r.ReadyMs)
		if r.AckMs >= 0 {
			ack = append(ack, r.AckMs)
		}
		if r.DeliverMs >= 0 {
			deliver = append(deliver, r.DeliverMs)
		} else {
			cr.Undelivered++
		}
	}
	cr.ReadyP50Ms, cr.ReadyMaxMs = median(ready), slices.Max(append(ready, 0))
	cr.AckP50Ms, cr.AckMaxMs = median(ack), slices.Max(append(ack, 0))
	cr.DeliverP50Ms, cr.DeliverMaxMs = median(deliver), slices.Max(append(deliver, 0))
	logf("%d kills: acknowledged %d messages, delivered %d, lost %d, duplicates %d (of %d messages); after a kill: ready p50 %.0f ms, max %.0f ms; acknowledging p50 %.0f ms, max %.0f ms; delivering p50 %.0f ms, max %.0f ms (%d restarts killed before they delivered)",
		len(cr.Restarts), a.Expected, a.Received, a.Lost, a.Dups, a.DupMessages, cr.ReadyP50Ms, cr.ReadyMaxMs, cr.AckP50Ms, cr.AckMaxMs,
		cr.DeliverP50Ms, cr.DeliverMaxMs, cr.Undelivered)
	return res, nil
}

// fillLoad copies what the fleet did into res.
func fillLoad(res *Result, s *Scenario, rep *loadgen.RunReport) {
	res.Devices = rep.Devices
	res.Notes = append(res.Notes, rep.Notes...)
	if rep.Unacked > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d frames never acknowledged (not counted as lost: the relay promised nothing)", rep.Unacked))
	}
	res.FramesAcked = rep.FramesAcked
	res.MessagesAcked = rep.FramesAcked * int64(s.Load.Records)
	if rep.SendSeconds > 0 {
		res.AckedPerSec = float64(res.MessagesAcked) / rep.SendSeconds
	}
	res.AckLatency, res.AckLatencyUncorrected = rep.AckLatency, rep.AckLatencyUncorrected
	res.Timeline = rep.Timeline
}

// fillAccount puts the sink's account and figures into res: the load started at start and
// ended at loadEnd, the sink had everything (or stopped receiving) at drainEnd.
func fillAccount(res *Result, sink *loadgen.Sink, a loadgen.AccountReport, start, loadEnd, drainEnd time.Time) {
	snap := sink.Snapshot()
	res.Sink = snap.SinkStats
	res.Account = a
	res.Delivered = a.Received
	res.DrainSeconds = drainEnd.Sub(loadEnd).Seconds()
	res.DeliveredPerSec = float64(res.Delivered) / drainEnd.Sub(start).Seconds()
	res.EndToEnd = snap.LatencyUs
	res.SinkPerSecond = snap.PerSecond
	if n := max(res.Delivered, res.MessagesAcked); n > 0 {
		res.RelayCPUPerMsg = res.RelayCPUSeconds / float64(n) * 1e6
	}
	if a.Lost > 0 {
		res.Notes = append(res.Notes, "acknowledged messages lost: "+a.String())
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median of vs (0 for none).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
