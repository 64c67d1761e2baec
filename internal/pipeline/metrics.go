package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// Metrics are the delivery requests' Prometheus collectors, labelled by route. A nil *Metrics
// records nothing. Safe for concurrent use.
type Metrics struct {
	Attempts *prometheus.CounterVec   // route, outcome (success, status, error)
	Retried  *prometheus.CounterVec   // route: requests that retried a batch
	Failed   *prometheus.CounterVec   // route: messages of failed requests
	Latency  *prometheus.HistogramVec // route
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_requests_total", Help: "Delivery requests by outcome: success (a status among the route's success codes), status (any other HTTP status) or error (transport).",
		}, []string{"route", "outcome"}),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_retries_total", Help: "Delivery requests that retried a batch after a failed attempt (included in fleetrelay_route_requests_total).",
		}, []string{"route"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_failed_messages_total", Help: "Messages of failed requests (a non-success status or a transport error), counted once per failed attempt.",
		}, []string{"route"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetrelay_route_request_seconds", Help: "Delivery request latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
	}
	reg.MustRegister(m.Attempts, m.Retried, m.Failed, m.Latency)
	return m
}

// routeMetrics are one route's collectors, looked up once. A nil *routeMetrics records nothing.
type routeMetrics struct {
	failedMsgs, retried prometheus.Counter
	ok, status, failed  prometheus.Counter // requests by outcome
	latency             prometheus.Observer
}

// route returns the collectors of the named route (nil for a nil m).
func (m *Metrics) route(name string) *routeMetrics {
	if m == nil {
		return nil
	}
	return &routeMetrics{
		failedMsgs: m.Failed.WithLabelValues(name), retried: m.Retried.WithLabelValues(name),
		ok: m.Attempts.WithLabelValues(name, "success"), status: m.Attempts.WithLabelValues(name, "status"),
		failed: m.Attempts.WithLabelValues(name, "error"), latency: m.Latency.WithLabelValues(name),
	}
}

// attempt records one attempt of a batch of n messages; p decides what counts as success.
func (rm *routeMetrics) attempt(p *deliver.Policy, n, attempt int, res deliver.Result) {
	if rm == nil {
		return
	}
	rm.latency.Observe(res.Latency.Seconds())
	if attempt > 0 {
		rm.retried.Inc()
	}
	switch {
	case res.Err != nil:
		rm.failed.Inc()
		rm.failedMsgs.Add(float64(n))
	case p.Succeeded(res.Status):
		rm.ok.Inc()
	default:
		rm.status.Inc()
		rm.failedMsgs.Add(float64(n))
	}
}
