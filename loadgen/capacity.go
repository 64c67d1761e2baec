package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// CapacityOptions describe a capacity search: the fleet (Run's Addr, Devices, Records, Window,
// Payload, Prefix) and the SLO a rate must meet.
type CapacityOptions struct {
	Run RunOptions
	// P99 is the bound on the p99 ACK latency, measured from when frames were due (default 10ms).
	P99 time.Duration
	// Probe is how long each rate is held (default 10s).
	Probe time.Duration
	// Tolerance ends the search when the bracket is this narrow, relative (default 0.05).
	Tolerance float64
	// SinkURL, when set, is a loadgen sink the relay delivers to: a rate passes only if the sink
	// received (GET /stats) at least 95% of what was acknowledged while the rate was held.
	SinkURL string
	Log     io.Writer
}

// Probe is one rate tried by the search.
type Probe struct {
	Rate      float64 `json:"rate"`      // offered messages/s over the fleet
	Acked     float64 `json:"acked"`     // acknowledged messages/s
	Delivered float64 `json:"delivered"` // messages/s the sink received (0 without a sink)
	P99ms     float64 `json:"p99ms"`
	Pass      bool    `json:"pass"`
	Why       string  `json:"why,omitempty"`
}

// CapacityReport is the answer of a capacity search.
type CapacityReport struct {
	Devices   int     `json:"devices"`
	Rate      float64 `json:"rate"`      // highest passing messages/s over the fleet
	PerDevice float64 `json:"perDevice"` // the same per device
	P99ms     float64 `json:"p99ms"`     // p99 ACK latency at that rate
	MaxAcked  float64 `json:"maxAcked"`  // acknowledged messages/s with no rate limit
	SLOP99ms  float64 `json:"sloP99ms"`
	Probes    []Probe `json:"probes"`
}

// String is the planner's answer.
func (c *CapacityReport) String() string {
	if c.Rate == 0 {
		return fmt.Sprintf("no tested rate met the SLO (p99 ACK ≤ %.1f ms, zero loss, delivery keeping up) with %d devices", c.SLOP99ms, c.Devices)
	}
	return fmt.Sprintf("this machine sustains %d devices × %.1f msg/s (%.0f msg/s) at p99 ACK %.2f ms (SLO %.1f ms; unthrottled maximum %.0f msg/s acknowledged)",
		c.Devices, c.PerDevice, c.Rate, c.P99ms, c.SLOP99ms, c.MaxAcked)
}

// Capacity searches the highest sustained rate that meets the SLO.
func Capacity(ctx context.Context, o CapacityOptions) (*CapacityReport, error) {
	if o.P99 <= 0 {
		o.P99 = 10 * time.Millisecond
	}
	if o.Probe <= 0 {
		o.Probe = 10 * time.Second
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 0.05
	}
	if o.Run.Records <= 0 {
		o.Run.Records = 1
	}
	if o.Run.Prefix == "" {
		o.Run.Prefix = "CAP"
	}
	rep := &CapacityReport{Devices: o.Run.Devices, SLOP99ms: float64(o.P99) / float64(time.Millisecond)}
	n := 0
	var acked int64 // messages acknowledged over all probes so far
	probe := func(rate float64) (Probe, error) {
		n++
		ro := o.Run
		ro.Prefix = fmt.Sprintf("%s%d-", o.Run.Prefix, n)
		ro.Rate = rate / float64(ro.Devices) / float64(ro.Records)
		ro.Duration = o.Probe
		// A probe over capacity leaves a backlog in the relay; delivering it would take CPU from
		// the next probe and count as that probe's delivery. Wait until the sink has it all.
		waitDelivered(ctx, o.SinkURL, acked, o.Log)
		before := sinkMessages(o.SinkURL)
		r, err := Run(ctx, ro)
		if err != nil {
			return Probe{}, err
		}
		acked += r.FramesAcked * int64(ro.Records)
		p := Probe{Rate: rate, Acked: float64(r.FramesAcked*int64(ro.Records)) / r.SendSeconds, P99ms: r.AckLatency.P99}
		if o.SinkURL != "" {
			delivered := sinkMessages(o.SinkURL) - before
			p.Delivered = float64(delivered) / r.TotalSeconds
			if float64(delivered) < 0.95*float64(r.FramesAcked*int64(ro.Records)) {
				p.Why = fmt.Sprintf("delivery behind: %d of %d acknowledged messages arrived", delivered, r.FramesAcked*int64(ro.Records))
			}
		}
		// Frames due over the run: each device sends from its start (spread over the ramp) on.
		due := ro.Rate * float64(ro.Devices) * (ro.Duration + ro.RampUp/2).Seconds()
		switch {
		case r.Unacked > 0:
			p.Why = fmt.Sprintf("%d frames unacknowledged", r.Unacked)
		case rate > 0 && float64(r.FramesAcked) < 0.97*due:
			p.Why = fmt.Sprintf("acknowledged %d of %.0f frames due", r.FramesAcked, due)
		case rate > 0 && p.P99ms > rep.SLOP99ms:
			p.Why = fmt.Sprintf("p99 %.2f ms over the SLO", p.P99ms)
		}
		p.Pass = p.Why == "" && rate > 0
		rep.Probes = append(rep.Probes, p)
		if o.Log != nil {
			fmt.Fprintf(o.Log, "probe %.0f msg/s: acked %.0f/s, delivered %.0f/s, p99 %.2f ms: %v %s\n", rate, p.Acked, p.Delivered, p.P99ms, p.Pass, p.Why)
		}
		return p, nil
	}
	max, err := probe(0) // unthrottled: the upper bound
	if err != nil {
		return rep, err
	}
	rep.MaxAcked = max.Acked
	lo, hi := 0.0, max.Acked
	for hi > 0 && (hi-lo)/hi > o.Tolerance && ctx.Err() == nil {
		mid := lo + (hi-lo)/2
		if lo == 0 {
			mid = hi * 0.7 // a first guess near where relays usually saturate
		}
		p, err := probe(mid)
		if err != nil {
			return rep, err
		}
		if p.Pass {
			lo = mid
			rep.Rate, rep.P99ms = mid, p.P99ms
		} else {
			hi = mid
		}
	}
	rep.PerDevice = rep.Rate / float64(o.Run.Devices)
	return rep, ctx.Err()
}

// waitDelivered waits until the sink at url has received want distinct messages, or has received
// nothing new for 30 s (then the next probe runs anyway, and the log says so).
func waitDelivered(ctx context.Context, url string, want int64, log io.Writer) {
	if url == "" {
		return
	}
	last, since := int64(-1), time.Now()
	for ctx.Err() == nil {
		got := sinkMessages(url)
		if got >= want {
			return
		}
		if got != last {
			last, since = got, time.Now()
		} else if time.Since(since) > 30*time.Second {
			if log != nil {
				fmt.Fprintf(log, "sink stuck at %d of %d messages; probing anyway\n", got, want)
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sinkMessages reads a loadgen sink's accepted message count (0 without a sink or on error).
func sinkMessages(url string) int64 {
	if url == "" {
		return 0
	}
	resp, err := http.Get(url + "/stats")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var s struct {
		Unique int64 `json:"unique"`
	}
	if json.NewDecoder(resp.Body).Decode(&s) != nil {
		return 0
	}
	return s.Unique
}
