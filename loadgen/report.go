package loadgen

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Second is one second of a run.
type Second struct {
	T         float64 `json:"t"`         // seconds since start
	Connected int64   `json:"connected"` // devices connected
	Sent      int64   `json:"sent"`      // frames sent in this second
	Acked     int64   `json:"acked"`     // frames acknowledged in this second
	P99ms     float64 `json:"p99ms"`     // corrected ACK latency p99 of this second (NaN if none)
}

// MarshalJSON writes NaN as null.
func (s Second) MarshalJSON() ([]byte, error) {
	type plain Second
	p := plain(s)
	if math.IsNaN(p.P99ms) {
		p.P99ms = -1
	}
	return json.Marshal(p)
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	// Percentiles is the distribution as HdrHistogram and wrk2 print it: percentiles from 50
	// to 99.99, evenly spaced on a log 1/(1-p) scale (8 per decade).
	Percentiles []Percentile `json:"percentiles,omitempty"`
}

// Percentile is one point of a latency distribution.
type Percentile struct {
	P  float64 `json:"p"`  // percent, e.g. 99.9
	Ms float64 `json:"ms"` // latency at it
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(v int64) float64 { return float64(v) / 1000 }
	l := Latency{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Mean: h.Mean() / 1000}
	if l.Count == 0 {
		return l
	}
	for j := 0; ; j++ { // 1-p = 0.5 × 10^(-j/8): 50%, 57.8%, …, 99.99%
		p := 100 * (1 - 0.5*math.Pow(10, -float64(j)/8))
		if p > 99.99 {
			p = 99.99
		}
		l.Percentiles = append(l.Percentiles, Percentile{P: math.Round(p*1e4) / 1e4, Ms: ms(h.ValueAtQuantile(p))})
		if p == 99.99 {
			return l
		}
	}
}

// RunReport is the outcome of a run.
type RunReport struct {
	Options   string    `json:"options"`
	Start     time.Time `json:"start"`
	FDLimit   int       `json:"fdLimit"`
	Requested int       `json:"requestedDevices"`
	Devices   int       `json:"devices"`
	Notes     []string  `json:"notes,omitempty"`

	SendSeconds  float64 `json:"sendSeconds"`  // from start until sending stopped
	TotalSeconds float64 `json:"totalSeconds"` // including the wait for the last ACKs
	FramesSent   int64   `json:"framesSent"`
	RecordsSent  int64   `json:"recordsSent"`
	FramesAcked  int64   `json:"framesAcked"`
	Unacked      int64   `json:"unacked"` // frames still unacknowledged at the end
	SentPerSec   float64 `json:"sentPerSec"`
	AckedPerSec  float64 `json:"ackedPerSec"`
	Errors       int64   `json:"errors"`
	Reconnects   int64   `json:"reconnects"` // after a failure or churn, while sending or waiting for the last ACKs

	AckLatency            Latency `json:"ackLatency"`            // from when each frame was due (coordinated omission corrected)
	AckLatencyUncorrected Latency `json:"ackLatencyUncorrected"` // from when each frame was written

	Timeline []Second `json:"timeline"`

	// Acked is, per device, the highest seq acknowledged (what the relay promised to keep),
	// kept across reconnects and relay restarts: every record of every frame from FirstSeq to
	// it must reach the endpoint.
	Acked map[string]uint64 `json:"acked"`
	// FirstSeq is the first seq every device used.
	FirstSeq uint64 `json:"firstSeq"`
	// Records is the number of records in every frame (Teltonika: 1, each record's counter
	// standing for a frame's seq: see TeltonikaCounterIO).
	Records int `json:"recordsPerFrame"`
	// Teltonika is what a Teltonika fleet did (RunOptions.Protocol).
	Teltonika *TeltonikaReport `json:"teltonika,omitempty"`
	// Lines is, for an NDJSON run, how many frames (lines per record) each identity sent.
	Lines map[string]int64 `json:"lines,omitempty"`
	// Account, when the run was checked against a sink (loadgen run -sink), compares what was
	// acknowledged with what the sink received: lost and duplicated messages, totals and per
	// device. For an NDJSON run, what was written stands for what was acknowledged.
	Account *AccountReport `json:"account,omitempty"`
}

// AccountRequest is what the sink must hold after this run: every record of every frame
// acknowledged (NDJSON: written) by each device.
func (rep *RunReport) AccountRequest(perDevice bool) AccountRequest {
	req := AccountRequest{Acked: rep.Acked, Records: max(rep.Records, 1), PerDevice: perDevice}
	if rep.Lines != nil {
		req.Acked = make(map[string]uint64, len(rep.Lines))
		for id, n := range rep.Lines {
			req.Acked[id] = uint64(n)
		}
	}
	if rep.FirstSeq > 1 && rep.Lines == nil {
		req.First = make(map[string]uint64, len(req.Acked))
		for id := range req.Acked {
			req.First[id] = rep.FirstSeq
		}
	}
	return req
}

