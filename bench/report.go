package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// WriteFiles writes <dir>/<scenario>.json and <dir>/<scenario>.html.
func (r *Result) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, r.Scenario+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, r.Scenario+".html"))
	if err != nil {
		return err
	}
	if err := r.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteHTML writes a self-contained page for a person: the scenario's table (ratios to the
// floors first), every run, and charts of the relay with its floors drawn beside it (dashed):
// messages acknowledged and delivered per second, ACK p99 per second, memory, and the ACK latency
// distribution on a log 1/(1-p) axis as HdrHistogram and wrk2 plot it.
func (r *Result) WriteHTML(w io.Writer) error {
	if r.Link != nil {
		return r.writeLinkHTML(w)
	}
	main, runs := mainTable([]*Result{r}), runsTable([]*Result{r})
	var extra []table // the crash or backlog table
	if r.Crash != nil {
		var b strings.Builder
		writeCrashTable(&b, []*Result{r})
		extra = append(extra, parseMarkdownTable(b.String()))
	}
	if r.Backlog != nil {
		var b strings.Builder
		writeBacklogTable(&b, []*Result{r})
		extra = append(extra, parseMarkdownTable(b.String()))
	}
	if r.Cluster != nil && r.Failover == nil {
		var b strings.Builder
		writeClusterTable(&b, []*Result{r})
		extra = append(extra, parseMarkdownTable(strings.ReplaceAll(b.String(), "**", "")))
	}
	if r.Failover != nil {
		var b, k strings.Builder
		writeFailoverTable(&b, []*Result{r})
		writeFailoverKills(&k, r)
		extra = append(extra, parseMarkdownTable(b.String()), parseMarkdownTable(k.String()))
	}
	var floors []*Result
	if c := r.Floors; c != nil {
		floors = c.FloorRuns
	}
	all := append([]*Result{r}, floors...)
	var ackedS, p99S, rssS, delS []loadgen.Series
	var ackedX, rssX, delX []float64
	for _, x := range all {
		st := styleOf(x.Target)
		recs := float64(max(x.Config.Load.Records, 1))
		if x.Config.Load.RecordsMax > 0 && x.FramesAcked > 0 { // Teltonika packets vary: their mean
			recs = float64(x.MessagesAcked) / float64(x.FramesAcked)
		}
		var ts, acked, p99 []float64
		for _, s := range x.Timeline {
			ts = append(ts, s.T)
			acked = append(acked, float64(s.Acked)*recs)
			p99 = append(p99, s.P99ms)
		}
		if len(ts) > len(ackedX) {
			ackedX = ts
		}
		if x.Target != FloorAck {
			ackedS = append(ackedS, loadgen.Series{Name: st.name + " acked", Color: st.color, Dash: st.dash, Values: acked})
		} else {
			ackedS = append(ackedS, loadgen.Series{Name: st.name, Color: st.color, Dash: st.dash, Values: acked})
		}
		p99S = append(p99S, loadgen.Series{Name: st.name, Color: st.color, Dash: st.dash, Values: p99})
		var rx []float64
		for i := range x.RelayRSSMiB {
			rx = append(rx, float64(i+1))
		}
		if len(rx) > len(rssX) {
			rssX = rx
		}
		rssS = append(rssS, loadgen.Series{Name: st.name, Color: st.color, Dash: st.dash, Values: x.RelayRSSMiB})
		if x.Target == FloorAck {
			continue
		}
		dx, dv := deliveredPerSecond(x)
		if len(dx) > len(delX) {
			delX = dx
		}
		delS = append(delS, loadgen.Series{Name: st.name, Color: st.color, Dash: st.dash, Values: dv})
	}
	var lat []pctSeries
	for _, x := range all {
		if len(x.AckLatency.Percentiles) > 0 {
			st := styleOf(x.Target)
			lat = append(lat, pctSeries{name: st.name, color: st.color, dash: st.dash, points: x.AckLatency.Percentiles})
		}
	}
	var backlog, backlogMem, flowBacklog template.HTML
	if b := r.Backlog; b != nil && len(b.Samples) > 0 {
		var bx, q, anon, file []float64
		for _, x := range b.Samples {
			bx = append(bx, x.T)
			q = append(q, float64(x.Backlog))
			anon = append(anon, x.AnonMiB)
			file = append(file, x.FileMiB)
		}
		backlog = template.HTML(loadgen.SVGChart("queued messages", bx, []loadgen.Series{{Name: "backlog", Color: "#ff7f0e", Values: q}}))
		backlogMem = template.HTML(loadgen.SVGChart("relay memory (MiB)", bx, []loadgen.Series{
			{Name: "RssAnon", Color: "#8c564b", Values: anon}, {Name: "RssFile", Color: "#17becf", Values: file}}))
	}
	if su := r.Sustained; su != nil && len(su.Samples) > 1 {
		var fx, acked, metric []float64
		for _, x := range su.Samples {
			fx = append(fx, x.T)
			acked = append(acked, float64(x.Backlog))
			m := math.NaN()
			if x.Metric >= 0 {
				m = float64(x.Metric)
			}
			metric = append(metric, m)
		}
		flowBacklog = template.HTML(loadgen.SVGChart("messages", fx, []loadgen.Series{
			{Name: "acked − delivered", Color: "#1f77b4", Values: acked}, {Name: "backlog metric", Color: "#ff7f0e", Dash: "4 2", Values: metric}}))
	}
	var dist template.HTML
	if len(lat) > 0 {
		dist = template.HTML(percentileChart(lat))
	}
	var delivered template.HTML
	if len(delS) > 0 && len(delX) > 0 {
		delivered = template.HTML(loadgen.SVGChart("delivered msgs/s", delX, delS))
	}
	return page.Execute(w, map[string]any{
		"Backlog":     backlog,
		"BacklogMem":  backlogMem,
		"FlowBacklog": flowBacklog,
		"Name":        r.Scenario,
		"Desc":        r.Description,
		"Main":        main,
		"Runs":        runs,
		"Extra":       extra,
		"Notes":       r.Notes,
		"Sustained":   sustainedText(r),
		"Load":        template.HTML(loadgen.SVGChart("acked msgs/s", ackedX, ackedS)),
		"Sink":        delivered,
		"Lat":         template.HTML(loadgen.SVGChart("ACK p99 (ms)", ackedX, p99S)),
		"Dist":        dist,
		"RSS":         template.HTML(loadgen.SVGChart("RSS (MiB)", rssX, rssS)),
	})
}

