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
	UDPResent prometheus.Counter       // datagrams whose seq was stored or on its way already
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
	m.UDPResent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleetrelay_udp_resends_total",
		Help: "UDATA datagrams whose seq was stored or on its way to the store already: acknowledged again (in ack mode delivery once delivered), not stored again.",
	})
	m.Stored = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fleetrelay_frame_store_seconds",
		Help:    "From a native DATA frame's arrival (the read that completed it) to its commit in the store; with persist acks its ACK is written right after.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	reg.MustRegister(m.Stored, m.UDPResent, m.Delivered, m.Attempts, m.Retried, m.Failed, m.Dead, m.Latency, m.Queued, m.DeviceActors)
	return m
}

func (m *Metrics) stored(since time.Time) {
	if m != nil && !since.IsZero() {
		m.Stored.Observe(time.Since(since).Seconds())
	}
}

func (m *Metrics) resent() {
	if m != nil {
		m.UDPResent.Inc()
	}
}

func (m *Metrics) deviceActors(delta int) {
	if m != nil {
		m.DeviceActors.Add(float64(delta))
	}
}

// routeMetrics are one route's collectors, looked up once. A nil *routeMetrics records nothing.
type routeMetrics struct {
	delivered, dead, failedMsgs, retried prometheus.Counter
	ok, status, failed                   prometheus.Counter // requests by outcome
	latency                              prometheus.Observer
	queued                               prometheus.Gauge
}

// route returns the collectors of the named route (nil for a nil m).
func (m *Metrics) route(name string) *routeMetrics {
	if m == nil {
		return nil
	}
	return &routeMetrics{
		delivered: m.Delivered.WithLabelValues(name), dead: m.Dead.WithLabelValues(name),
		failedMsgs: m.Failed.WithLabelValues(name), retried: m.Retried.WithLabelValues(name),
		ok: m.Attempts.WithLabelValues(name, "success"), status: m.Attempts.WithLabelValues(name, "status"),
		failed: m.Attempts.WithLabelValues(name, "error"), latency: m.Latency.WithLabelValues(name),
		queued: m.Queued.WithLabelValues(name),
	}
}

func (rm *routeMetrics) deliveredN(n int) {
	if rm != nil {
		rm.delivered.Add(float64(n))
	}
}

func (rm *routeMetrics) deadN(n int) {
	if rm != nil {
		rm.dead.Add(float64(n))
	}
}

func (rm *routeMetrics) setQueued(n int) {
	if rm != nil {
		rm.queued.Set(float64(n))
	}
}

// attempt records one attempt of a batch of n messages.
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

// builders recycles batch builders between deliveries.
var builders = builderPool{p: sync.Pool{New: func() any { return new(format.Builder) }}}

type builderPool struct{ p sync.Pool }

func (b *builderPool) get() *format.Builder  { return b.p.Get().(*format.Builder) }
func (b *builderPool) put(x *format.Builder) { b.p.Put(x) }
