package bench

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Comparison is a scenario measured beside its floors in one invocation: every run, in the order
// they ran (relay, its floors, relay, its floors, …), the medians per target and the relay's
// ratios to its floors. The machine's speed varies from day to day; the ratios are what
// compares across days.
type Comparison struct {
	Count int      `json:"count"` // runs of each target
	Relay Figures  `json:"relay"` // medians over the relay's runs
	Ack   *Figures `json:"ackFloor,omitempty"`
	Pipe  *Figures `json:"pipelineFloor,omitempty"`
	// Badger holds the medians of a cluster scenario's runs in Badger mode (FloorBadger), and
	// VsBadger the cluster's medians divided by them.
	Badger   *Figures      `json:"badger,omitempty"`
	VsBadger *BadgerRatios `json:"vsBadger,omitempty"`
	Ratios   Ratios        `json:"ratios"`
	Runs     []Figures     `json:"runs"`
	// Shown is the index in Runs of the relay run whose details (timeline, memory, account)
	// the Result holds: the one with the median delivered (else acknowledged) rate.
	Shown int `json:"shown"`
	// FloorRuns are, per floor, the details of its run with the median figure (for the charts).
	FloorRuns []*Result `json:"floorRuns,omitempty"`
}

// Figures are one run's (or the medians of several runs') headline numbers.
type Figures struct {
	Target          string  `json:"target"`        // relay, ack, pipeline
	Run             int     `json:"run,omitempty"` // 1-based round of the alternation (0: a median)
	AckedPerSec     float64 `json:"ackedPerSec"`
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	CPUPerFrameUs   float64 `json:"cpuPerFrameUs"`
	CPUPerMsgUs     float64 `json:"cpuPerMsgUs"`
	AckP50Ms        float64 `json:"ackP50Ms"`
	AckP99Ms        float64 `json:"ackP99Ms"`
	AckP999Ms       float64 `json:"ackP999Ms"`
	EndToEndP99Ms   float64 `json:"endToEndP99Ms"`
	RSSPeakMiB      float64 `json:"rssPeakMiB"`
	// DeliveredOverAcked and BacklogSlope are Sustained's, while the fleet sent.
	DeliveredOverAcked float64 `json:"deliveredOverAcked"`
	BacklogSlope       float64 `json:"backlogSlope"`
	SustainedRate      float64 `json:"sustainedRate"` // Sustained.Rate: delivered ≈ acked at this rate or more
	DrainPerSec        float64 `json:"drainPerSec"`   // Sustained.DrainPerSec: delivery alone, after the load
	// BenchCPUPerMsgUs is the bench process's CPU per message: the fleet and the sink, and in
	// cluster mode the NATS nodes too.
	BenchCPUPerMsgUs float64 `json:"benchCpuPerMsgUs,omitempty"`
	Lost             int64   `json:"lost"`
}

// Ratios are the relay's figures divided by its floors' (medians by medians); 0 where a side
// is missing. CPU, ACK latency and memory are read against the ACK floor (the pipeline floor
// when the scenario has no ACK floor, e.g. NDJSON, which has no ACKs); delivery against the
// pipeline floor.
type Ratios struct {
	Base          string  `json:"base"` // the floor CPU, ACK latency and RSS are divided by
	CPUPerFrame   float64 `json:"cpuPerFrame"`
	CPUPerMsg     float64 `json:"cpuPerMsg"`
	AckP50        float64 `json:"ackP50"`
	AckP99        float64 `json:"ackP99"`
	RSSPeak       float64 `json:"rssPeak"`
	Delivered     float64 `json:"delivered"`     // relay ÷ pipeline floor, delivered msgs/s
	CPUPerMsgPipe float64 `json:"cpuPerMsgPipe"` // relay ÷ pipeline floor, CPU per message
}

