package actors

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// Metrics are the actors' Prometheus collectors. A nil *Metrics records nothing.
type Metrics struct {
	Delivered *prometheus.CounterVec   // route
	Attempts  *prometheus.CounterVec   // route, outcome (success, status, error)
	Retried   *prometheus.CounterVec   // route: requests that retried a batch
	Failed    *prometheus.CounterVec   // route: messages of failed requests
	Dead      *prometheus.CounterVec   // route: messages moved to the dead-letter list
	Latency   *prometheus.HistogramVec // route
	Queued    *prometheus.GaugeVec     // route
	Stored    prometheus.Histogram     // DATA frame arrival to store commit
	// DeviceActors counts live device actors: identities that sent something lately. A
	// connected device that has been quiet for the device idle time holds none.
	DeviceActors prometheus.Gauge
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_delivered_messages_total", Help: "Messages a route's endpoint accepted.",
		}, []string{"route"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_requests_total", Help: "Delivery requests by outcome: success, status (a non-success HTTP status) or error (transport).",
		}, []string{"route", "outcome"}),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_retries_total", Help: "Delivery requests that retried a batch after a failed attempt (included in fleetrelay_route_requests_total).",
		}, []string{"route"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_failed_messages_total", Help: "Messages of failed requests (a non-success status or a transport error), counted once per failed attempt.",
		}, []string{"route"}),
		Dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_dead_lettered_messages_total", Help: "Messages moved to the route's dead-letter list after max_attempts or retention.",
		}, []string{"route"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetrelay_route_request_seconds", Help: "Delivery request latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		Queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetrelay_route_queued_messages", Help: "Messages held in memory for a route (the store may hold more).",
		}, []string{"route"}),
		DeviceActors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetrelay_device_actors", Help: "Device actors alive: identities that sent something lately (a connected but quiet device holds none).",
		}),
	}
	m.Stored = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fleetrelay_frame_store_seconds",
		Help:    "From a native DATA frame's arrival (the read that completed it) to its commit in the store; with persist acks its ACK is written right after.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	reg.MustRegister(m.Stored, m.Delivered, m.Attempts, m.Retried, m.Failed, m.Dead, m.Latency, m.Queued, m.DeviceActors)
	return m
}

func (m *Metrics) stored(since time.Time) {
	if m != nil && !since.IsZero() {
		m.Stored.Observe(time.Since(since).Seconds())
	}
}

func (m *Metrics) delivered(route string, n int) {
	if m != nil {
		m.Delivered.WithLabelValues(route).Add(float64(n))
	}
}

func (m *Metrics) dead(route string, n int) {
	if m != nil {
		m.Dead.WithLabelValues(route).Add(float64(n))
	}
}

func (m *Metrics) deviceActors(delta int) {
	if m != nil {
		m.DeviceActors.Add(float64(delta))
	}
}

func (m *Metrics) queued(route string, n int) {
	if m != nil {
		m.Queued.WithLabelValues(route).Set(float64(n))
	}
}

// observe returns the per-attempt hook for one batch of n messages of a route.
func (m *Metrics) observe(route string, p *deliver.Policy, n int) func(attempt int, res deliver.Result) {
	if m == nil {
		return nil
	}
	failedMsgs := m.Failed.WithLabelValues(route)
	lat := m.Latency.WithLabelValues(route)
	ok, status, failed := m.Attempts.WithLabelValues(route, "success"), m.Attempts.WithLabelValues(route, "status"), m.Attempts.WithLabelValues(route, "error")
	retried := m.Retried.WithLabelValues(route)
	return func(attempt int, res deliver.Result) {
		lat.Observe(res.Latency.Seconds())
		if attempt > 0 {
			retried.Inc()
		}
		switch {
		case res.Err != nil:
			failed.Inc()
			failedMsgs.Add(float64(n))
		case p.Succeeded(res.Status):
			ok.Inc()
		default:
			status.Inc()
			failedMsgs.Add(float64(n))
		}
	}
}

// builders recycles batch builders between deliveries.
var builders = builderPool{p: sync.Pool{New: func() any { return new(format.Builder) }}}

type builderPool struct{ p sync.Pool }

func (b *builderPool) get() *format.Builder  { return b.p.Get().(*format.Builder) }
func (b *builderPool) put(x *format.Builder) { b.p.Put(x) }