// deliveredPerSecond is what the sink received each second of a run: from the flow samples
// (seconds since the load started) when there are some, else the sink's own seconds.
func deliveredPerSecond(r *Result) (x, v []float64) {
	if su := r.Sustained; su != nil && len(su.Samples) > 1 {
		for i := 1; i < len(su.Samples); i++ {
			a, b := su.Samples[i-1], su.Samples[i]
			x = append(x, b.T)
			v = append(v, float64(b.Delivered-a.Delivered)/(b.T-a.T))
		}
		return x, v
	}
	for i, n := range r.SinkPerSecond {
		x = append(x, float64(i+1))
		v = append(v, float64(n))
	}
	return x, v
}

type style struct{ name, color, dash string }

// styleOf draws the relay solid and each floor dashed in its own colour.
func styleOf(target string) style {
	switch target {
	case FloorAck:
		return style{"ACK floor", "#2ca02c", "6 3"}
	case FloorPipeline:
		return style{"pipeline floor", "#ff7f0e", "2 3"}
	case FloorBadger:
		return style{"badger mode", "#9467bd", "6 3"}
	}
	return style{"relay", "#1f77b4", ""}
}

// sustainedText says in words what Sustained measured, or "" without it.
func sustainedText(r *Result) string {
	su := r.Sustained
	if su == nil || su.AckedPerSec == 0 {
		return ""
	}
	t := fmt.Sprintf("From %.0f s to %.0f s of the load: %s msgs/s acknowledged, %s msgs/s delivered (%.2f), backlog %s.",
		su.FromSeconds, su.ToSeconds, Count(su.AckedPerSec), Count(su.DeliveredPerSec), su.Ratio, slopeText(su.BacklogSlope, su.AckedPerSec))
	if su.KeptUp {
		return t + " Delivery kept up: the relay sustains at least " + Count(su.Rate) + " msgs/s."
	}
	t += " Delivery fell behind: delivered ≈ acked at " + Count(su.Rate) + " msgs/s or more (delivery's rate while ingest took what it could)"
	if su.DrainPerSec > su.Rate {
		t += " and at most " + Count(su.DrainPerSec) + " msgs/s (delivery alone, draining the backlog after the load)"
	}
	return t + "."
}

