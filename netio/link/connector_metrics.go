package link

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collectors are the connector's metrics, read from its counters when scraped, labelled with
// its name: device and upstream connections open, devices accepted and refused, upstream dials failed by
// reason, bytes each way, pairs closed idle, pauses for backpressure and bytes held. Register
// them once per registry; several connectors' collectors go in one registry side by side.
func (c *Connector) Collectors() []prometheus.Collector {
	name := prometheus.Labels{"connector": c.cfg.Name}
	with := func(k, v string) prometheus.Labels { return prometheus.Labels{"connector": c.cfg.Name, k: v} }
	var cs []prometheus.Collector
	gauge := func(metric, help string, v func() int64) {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metric, Help: help, ConstLabels: name},
			func() float64 { return float64(v()) }))
	}
	counter := func(metric, help string, labels prometheus.Labels, v func() int64) {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: metric, Help: help, ConstLabels: labels},
			func() float64 { return float64(v()) }))
	}
	st := &c.st
	gauge("fleetrelay_connector_connections", "Device connections a TCP connector reads now (a device that half-closed, whose pair still carries the answer, no longer counts).", st.open.Load)
	gauge("fleetrelay_connector_upstream_connections", "Upstream connections a TCP connector reads now for its devices (likewise).", st.upOpen.Load)
	gauge("fleetrelay_connector_pairs", "Device connections a TCP connector holds now, from accept until both sides closed (what max_connections bounds).", st.pairs.Load)
	gauge("fleetrelay_connector_buffered_bytes", "Bytes a TCP connector holds for its pairs, both directions, as of each pair's last event.", st.buffered.Load)
	counter("fleetrelay_connector_accepted_total", "Device connections a TCP connector accepted.", name, st.accepted.Load)
	counter("fleetrelay_connector_refused_total", "Device connections a TCP connector closed at accept, by reason: max_connections (that many were held).",
		with("reason", "max_connections"), st.refusedMax.Load)
	const failHelp = "Upstream dials of a TCP connector that failed, by reason: refused (nothing listens), " +
		"timeout (no answer within connect_timeout), other; each closed its device connection."
	counter("fleetrelay_connector_upstream_failures_total", failHelp, with("reason", "refused"), st.refused.Load)
	counter("fleetrelay_connector_upstream_failures_total", failHelp, with("reason", "timeout"), st.timeout.Load)
	counter("fleetrelay_connector_upstream_failures_total", failHelp, with("reason", "other"), st.other.Load)
	const bytesHelp = "Bytes a TCP connector carried, by direction (to_upstream: sent by devices)."
	counter("fleetrelay_connector_bytes_total", bytesHelp, with("direction", "to_upstream"), st.toUp.Load)
	counter("fleetrelay_connector_bytes_total", bytesHelp, with("direction", "to_device"), st.toDev.Load)
	counter("fleetrelay_connector_idle_closed_total", "Pairs a TCP connector closed for carrying nothing for idle_timeout.", name, st.idle.Load)
	counter("fleetrelay_connector_paused_total", "Times a TCP connector stopped reading a connection because its peer held a full buffer.", name, st.paused.Load)
	return cs
}