func figuresOf(r *Result, run int) Figures {
	f := Figures{Target: r.Target, Run: run, AckedPerSec: r.AckedPerSec, DeliveredPerSec: r.DeliveredPerSec,
		CPUPerFrameUs: r.CPUPerFrame, CPUPerMsgUs: r.RelayCPUPerMsg, AckP50Ms: r.AckLatency.P50, AckP99Ms: r.AckLatency.P99,
		AckP999Ms: r.AckLatency.P999, EndToEndP99Ms: float64(r.EndToEnd.P99) / 1000, RSSPeakMiB: r.RelayRSSPeakMiB, Lost: r.Account.Lost}
	if f.Target == "" {
		f.Target = TargetRelay
	}
	if n := max(r.Delivered, r.MessagesAcked); n > 0 && r.BenchCPUSeconds > 0 {
		f.BenchCPUPerMsgUs = r.BenchCPUSeconds / float64(n) * 1e6
	}
	if s := r.Sustained; s != nil {
		f.DeliveredOverAcked, f.BacklogSlope, f.SustainedRate, f.DrainPerSec = s.Ratio, s.BacklogSlope, s.Rate, s.DrainPerSec
	}
	return f
}

// medianFigures is the field-by-field median of fs (all of one target): every float64 field
// its median, Lost the largest.
func medianFigures(fs []Figures) Figures {
	m := Figures{Target: fs[0].Target}
	mv := reflect.ValueOf(&m).Elem()
	vs := make([]float64, len(fs))
	for i := range mv.NumField() {
		if mv.Field(i).Kind() != reflect.Float64 {
			continue
		}
		for k := range fs {
			vs[k] = reflect.ValueOf(fs[k]).Field(i).Float()
		}
		mv.Field(i).SetFloat(median(vs))
	}
	for _, f := range fs {
		m.Lost = max(m.Lost, f.Lost)
	}
	return m
}

func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}

// compare fills the medians and ratios of c from its runs.
func (c *Comparison) compare() {
	by := map[string][]Figures{}
	for _, f := range c.Runs {
		by[f.Target] = append(by[f.Target], f)
	}
	c.Relay = medianFigures(by[TargetRelay])
	if fs := by[FloorAck]; len(fs) > 0 {
		m := medianFigures(fs)
		c.Ack = &m
	}
	if fs := by[FloorPipeline]; len(fs) > 0 {
		m := medianFigures(fs)
		c.Pipe = &m
	}
	if fs := by[FloorBadger]; len(fs) > 0 {
		m := medianFigures(fs)
		c.Badger = &m
		c.VsBadger = &BadgerRatios{Acked: ratio(c.Relay.AckedPerSec, m.AckedPerSec), Delivered: ratio(c.Relay.DeliveredPerSec, m.DeliveredPerSec),
			CPUPerMsg: ratio(c.Relay.CPUPerMsgUs, m.CPUPerMsgUs), AckP50: ratio(c.Relay.AckP50Ms, m.AckP50Ms), AckP99: ratio(c.Relay.AckP99Ms, m.AckP99Ms),
			NATSCPUPerMsgUs: max(c.Relay.BenchCPUPerMsgUs-m.BenchCPUPerMsgUs, 0)}
	}
	base := c.Ack
	if base == nil {
		base = c.Pipe
	}
	r := Ratios{}
	if base != nil {
		r.Base = base.Target
		r.CPUPerFrame = ratio(c.Relay.CPUPerFrameUs, base.CPUPerFrameUs)
		r.CPUPerMsg = ratio(c.Relay.CPUPerMsgUs, base.CPUPerMsgUs)
		r.AckP50 = ratio(c.Relay.AckP50Ms, base.AckP50Ms)
		r.AckP99 = ratio(c.Relay.AckP99Ms, base.AckP99Ms)
		r.RSSPeak = ratio(c.Relay.RSSPeakMiB, base.RSSPeakMiB)
	}
	if p := c.Pipe; p != nil {
		r.Delivered = ratio(c.Relay.DeliveredPerSec, p.DeliveredPerSec)
		r.CPUPerMsgPipe = ratio(c.Relay.CPUPerMsgUs, p.CPUPerMsgUs)
	}
	c.Ratios = r
}

