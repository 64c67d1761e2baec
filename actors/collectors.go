package actors

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/netio"
)

// RegisterMetrics registers the collectors that read the system's state when scraped: the age of
// each route's oldest undelivered message (of the routes running at the scrape), and the NDJSON
// lines the system dropped (reasons native and store of fleetrelay_ndjson_dropped_total; netio
// counts the others). The counters the actors update themselves are Options.Metrics
// (NewMetrics). Call it once per system and registry: it panics if reg has them already, as
// NewMetrics does.
func (s *System) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(oldestCollector{s}, netio.NDJSONDropped("native", s.LinesRefused), netio.NDJSONDropped("store", s.LinesLost))
	reg.MustRegister(s.teltonikaCollectors()...)
}

var oldestDesc = prometheus.NewDesc("fleetrelay_route_oldest_pending_seconds",
	"Age of the oldest message a route has not delivered yet (0: none).", []string{"route"}, nil)

// oldestCollector reports fleetrelay_route_oldest_pending_seconds of the routes the system runs
// when scraped: routes come and go (PutRoute, RemoveRoute).
type oldestCollector struct{ s *System }

func (c oldestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- oldestDesc }

func (c oldestCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ref := range c.s.table.Load().routes {
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, c.s.oldestPending(ref).Seconds(), ref.r.Name)
	}
}
