package actors

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/netio"
)

// RegisterMetrics registers the collectors that read the system's state when scraped: the age of
// each route's oldest undelivered message, and the NDJSON lines the system dropped (reasons
// native and store of fleetrelay_ndjson_dropped_total; netio counts the others). The counters
// the actors update themselves are Options.Metrics (NewMetrics). Call it once per system and
// registry: it panics if reg has them already, as NewMetrics does.
func (s *System) RegisterMetrics(reg prometheus.Registerer) {
	var cs []prometheus.Collector
	for i, name := range s.Routes() {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetrelay_route_oldest_pending_seconds", Help: "Age of the oldest message a route has not delivered yet (0: none).",
			ConstLabels: prometheus.Labels{"route": name},
		}, func() float64 { return s.OldestPending(i).Seconds() }))
	}
	cs = append(cs, netio.NDJSONDropped("native", s.LinesRefused), netio.NDJSONDropped("store", s.LinesLost))
	reg.MustRegister(cs...)
}