// slopeText is a backlog's growth per second, or "flat" within 1% of the acknowledged rate.
func slopeText(v, acked float64) string {
	switch {
	case math.Abs(v) <= 0.01*acked:
		return "flat"
	case v > 0:
		return "+" + Count(v) + "/s"
	}
	return "−" + Count(-v) + "/s"
}

var page = template.Must(template.New("bench").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>bench: {{.Name}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:80em}
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}th.ratio,td.ratio{background:#eef5ff;font-weight:bold}</style></head>
<body><h1>{{.Name}}</h1><p>{{.Desc}}</p>
{{with .Main}}<table><tr>{{range .Head}}<th{{if .Ratio}} class="ratio"{{end}}>{{.Text}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td{{if .Ratio}} class="ratio"{{end}}>{{.Text}}</td>{{end}}</tr>{{end}}</table>{{end}}
<p>Ratios (shaded) are the relay's median divided by its floor's, measured in the same invocation: the ACK floor (a minimal gnet server that acknowledges each frame on receipt and stores nothing) for CPU, ACK latency and memory; the pipeline floor (the same, forwarding every record to the sink as the route would, without storing) for delivery.</p>
{{with .Runs}}{{if .Rows}}<h2>Every run, in the order they ran</h2><table><tr>{{range .Head}}<th>{{.Text}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.Text}}</td>{{end}}</tr>{{end}}</table>{{end}}{{end}}
{{range .Extra}}<table><tr>{{range .Head}}<th>{{.Text}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.Text}}</td>{{end}}</tr>{{end}}</table>{{end}}
{{if .Sustained}}<p>{{.Sustained}}</p>{{end}}
{{range .Notes}}<p>note: {{.}}</p>{{end}}
<h2>Acknowledged messages per second</h2>{{.Load}}
{{if .Sink}}<h2>Delivered to the sink per second</h2>{{.Sink}}{{end}}
{{if .FlowBacklog}}<h2>Backlog while the fleet sent</h2>{{.FlowBacklog}}{{end}}
{{if .Dist}}<h2>ACK latency distribution (from when each frame was due)</h2>{{.Dist}}{{end}}
<h2>ACK latency, p99 per second</h2>{{.Lat}}
<h2>Memory (RSS)</h2>{{.RSS}}
{{if .Backlog}}<h2>Backlog build-up</h2>{{.Backlog}}{{.BacklogMem}}{{end}}
</body></html>
`))

// writeLinkHTML writes a device-link result's page: its tables (ratios first, then every run)
// and notes.
func (r *Result) writeLinkHTML(w io.Writer) error {
	var main, runs strings.Builder
	writeLinkTable(&main, []*Result{r})
	writeLinkRuns(&runs, []*Result{r})
	return linkPage.Execute(w, map[string]any{
		"Name":  r.Scenario,
		"Desc":  r.Description,
		"Main":  parseMarkdownTable(strings.ReplaceAll(main.String(), "**", "")),
		"Runs":  parseMarkdownTable(runs.String()),
		"Notes": r.Notes,
	})
}

var linkPage = template.Must(template.New("link").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>bench: {{.Name}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:90em}
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}</style></head>
<body><h1>{{.Name}}</h1><p>{{.Desc}}</p>
{{with .Main}}<table><tr>{{range .Head}}<th>{{.Text}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.Text}}</td>{{end}}</tr>{{end}}</table>{{end}}
<p>Ratios are the relay's link (medians over the rounds) divided by its floors' measured in the same invocation: direct (the client talking to the device echo over one loopback connection; with AES, to an echo that plays the relay's end of an encrypted link) and an io.Copy proxy of its own process (a goroutine each way). Added p99 is the link's p99 round trip minus the floor's.</p>
<h2>Every run, in the order they ran</h2>
{{with .Runs}}<table><tr>{{range .Head}}<th>{{.Text}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.Text}}</td>{{end}}</tr>{{end}}</table>{{end}}
{{range .Notes}}<p>note: {{.}}</p>{{end}}
</body></html>
`))