// medianRun is the index in rs of the run with the median delivered (else acknowledged) rate.
func medianRun(rs []*Result) int {
	idx := make([]int, len(rs))
	for i := range idx {
		idx[i] = i
	}
	key := func(r *Result) float64 {
		if r.DeliveredPerSec > 0 {
			return r.DeliveredPerSec
		}
		return r.AckedPerSec
	}
	sort.SliceStable(idx, func(a, b int) bool { return key(rs[idx[a]]) < key(rs[idx[b]]) })
	return idx[(len(idx)-1)/2]
}

// Measure runs a scenario against the relay and its floors, alternating, Options.Count times
// (relay, floors, relay, floors, …), and returns the relay run with the median figure, its
// Floors holding every run, the medians and the ratios. Scenarios without floors, or crash and
// backlog scenarios, run once against the relay, as Run; device-link scenarios run as Run too,
// which alternates the relay and their floors Options.Count times itself (Result.Link).
func Measure(ctx context.Context, s *Scenario, o Options) (*Result, error) {
	count := max(o.Count, 1)
	if len(s.Floors) == 0 || s.Crash != nil || s.Backlog != nil || s.Link != nil {
		return Run(ctx, s, o) // a device-link scenario alternates with its floors itself
	}
	c := &Comparison{Count: count}
	var relays []*Result
	floors := map[string][]*Result{}
	for round := 1; round <= count; round++ {
		r, err := Run(ctx, s, o)
		if err != nil {
			return nil, fmt.Errorf("relay, run %d: %w", round, err)
		}
		relays = append(relays, r)
		c.Runs = append(c.Runs, figuresOf(r, round))
		for _, kind := range s.Floors {
			f, err := RunFloor(ctx, s, kind, o)
			if err != nil {
				return nil, fmt.Errorf("%s floor, run %d: %w", kind, round, err)
			}
			floors[kind] = append(floors[kind], f)
			c.Runs = append(c.Runs, figuresOf(f, round))
		}
	}
	c.compare()
	shown := medianRun(relays)
	c.Shown = shown * (1 + len(s.Floors))
	for _, kind := range s.Floors {
		c.FloorRuns = append(c.FloorRuns, floors[kind][medianRun(floors[kind])])
	}
	res := relays[shown]
	res.Floors = c
	if count > 1 {
		res.Notes = append(res.Notes, fmt.Sprintf("figures in the tables are medians of %d runs of the relay and of each floor, alternating; charts show the run with the median rate", count))
	}
	return res, nil
}

// Sustained compares acknowledged and delivered messages while the fleet sent, after its ramp:
// whether delivery kept up with ingest at the offered rate. At a fixed rate a flat backlog
// (Ratio ≈ 1, BacklogSlope ≈ 0) says the target sustains that rate. In a flood (rate 0) ingest
// takes what it can; a growing backlog then says delivery is slower than ingest, and
// DeliveredPerSec is the rate delivery held while competing with ingest for the CPU: the rate
// at which delivered ≈ acked is at least that (with less ingest, delivery gets more CPU).
type Sustained struct {
	FromSeconds     float64 `json:"fromSeconds"` // the window, seconds since the load started
	ToSeconds       float64 `json:"toSeconds"`
	AckedPerSec     float64 `json:"ackedPerSec"`     // messages acknowledged (NDJSON: written) per second in the window
	DeliveredPerSec float64 `json:"deliveredPerSec"` // distinct messages the sink received per second in the window
	Ratio           float64 `json:"ratio"`           // delivered ÷ acknowledged in the window
	// BacklogSlope is the growth of acknowledged minus delivered messages, messages/s (least
	// squares over the window's samples).
	BacklogSlope float64 `json:"backlogSlope"`
	// MetricSlope is the same of the relay's fleetrelay_route_backlog_messages (relay runs).
	MetricSlope float64 `json:"metricSlope,omitempty"`
	// Rate is the sustained rate this run shows: AckedPerSec when delivery kept up (Ratio ≥
	// 0.97), else DeliveredPerSec, a lower bound of the rate at which delivered ≈ acked.
	Rate float64 `json:"rate"`
	// DrainPerSec is the delivery rate after the fleet stopped, while a backlog was left (drains
	// of a second or more): delivery alone, with the CPU to itself, an upper bound of the rate
	// at which delivered ≈ acked when delivery fell behind.
	DrainPerSec float64      `json:"drainPerSec,omitempty"`
	KeptUp      bool         `json:"keptUp"`
	Samples     []FlowSample `json:"samples"`
}