// MessagesAcked is the number of messages the run's AccountRequest expects.
func (rep *RunReport) MessagesAcked() int64 {
	return rep.AccountRequest(false).Expect().Total()
}

func (o *RunOptions) describe() string {
	rate := "max"
	if o.Rate > 0 {
		rate = fmt.Sprintf("%g/s", o.Rate)
		if o.Poisson {
			rate += " poisson"
		}
	}
	if o.Protocol == ProtocolTeltonikaTCP || o.Protocol == ProtocolTeltonikaUDP {
		recs := fmt.Sprint(o.Records)
		if o.RecordsMax > o.Records {
			recs += fmt.Sprintf("-%d", o.RecordsMax)
		}
		return fmt.Sprintf("protocol=%s devices=%d rate=%s records=%s ramp=%v duration=%v", o.Protocol, o.Devices, rate, recs, o.RampUp, o.Duration)
	}
	return fmt.Sprintf("devices=%d rate=%s records=%d window=%d ramp=%v duration=%v churn=%g/s", o.Devices, rate, o.Records, o.Window, o.RampUp, o.Duration, o.Churn)
}

func (rep *RunReport) fill(r *recorder, devs []*Device, start, sendEnd, end time.Time) {
	rep.SendSeconds = sendEnd.Sub(start).Seconds()
	rep.TotalSeconds = end.Sub(start).Seconds()
	rep.FramesSent = r.sent.Load()
	rep.RecordsSent = r.records.Load()
	rep.FramesAcked = r.acked.Load()
	rep.Errors = r.errors.Load()
	rep.Reconnects = r.reconnects.Load()
	rep.Acked = make(map[string]uint64, len(devs))
	for _, d := range devs {
		acked, next := d.Acked(), d.NextSeq()
		if acked >= next { // WELCOME's lastSeq: the relay knows seqs this run never sent
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: the relay acknowledged seq %d, beyond the last one sent (%d): state from an earlier run with the same prefix; expecting only what was sent",
				d.cfg.Hello.Serial, acked, next-1))
			acked = next - 1
		}
		rep.Acked[d.cfg.Hello.Serial] = acked
		rep.Unacked += int64(d.Unacked())
	}
	if rep.SendSeconds > 0 {
		rep.SentPerSec = float64(rep.FramesSent) / rep.SendSeconds
		rep.AckedPerSec = float64(rep.FramesAcked) / rep.SendSeconds
	}
	r.mu.Lock()
	rep.AckLatency = latencyOf(r.corrected)
	rep.AckLatencyUncorrected = latencyOf(r.uncorrected)
	rep.Timeline = append([]Second(nil), r.timeline...)
	r.mu.Unlock()
}

// WriteText writes the report as a table.
func (rep *RunReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "run\t%s\t\n", rep.Options)
	for _, n := range rep.Notes {
		fmt.Fprintf(tw, "note\t%s\t\n", n)
	}
	fmt.Fprintf(tw, "devices\t%d (fd limit %d)\t\n", rep.Devices, rep.FDLimit)
	fmt.Fprintf(tw, "frames sent / acked\t%d / %d (%d unacked)\t\n", rep.FramesSent, rep.FramesAcked, rep.Unacked)
	fmt.Fprintf(tw, "records sent\t%d\t\n", rep.RecordsSent)
	fmt.Fprintf(tw, "sent/s, acked/s\t%.0f, %.0f frames/s over %.1fs\t\n", rep.SentPerSec, rep.AckedPerSec, rep.SendSeconds)
	fmt.Fprintf(tw, "errors, reconnects\t%d, %d\t\n", rep.Errors, rep.Reconnects)
	if t := rep.Teltonika; t != nil {
		fmt.Fprintf(tw, "packets acked, records acked\t%d, %d (%.0f records/s)\t\n", t.Packets, t.RecordsAcked, t.RecordsPerSec)
		fmt.Fprintf(tw, "sends, resends\t%d, %d (short answers %d, timeouts %d, stray %d)\t\n", t.Sends, t.Resends, t.ShortAcks, t.AckTimeouts, t.StrayAnswers)
		fmt.Fprintf(tw, "Codec 12 commands answered\t%d\t\n", t.Commands)
	}
	if a := rep.Account; a != nil {
		what := "acknowledged"
		if rep.Lines != nil {
			what = "written (NDJSON: no ACKs)"
		}
		fmt.Fprintf(tw, "messages %s\t%d\t\n", what, a.Expected)
		fmt.Fprintf(tw, "delivered to the sink\t%d\t\n", a.Received)
		fmt.Fprintf(tw, "lost after acknowledgement\t%d (%d devices)\t\n", a.Lost, a.LostDevices)
		fmt.Fprintf(tw, "duplicates\t%d arrivals of %d messages\t\n", a.Dups, a.DupMessages)
		shown := 0
		for _, d := range a.Devices {
			if d.Lost == 0 {
				continue
			}
			if shown == 10 {
				fmt.Fprintf(tw, "\t(%d more devices with losses in the JSON report)\t\n", a.LostDevices-shown)
				break
			}
			fmt.Fprintf(tw, "lost %s\t%d of %d (seq %d..%d acknowledged)\t\n", d.Device, d.Lost, d.Expected, d.First, d.Acked)
			shown++
		}
		for _, k := range a.LostSample[:min(len(a.LostSample), 3)] {
			fmt.Fprintf(tw, "lost e.g.\t%s seq %d index %d\t\n", k.Device, k.Seq, k.Index)
		}
	}
	fmt.Fprintln(tw, "ACK latency (ms)\tp50\tp90\tp99\tp99.9\tmax\t")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"from due (corrected)", rep.AckLatency}, {"from write", rep.AckLatencyUncorrected}} {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.name, l.l.P50, l.l.P90, l.l.P99, l.l.P999, l.l.Max)
	}
	return tw.Flush()
}