// pctSeries is one latency distribution of the percentile chart.
type pctSeries struct {
	name, color, dash string
	points            []loadgen.Percentile
}

// percentileChart draws latency distributions as HdrHistogram and wrk2 users know them: x the
// percentile on a log 1/(1-p) scale from 50% to 99.99%, y the latency in ms.
func percentileChart(ss []pctSeries) string {
	const W, H, L, B, T, R = 720.0, 300.0, 70.0, 34.0, 20.0, 130.0
	xOf := func(p float64) float64 { return math.Log10(1 / (1 - math.Min(p, 99.99)/100)) }
	x0, x1 := xOf(50), xOf(99.99)
	ymax := 0.0
	for _, s := range ss {
		for _, p := range s.points {
			ymax = math.Max(ymax, p.Ms)
		}
	}
	ymax = niceCeil(ymax)
	px := func(p float64) float64 { return L + (xOf(p)-x0)/(x1-x0)*(W-L-R) }
	py := func(v float64) float64 { return H - B - v/ymax*(H-B-T) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="11">`, W, H)
	for _, p := range []float64{50, 90, 99, 99.9, 99.99} {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e3e3e3"/>`, px(p), T, px(p), H-B)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s%%</text>`, px(p), H-B+16, strconv.FormatFloat(p, 'f', -1, 64))
	}
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e3e3e3"/>`, L, py(v), W-R, py(v))
		label := Millis(v)
		if v == 0 {
			label = "0"
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, L-4, py(v)+4, label)
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`,
		L, H-B, W-R, H-B, L, T, L, H-B)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">percentile (log 1/(1-p) scale)</text>`, (L+W-R)/2, H-4)
	fmt.Fprintf(&b, `<text x="12" y="%.0f" transform="rotate(-90 12 %.0f)" text-anchor="middle">ACK latency (ms)</text>`, H/2, H/2)
	for k, s := range ss {
		var pts []string
		for _, p := range s.points {
			if p.P >= 50 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.P), py(p.Ms)))
			}
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`, s.color, dash, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`, W-R+8, T+14*float64(k+1), s.color, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// WriteMarkdown writes one table row per result, then a table of the crash results and one of
// the backlog results among them, if any; device-link results have tables of their own (their
// medians with the ratios first, then every run).
func WriteMarkdown(w io.Writer, rs []*Result) {
	var fleet, links []*Result
	for _, r := range rs {
		if r.Link != nil {
			links = append(links, r)
		} else {
			fleet = append(fleet, r)
		}
	}
	if len(fleet) > 0 {
		mainTable(fleet).markdown(w)
		if runs := runsTable(fleet); len(runs.Rows) > 0 {
			fmt.Fprintln(w)
			runs.markdown(w)
		}
	}
	if len(links) > 0 {
		if len(fleet) > 0 {
			fmt.Fprintln(w)
		}
		writeLinkTable(w, links)
		fmt.Fprintln(w)
		writeLinkRuns(w, links)
	}
	var crash, backlog, clustered, failover []*Result
	for _, r := range fleet {
		if r.Crash != nil {
			crash = append(crash, r)
		}
		if r.Failover != nil {
			failover = append(failover, r)
		} else if r.Cluster != nil {
			clustered = append(clustered, r)
		}
		if r.Backlog != nil {
			backlog = append(backlog, r)
		}
	}
	if len(crash) > 0 {
		fmt.Fprintln(w)
		writeCrashTable(w, crash)
	}
	if len(backlog) > 0 {
		fmt.Fprintln(w)
		writeBacklogTable(w, backlog)
	}
	if len(clustered) > 0 {
		fmt.Fprintln(w)
		writeClusterTable(w, clustered)
	}
	if len(failover) > 0 {
		fmt.Fprintln(w)
		writeFailoverTable(w, failover)
	}
}