// FlowSample is one second of acknowledged and delivered messages.
type FlowSample struct {
	T         float64 `json:"t"`                 // seconds since the load started
	Acked     int64   `json:"acked"`             // messages acknowledged so far
	Delivered int64   `json:"delivered"`         // distinct messages at the sink so far
	Metric    int64   `json:"backlogMetric"`     // the relay's backlog metric (-1: none)
	Backlog   int64   `json:"backlog,omitempty"` // Acked - Delivered
}

// flowSampler reads, once a second, the fleet's acknowledged frames, the sink's distinct
// messages and the relay's backlog metric (when admin is set).
type flowSampler struct {
	mu      sync.Mutex
	samples []FlowSample
	at      []time.Time
	quit    chan struct{}
	done    chan struct{}
}

func sampleFlow(ctx context.Context, acked *atomic.Int64, records int64, sink *loadgen.Sink, admin string) *flowSampler {
	f := &flowSampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-f.quit:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				x := FlowSample{Acked: acked.Load() * records, Delivered: int64(sink.Stats().Unique), Metric: -1}
				if admin != "" {
					if v, err := scrape(ctx, admin, backlogMetric); err == nil {
						x.Metric = int64(v)
					}
				}
				x.Backlog = x.Acked - x.Delivered
				f.mu.Lock()
				f.samples = append(f.samples, x)
				f.at = append(f.at, now)
				f.mu.Unlock()
			}
		}
	}()
	return f
}

func (f *flowSampler) stop() { close(f.quit); <-f.done }

// sustained summarises the samples taken after the ramp (and a settling second, or a quarter
// of the sending time if that is shorter) until end.
func (f *flowSampler) sustained(start time.Time, ramp time.Duration, end time.Time) *Sustained {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := start.Add(ramp + min(time.Second, end.Sub(start.Add(ramp))/4))
	var w []FlowSample
	s := &Sustained{}
	for i := range f.samples {
		f.samples[i].T = f.at[i].Sub(start).Seconds()
		if !f.at[i].Before(from) && !f.at[i].After(end) {
			w = append(w, f.samples[i])
		}
	}
	s.Samples = slices.Clone(f.samples)
	if len(w) < 2 {
		return s
	}
	a, b := w[0], w[len(w)-1]
	s.FromSeconds, s.ToSeconds = a.T, b.T
	secs := b.T - a.T
	s.AckedPerSec = float64(b.Acked-a.Acked) / secs
	s.DeliveredPerSec = float64(b.Delivered-a.Delivered) / secs
	s.Ratio = ratio(s.DeliveredPerSec, s.AckedPerSec)
	s.BacklogSlope = slope(w, func(x FlowSample) float64 { return float64(x.Backlog) })
	if a.Metric >= 0 && b.Metric >= 0 {
		s.MetricSlope = slope(w, func(x FlowSample) float64 { return float64(x.Metric) })
	}
	s.KeptUp = s.Ratio >= 0.97
	s.Rate = s.DeliveredPerSec
	if s.KeptUp {
		s.Rate = s.AckedPerSec
	}
	return s
}

// slope is the least-squares slope of y over the samples' T.
func slope(w []FlowSample, y func(FlowSample) float64) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, x := range w {
		v := y(x)
		n++
		sx += x.T
		sy += v
		sxx += x.T * x.T
		sxy += x.T * v
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