// WriteJSON writes the report as indented JSON.
func (rep *RunReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// WriteHTML writes a self-contained page with SVG charts of throughput and latency over time.
func (rep *RunReport) WriteHTML(w io.Writer) error {
	var sent, acked, p99 []float64
	var ts []float64
	for _, s := range rep.Timeline {
		ts = append(ts, s.T)
		sent = append(sent, float64(s.Sent))
		acked = append(acked, float64(s.Acked))
		p99 = append(p99, s.P99ms)
	}
	var buf strings.Builder
	if err := rep.WriteText(&buf); err != nil {
		return err
	}
	return pageTmpl.Execute(w, map[string]any{
		"Title":      "loadgen run",
		"Summary":    buf.String(),
		"Throughput": template.HTML(SVGChart("frames/s", ts, []Series{{Name: "sent", Color: "#1f77b4", Values: sent}, {Name: "acked", Color: "#2ca02c", Values: acked}})),
		"Latency":    template.HTML(SVGChart("ACK latency p99 (ms)", ts, []Series{{Name: "p99", Color: "#d62728", Values: p99}})),
	})
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}</style></head>
<body><h1>{{.Title}}</h1><pre>{{.Summary}}</pre>
<h2>Throughput</h2>{{.Throughput}}
<h2>Latency</h2>{{.Latency}}
</body></html>
`))

// Series is one line of a chart.
type Series struct {
	Name, Color string
	Values      []float64 // NaN: no point
	Dash        string    // SVG stroke-dasharray, e.g. "6 3" for a floor drawn beside the relay ("": solid)
}

// tickLabel writes an axis value without an exponent: 0.25, 12.5, 68.2k, 1.3M.
func tickLabel(v float64) string {
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if v >= u.div {
			return strconv.FormatFloat(math.Round(v/u.div*100)/100, 'f', -1, 64) + u.suffix
		}
	}
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// roundUp rounds v up to a value whose quarters read well (12k: 3k, 6k, 9k, 12k).
func roundUp(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// SVGChart draws line series over x as an inline SVG (no scripts, no external assets).
func SVGChart(ylabel string, x []float64, ss []Series) string {
	const W, H, L, B, T, R = 720.0, 260.0, 70.0, 30.0, 20.0, 110.0
	xmax, ymax := 1.0, 1.0
	for _, v := range x {
		xmax = math.Max(xmax, v)
	}
	for _, s := range ss {
		for _, v := range s.Values {
			if !math.IsNaN(v) {
				ymax = math.Max(ymax, v)
			}
		}
	}
	ymax = roundUp(ymax)
	px := func(v float64) float64 { return L + v/xmax*(W-L-R) }
	py := func(v float64) float64 { return H - B - v/ymax*(H-B-T) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="11">`, W, H)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`, L, H-B, W-R, H-B)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`, L, T, L, H-B)
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, L-4, py(v)+4, tickLabel(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%ss</text>`, px(xmax*float64(i)/4), H-B+16, tickLabel(xmax*float64(i)/4))
	}
	fmt.Fprintf(&b, `<text x="12" y="%.0f" transform="rotate(-90 12 %.0f)" text-anchor="middle">%s</text>`, H/2, H/2, template.HTMLEscapeString(ylabel))
	for k, s := range ss {
		var pts []string
		for i, v := range s.Values {
			if i < len(x) && !math.IsNaN(v) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(x[i]), py(v)))
			}
		}
		dash := ""
		if s.Dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, template.HTMLEscapeString(s.Dash))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`, s.Color, dash, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`, W-R+8, T+14*float64(k+1), s.Color, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}
