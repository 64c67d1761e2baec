package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus collectors that it updates itself (the group-commit
// histograms); the gauges and counters that read its state are made by RegisterMetrics.
// They exist from Open, registered or not.
type metrics struct {
	commit prometheus.Histogram // duration of a group commit that stored frames
	wait   prometheus.Histogram // per commit, how long its oldest frame waited
	frames prometheus.Histogram // frames per commit
}

func newMetrics() *metrics {
	return &metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetrelay_store_commit_seconds", Help: "Duration of the store's group commits that stored frames.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fleetrelay_store_commit_wait_seconds",
			Help:    "Per group commit, how long its oldest frame waited from arrival at the store to the end of the commit (persist acks go out after it).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		frames: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetrelay_store_commit_frames", Help: "Frames per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
	}
}

// observeCommit records a successful commit that stored frames: how many, how long the Badger
// commit took, and how long the oldest of them waited from Append to the end of the commit.
// Called from the committer.
func (m *metrics) observeCommit(frames int, commit, oldestWait time.Duration) {
	m.commit.Observe(commit.Seconds())
	m.wait.Observe(oldestWait.Seconds())
	m.frames.Observe(float64(frames))
}

// RegisterMetrics registers the store's collectors with reg: its group-commit histograms,
// the resident and cold messages, free space and the refusal of new data, and, for each route
// name routes returns when scraped (names given to RouteID; others are skipped), the route's
// backlog and dead-letter gauges. The collectors read the store's state when scraped, also
// after Close (the last state then). Call it once per store and registry.
func (s *Store) RegisterMetrics(reg prometheus.Registerer, routes func() []string) error {
	cs := []prometheus.Collector{s.metrics.commit, s.metrics.wait, s.metrics.frames, &routeGauges{s: s, routes: routes}}
	gauge := func(name, help string, f func() float64) {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("fleetrelay_store_resident_messages", "Stored messages whose delivery state is held in memory (bounded by delivery.max_queued_messages plus what routes hold).",
		func() float64 { return float64(s.Stats().ResidentRecords) })
	gauge("fleetrelay_store_cold_messages", "Stored messages whose delivery state is only on disk until a route reads them back (a backlog beyond memory).",
		func() float64 { return float64(s.Stats().ColdRecords) })
	gauge("fleetrelay_store_devices", "Devices the store holds state for (last seq, delivered watermark, UDP window): every device that stored a frame, less the ones forgotten (identities the registry does not know, gone quiet with nothing to deliver).",
		func() float64 { return float64(s.Stats().Devices) })
	gauge("fleetrelay_store_free_bytes", "Free bytes on the data directory's filesystem, as the store last read them.",
		func() float64 { return float64(s.Space().Free) })
	gauge("fleetrelay_store_min_free_bytes", "Free bytes below which the store refuses new data (store.min_free, never below what the store needs once it refuses).",
		func() float64 { return float64(s.Space().MinFree) })
	gauge("fleetrelay_store_ingest_refused", "1 while the store refuses new data for lack of disk space, else 0.", func() float64 {
		if s.Space().Refused {
			return 1
		}
		return 0
	})
	cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_store_refused_frames_total", Help: "Frames the store refused for lack of disk space (native devices got ERROR 503; NDJSON lines were dropped).",
	}, func() float64 { return float64(s.Space().RefusedFrames) }))
	cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_store_ingest_holds_total", Help: "Times the store held new frames so that a route whose endpoint answers could catch up (ingest yields to delivery).",
	}, func() float64 { return float64(s.Stats().IngestHolds) }))
	reg.MustRegister(cs...)
	return nil
}

// routeGauges are the per-route gauges (backlog, dead letters) of the routes that run when
// scraped: routes added or removed while the relay runs come and go with them. A name the store
// has no route ID for has nothing stored and is skipped.
type routeGauges struct {
	s      *Store
	routes func() []string
}

var (
	backlogDesc = prometheus.NewDesc("fleetrelay_route_backlog_messages",
		"Messages stored for a route and not yet delivered or dead-lettered: its queue depth, in memory or in the store.",
		[]string{"route"}, nil)
	deadDesc = prometheus.NewDesc("fleetrelay_route_dead_letter_messages",
		"Messages in a route's dead-letter list (fleetrelay dlq), not counting replays in progress.",
		[]string{"route"}, nil)
)

func (g *routeGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- deadDesc
}

func (g *routeGauges) Collect(ch chan<- prometheus.Metric) {
	ids := g.s.Routes()
	for _, name := range g.routes() {
		id, ok := ids[name]
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(g.s.Backlog(id)), name)
		ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(g.s.DeadLetterCount(id)), name)
	}
}