// writeCrashTable: kills done, messages acknowledged, delivered, lost and duplicated, and how
// long the relay took to come back.
func writeCrashTable(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| crash scenario | devices | kills done | messages acked | delivered | lost | duplicates (arrivals / messages) | queued at a kill p50 / max | kill → ready p50 / max ms | kill → next ACK p50 / max ms | kill → next delivery p50 / max ms | killed before delivering |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		c := r.Crash
		var queued []float64
		for _, x := range c.Restarts {
			queued = append(queued, float64(x.Backlog))
		}
		fmt.Fprintf(w, "| %s | %d | %d of %d | %d | %d | %d | %d / %d | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %d |\n",
			r.Scenario, r.Devices, len(c.Restarts), c.Kills, r.Account.Expected, r.Account.Received, r.Account.Lost,
			r.Account.Dups, r.Account.DupMessages, median(queued), slices.Max(append(queued, 0)),
			c.ReadyP50Ms, c.ReadyMaxMs, c.AckP50Ms, c.AckMaxMs, c.DeliverP50Ms, c.DeliverMaxMs, c.Undelivered)
	}
}

// writeBacklogTable: memory without and with the backlog, the restart with it, the drain.
func writeBacklogTable(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| backlog scenario | queued msgs | RSS idle: VmRSS (anon / file) | RSS at backlog: VmRSS (anon / file) | B per queued msg: anon (marginal) / VmRSS | disk | stop | start-up | RSS after start-up: VmRSS (anon / file) | drain msgs/s | lost |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	mem := func(m Mem) string { return fmt.Sprintf("%.0f MiB (%.0f / %.0f)", m.RSSMiB, m.AnonMiB, m.FileMiB) }
	for _, r := range rs {
		b := r.Backlog
		fmt.Fprintf(w, "| %s | %d | %s | %s | %.0f (%.0f) / %.0f | %.0f MiB | %.1f s | %.1f s | %s | %s | %d |\n",
			r.Scenario, b.Backlog, mem(b.Idle), mem(b.AtBacklog), b.AnonBytesPerMessage, b.MarginalAnonBytesPerMessage,
			b.RSSBytesPerMessage, b.DiskMiB, b.StopSeconds, b.StartSeconds, mem(b.AfterStart), num(b.DrainPerSec), r.Account.Lost)
	}
}

// cell is one table cell; ratio cells are the relay's figure divided by its floor's.
type cell struct {
	Text  string
	Ratio bool
}

// table is a table of cells, rendered as Markdown by bench and as HTML in the report pages.
type table struct {
	Head []cell
	Rows [][]cell
}

// parseMarkdownTable reads back a table written as Markdown (header, separator, rows).
func parseMarkdownTable(md string) table {
	var t table
	for _, line := range strings.Split(strings.TrimSpace(md), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		var cs []cell
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cs = append(cs, cell{Text: strings.TrimSpace(c)})
		}
		if t.Head == nil {
			t.Head = cs
		} else {
			t.Rows = append(t.Rows, cs)
		}
	}
	return t
}

func (t table) markdown(w io.Writer) {
	line := func(cs []cell) {
		var b strings.Builder
		b.WriteString("|")
		for _, c := range cs {
			b.WriteString(" " + c.Text + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.Head)
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(t.Head)))
	for _, r := range t.Rows {
		line(r)
	}
}

