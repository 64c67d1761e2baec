package link

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a client connection to a link port is refused.
const (
	refusedNoLink       = "no_link"            // no link waits on that port
	refusedSecondClient = "second_client"      // the link already has its client
	refusedSource       = "source"             // the link is pinned to another host:port
	refusedUnreachable  = "device_unreachable" // the device did not answer the link's dial
)

// stats are the TCP carrier's counters, updated atomically from the event loops.
type stats struct {
	open                          atomic.Int64 // links holding a client
	toDevice, toClient            atomic.Uint64
	noLink, second, source, unrch atomic.Uint64
	dialFailures                  atomic.Uint64
}

func (s *stats) refused(reason string) {
	switch reason {
	case refusedNoLink:
		s.noLink.Add(1)
	case refusedSecondClient:
		s.second.Add(1)
	case refusedSource:
		s.source.Add(1)
	case refusedUnreachable:
		s.unrch.Add(1)
	}
}

// Collectors are the links' metrics, read from the counters when scraped: each engine's (TCP:
// links holding a client, bytes each way, client connections refused by reason, device dials
// that failed, time spent busy polling; UDP: udp_metrics.go). Register them once per registry.
func (m *Manager) Collectors() []prometheus.Collector {
	var cs []prometheus.Collector
	for _, proto := range []string{TCP, UDP} {
		if c, ok := m.carriers[proto].(interface{ collectors() []prometheus.Collector }); ok {
			cs = append(cs, c.collectors()...)
		}
	}
	return cs
}

// collectors are the TCP carrier's collectors.
func (t *tcpCarrier) collectors() []prometheus.Collector {
	st := &t.st
	cs := []prometheus.Collector{prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fleetrelay_devicelink_tcp_links", Help: "TCP device links that hold a client.",
	}, func() float64 { return float64(st.open.Load()) })}
	for dir, c := range map[string]*atomic.Uint64{"to_device": &st.toDevice, "to_client": &st.toClient} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fleetrelay_devicelink_tcp_bytes_total", Help: "Bytes carried by TCP device links, by direction (to_device: from clients to devices; plaintext).",
			ConstLabels: prometheus.Labels{"direction": dir},
		}, func() float64 { return float64(c.Load()) }))
	}
	for reason, c := range map[string]*atomic.Uint64{
		refusedNoLink: &st.noLink, refusedSecondClient: &st.second, refusedSource: &st.source, refusedUnreachable: &st.unrch,
	} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fleetrelay_devicelink_tcp_refused_total",
			Help: "Client connections to TCP link ports refused, by reason: no_link (no link waits on the port), second_client (the link has its client), " +
				"source (not the link's pinned source), device_unreachable (the device did not answer).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(c.Load()) }))
	}
	cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_devicelink_tcp_dial_failures_total", Help: "Connections to devices for TCP links that failed or timed out.",
	}, func() float64 { return float64(st.dialFailures.Load()) }))
	cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_devicelink_tcp_busy_poll_seconds_total",
		Help: "Time the TCP links' event loops spent polling instead of sleeping after link traffic (devicelink.busy_poll), summed over the loops: " +
			"the most CPU time it took (the polling threads yield to any other).",
	}, t.busyPolled))
	return cs
}

// busyPolled is the seconds the loops' busy pollers spent polling.
func (t *tcpCarrier) busyPolled() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ns uint64
	for _, ls := range t.loops {
		if ls.busy != nil {
			ns += ls.busy.busyNs.Load()
		}
	}
	return float64(ns) / 1e9
}
