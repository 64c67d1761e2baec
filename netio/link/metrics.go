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

// stats are the counters of the links' engines, updated atomically from the event loops.
type stats struct {
	open                          [2]atomic.Int64 // links holding a client, by protocol: TCP, UDP
	toDevice, toClient            atomic.Uint64
	noLink, second, source, unrch atomic.Uint64
	dialFailures                  atomic.Uint64
}

func protoIndex(proto string) int {
	if proto == UDP {
		return 1
	}
	return 0
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

// Collectors are the links' metrics, read from the counters when scraped: links open by
// protocol, bytes each way, client connections refused by reason and device dials that failed.
// Register them once per registry.
func (m *Manager) Collectors() []prometheus.Collector {
	var cs []prometheus.Collector
	for i, proto := range []string{TCP, UDP} {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetrelay_devicelink_open", Help: "Device links that hold a client, by protocol.",
			ConstLabels: prometheus.Labels{"protocol": proto},
		}, func() float64 { return float64(m.st.open[i].Load()) }))
	}
	for dir, c := range map[string]*atomic.Uint64{"to_device": &m.st.toDevice, "to_client": &m.st.toClient} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fleetrelay_devicelink_bytes_total", Help: "Bytes carried by device links, by direction (to_device: from clients to devices).",
			ConstLabels: prometheus.Labels{"direction": dir},
		}, func() float64 { return float64(c.Load()) }))
	}
	for reason, c := range map[string]*atomic.Uint64{
		refusedNoLink: &m.st.noLink, refusedSecondClient: &m.st.second, refusedSource: &m.st.source, refusedUnreachable: &m.st.unrch,
	} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fleetrelay_devicelink_refused_total",
			Help: "Client connections to link ports refused, by reason: no_link (no link waits on the port), second_client (the link has its client), " +
				"source (not the link's pinned source), device_unreachable (the device did not answer).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(c.Load()) }))
	}
	cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_devicelink_dial_failures_total", Help: "Connections to devices for TCP links that failed or timed out.",
	}, func() float64 { return float64(m.st.dialFailures.Load()) }))
	return cs
}