// mainTable has one row per result: the ratios to the floors first, then the relay's figures
// (medians when it ran several times), then the floors'.
func mainTable(rs []*Result) table {
	t := table{}
	for _, h := range []string{"CPU/frame ÷ floor", "CPU/msg ÷ floor", "ACK p50 ÷ floor", "ACK p99 ÷ floor", "RSS peak ÷ floor", "delivered ÷ pipeline floor"} {
		t.Head = append(t.Head, cell{h, true})
	}
	t.Head = append([]cell{{Text: "scenario"}}, t.Head...)
	for _, h := range []string{"runs", "acked msgs/s", "delivered msgs/s", "while sending: delivered ÷ acked, backlog, sustained rate",
		"CPU/frame", "CPU/msg", "ACK p50 / p99 / p99.9", "end-to-end p50 / p99", "RSS peak",
		"ACK floor: CPU/frame, ACK p50 / p99, RSS", "pipeline floor: delivered msgs/s, CPU/msg", "loadgen+sink CPU/msg", "RSS/conn", "lost", "dups"} {
		t.Head = append(t.Head, cell{Text: h})
	}
	for _, r := range rs {
		f := figuresOf(r, 0)
		var ra Ratios
		runs := "1"
		floorAck, floorPipe := "–", "–"
		if c := r.Floors; c != nil {
			f, ra, runs = c.Relay, c.Ratios, strconv.Itoa(c.Count)
			if a := c.Ack; a != nil {
				floorAck = fmt.Sprintf("%s, %s / %s, %s", Micros(a.CPUPerFrameUs), Millis(a.AckP50Ms), Millis(a.AckP99Ms), MiB(a.RSSPeakMiB))
			}
			if p := c.Pipe; p != nil {
				floorPipe = fmt.Sprintf("%s, %s", Count(p.DeliveredPerSec), Micros(p.CPUPerMsgUs))
			}
		}
		sustained := "–"
		if su := r.Sustained; su != nil && su.AckedPerSec > 0 {
			sustained = fmt.Sprintf("%.2f, %s, ≥ %s msgs/s", f.DeliveredOverAcked, slopeText(f.BacklogSlope, su.AckedPerSec), Count(f.SustainedRate))
			if !su.KeptUp && f.DrainPerSec > f.SustainedRate {
				sustained = fmt.Sprintf("%.2f, %s, %s–%s msgs/s", f.DeliveredOverAcked, slopeText(f.BacklogSlope, su.AckedPerSec), Count(f.SustainedRate), Count(f.DrainPerSec))
			}
		}
		harness := "–"
		if r.RelayCPUSeconds > 0 && r.BenchCPUSeconds > 0 && r.RelayCPUPerMsg > 0 {
			harness = Micros(r.BenchCPUSeconds / r.RelayCPUSeconds * r.RelayCPUPerMsg)
		}
		perConn := "–"
		if r.RSSPerConnKiB > 0 {
			perConn = fmt.Sprintf("%.2f KiB", r.RSSPerConnKiB)
		}
		ackLat := "–"
		if f.AckP50Ms > 0 || f.AckP99Ms > 0 {
			ackLat = Millis(f.AckP50Ms) + " / " + Millis(f.AckP99Ms) + " / " + Millis(f.AckP999Ms)
		}
		e2e := "–"
		if r.EndToEnd.Count > 0 {
			e2e = Millis(float64(r.EndToEnd.P50)/1000) + " / " + Millis(float64(r.EndToEnd.P99)/1000)
		}
		row := []cell{{Text: r.Scenario}}
		for _, v := range []float64{ra.CPUPerFrame, ra.CPUPerMsg, ra.AckP50, ra.AckP99, ra.RSSPeak, ra.Delivered} {
			row = append(row, cell{Ratio(v), true})
		}
		for _, v := range []string{runs, Count(f.AckedPerSec), Count(f.DeliveredPerSec), sustained,
			Micros(f.CPUPerFrameUs), Micros(f.CPUPerMsgUs), ackLat, e2e, MiB(f.RSSPeakMiB), floorAck, floorPipe,
			harness, perConn, strconv.FormatInt(r.Account.Lost, 10), strconv.FormatInt(r.Account.Dups, 10)} {
			row = append(row, cell{Text: v})
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// runsTable has one row per run of every result that ran beside its floors.
func runsTable(rs []*Result) table {
	t := table{}
	for _, h := range []string{"scenario", "run", "target", "acked msgs/s", "delivered msgs/s", "CPU/frame", "CPU/msg", "ACK p50 / p99", "RSS peak", "delivered ÷ acked", "lost"} {
		t.Head = append(t.Head, cell{Text: h})
	}
	for _, r := range rs {
		c := r.Floors
		if c == nil {
			continue
		}
		for _, f := range c.Runs {
			da := "–"
			if f.DeliveredOverAcked > 0 {
				da = fmt.Sprintf("%.2f", f.DeliveredOverAcked)
			}
			t.Rows = append(t.Rows, []cell{{Text: r.Scenario}, {Text: strconv.Itoa(f.Run)}, {Text: styleOf(f.Target).name},
				{Text: Count(f.AckedPerSec)}, {Text: Count(f.DeliveredPerSec)}, {Text: Micros(f.CPUPerFrameUs)}, {Text: Micros(f.CPUPerMsgUs)},
				{Text: Millis(f.AckP50Ms) + " / " + Millis(f.AckP99Ms)}, {Text: MiB(f.RSSPeakMiB)}, {Text: da}, {Text: strconv.FormatInt(f.Lost, 10)}})
		}
	}
	return t
}

func num(v float64) string { return Count(v) }
