package actors

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the actors' Prometheus collectors. A nil *Metrics records nothing.
type Metrics struct {
	Delivered *prometheus.CounterVec // route
	Dead      *prometheus.CounterVec // route: messages moved to the dead-letter list
	Queued    *prometheus.GaugeVec   // route
	// Discarded counts the messages a route's forced removal discarded (its backlog, dead
	// letters and replays, and frames routed to it just before it left).
	Discarded *prometheus.CounterVec // route
	Stored    prometheus.Histogram   // DATA frame arrival to store commit
	UDPResent prometheus.Counter     // datagrams whose seq was stored or on its way already
	// DeviceActors counts live device actors: identities that sent something lately. A
	// connected device that has been quiet for the device idle time holds none.
	DeviceActors prometheus.Gauge
	// AuthRefused counts the connections and datagrams refused admission (Options.Auth), by
	// reason: RefusedUnknown, RefusedNoToken, RefusedBadToken, RefusedLimited.
	AuthRefused *prometheus.CounterVec // reason
	// Unknown counts the live device entries of identities the registry (or the config's fleet)
	// does not know; UnknownRefused the frames and connections refused because they were at
	// Options.MaxUnknown.
	Unknown        prometheus.Gauge
	UnknownRefused prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_delivered_messages_total", Help: "Messages a route's endpoint accepted.",
		}, []string{"route"}),
		Dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_dead_lettered_messages_total", Help: "Messages moved to the route's dead-letter list after max_attempts or retention.",
		}, []string{"route"}),
		Discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_route_discarded_messages_total", Help: "Messages discarded with their route when it was removed: its backlog, dead letters and replays.",
		}, []string{"route"}),
		Queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetrelay_route_queued_messages", Help: "Messages held in memory for a route (the store may hold more).",
		}, []string{"route"}),
		DeviceActors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetrelay_device_actors", Help: "Device actors alive: identities that sent something lately (a connected but quiet device holds none).",
		}),
		AuthRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetrelay_device_auth_refusals_total", Help: "Device connections (ERROR 401) and datagrams (dropped) refused by devices.auth, by reason: unknown, no_token, bad_token, limited.",
		}, []string{"reason"}),
	}
	for _, r := range []string{RefusedUnknown, RefusedNoToken, RefusedBadToken, RefusedLimited} {
		m.AuthRefused.WithLabelValues(r) // shown at 0 from the start
	}
	m.Unknown = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fleetrelay_unknown_identities",
		Help: "Device identities the registry does not know that the relay holds state for (connected, or heard from within about the device idle time); at most devices.max_unknown_identities.",
	})
	m.UnknownRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleetrelay_unknown_identities_refused_total",
		Help: "HELLOs (answered ERROR 503), datagrams (unanswered), NDJSON reads and results of new identities the registry does not know, refused at devices.max_unknown_identities.",
	})
	m.UDPResent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleetrelay_udp_resends_total",
		Help: "UDATA datagrams whose seq was stored or on its way to the store already: acknowledged again (in ack mode delivery once delivered), not stored again.",
	})
	m.Stored = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fleetrelay_frame_store_seconds",
		Help:    "From a native DATA frame's arrival (the read that completed it) to its commit in the store; with persist acks its ACK is written right after.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	reg.MustRegister(m.Stored, m.UDPResent, m.Delivered, m.Dead, m.Discarded, m.Queued, m.DeviceActors, m.AuthRefused, m.Unknown, m.UnknownRefused)
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

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.AuthRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) deviceActors(delta int) {
	if m != nil {
		m.DeviceActors.Add(float64(delta))
	}
}

func (m *Metrics) unknown(delta int) {
	if m != nil {
		m.Unknown.Add(float64(delta))
	}
}

func (m *Metrics) unknownRefused() {
	if m != nil {
		m.UnknownRefused.Inc()
	}
}

// routeMetrics are one route's collectors, looked up once. A nil *routeMetrics records nothing.
type routeMetrics struct {
	delivered, dead, discarded prometheus.Counter
	queued                     prometheus.Gauge
}

// route returns the collectors of the named route (nil for a nil m).
func (m *Metrics) route(name string) *routeMetrics {
	if m == nil {
		return nil
	}
	return &routeMetrics{
		delivered: m.Delivered.WithLabelValues(name), dead: m.Dead.WithLabelValues(name),
		discarded: m.Discarded.WithLabelValues(name), queued: m.Queued.WithLabelValues(name),
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

func (rm *routeMetrics) discardedN(n int) {
	if rm != nil && n > 0 {
		rm.discarded.Add(float64(n))
	}
}

func (rm *routeMetrics) setQueued(n int) {
	if rm != nil {
		rm.queued.Set(float64(n))
	}
}
