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

// WriteHTML writes a self-contained page: the summary row and charts of throughput, ACK latency
// and relay memory over time.
func (r *Result) WriteHTML(w io.Writer) error {
	var ts, sent, acked, p99, sink, rss []float64
	for _, s := range r.Timeline {
		ts = append(ts, s.T)
		sent = append(sent, float64(s.Sent*int64(max(r.Config.Load.Records, 1))))
		acked = append(acked, float64(s.Acked*int64(max(r.Config.Load.Records, 1))))
		p99 = append(p99, s.P99ms)
	}
	var sx []float64
	for i, n := range r.SinkPerSecond {
		sx = append(sx, float64(i+1))
		sink = append(sink, float64(n))
	}
	var rx []float64
	for i, v := range r.RelayRSSMiB {
		rx = append(rx, float64(i+1))
		rss = append(rss, v)
	}
	var table strings.Builder
	WriteMarkdown(&table, []*Result{r})
	var backlog, backlogMem template.HTML
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
	return page.Execute(w, map[string]any{
		"Backlog":    backlog,
		"BacklogMem": backlogMem,
		"Name":       r.Scenario,
		"Desc":       r.Description,
		"Table":      table.String(),
		"Notes":      r.Notes,
		"Load": template.HTML(loadgen.SVGChart("messages/s", ts, []loadgen.Series{
			{Name: "sent", Color: "#1f77b4", Values: sent}, {Name: "acked", Color: "#2ca02c", Values: acked}})),
		"Sink": template.HTML(loadgen.SVGChart("delivered/s", sx, []loadgen.Series{{Name: "sink", Color: "#9467bd", Values: sink}})),
		"Lat":  template.HTML(loadgen.SVGChart("ACK p99 (ms)", ts, []loadgen.Series{{Name: "p99", Color: "#d62728", Values: p99}})),
		"RSS":  template.HTML(loadgen.SVGChart("relay RSS (MiB)", rx, []loadgen.Series{{Name: "RSS", Color: "#8c564b", Values: rss}})),
	})
}

var page = template.Must(template.New("bench").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>bench: {{.Name}}</title>
<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head>
<body><h1>{{.Name}}</h1><p>{{.Desc}}</p><pre>{{.Table}}</pre>
{{range .Notes}}<p>note: {{.}}</p>{{end}}
<h2>Load (messages per second)</h2>{{.Load}}
<h2>Delivered to the sink</h2>{{.Sink}}
<h2>ACK latency, p99 per second</h2>{{.Lat}}
<h2>Relay memory</h2>{{.RSS}}
{{if .Backlog}}<h2>Backlog build-up</h2>{{.Backlog}}{{.BacklogMem}}{{end}}
</body></html>
`))

// WriteMarkdown writes one table row per result, then a table of the crash results and one of
// the backlog results among them, if any.
func WriteMarkdown(w io.Writer, rs []*Result) {
	writeMainTable(w, rs)
	var crash, backlog []*Result
	for _, r := range rs {
		if r.Crash != nil {
			crash = append(crash, r)
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

// writeMainTable writes one row per result.
func writeMainTable(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| scenario | devices | acked msgs/s | delivered msgs/s | ACK p50 / p99 / p99.9 ms | end-to-end p50 / p99 ms | relay µs/msg | loadgen+sink µs/msg | relay RSS peak | RSS/conn | lost | dups |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		perConn := "–"
		if r.RSSPerConnKiB > 0 {
			perConn = fmt.Sprintf("%.2f KiB", r.RSSPerConnKiB)
		}
		cpu, harness := "–", "–"
		if r.RelayCPUPerMsg > 0 {
			cpu = fmt.Sprintf("%.2f", r.RelayCPUPerMsg)
			if r.BenchCPUSeconds > 0 {
				harness = fmt.Sprintf("%.2f", r.BenchCPUSeconds/r.RelayCPUSeconds*r.RelayCPUPerMsg)
			}
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %.0f MiB | %s | %d | %d |\n",
			r.Scenario, r.Devices, num(r.AckedPerSec), num(r.DeliveredPerSec),
			triple(r.AckLatency.P50, r.AckLatency.P99, r.AckLatency.P999),
			pair(float64(r.EndToEnd.P50)/1000, float64(r.EndToEnd.P99)/1000),
			cpu, harness, r.RelayRSSPeakMiB, perConn, r.Account.Lost, r.Account.Dups)
	}
}

func num(v float64) string {
	if v == 0 || math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func triple(a, b, c float64) string {
	if a == 0 && b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f", a, b, c)
}

func pair(a, b float64) string {
	if a == 0 && b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f", a, b)
}
