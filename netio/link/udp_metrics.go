package link

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collectors are the UDP carrier's Prometheus collectors, read when scraped: links open (and of
// them, those via the device listener), device sources followed,
// datagrams and payload bytes each way, datagrams dropped by reason, links closed by their
// timeout. The Manager registers them with its own.
func (h *udpCarrier) collectors() []prometheus.Collector {
	var cs []prometheus.Collector
	counter := func(name, help string, labels prometheus.Labels, v func() uint64) {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v()) }))
	}
	cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fleetrelay_devicelink_udp_links", Help: "UDP device links open (waiting for their client or paired).",
	}, func() float64 { return float64(h.openLinks()) }))
	for dir, name := range [2]string{toDeviceDir: "to_device", toClientDir: "to_client"} {
		labels := prometheus.Labels{"direction": name}
		counter("fleetrelay_devicelink_udp_datagrams_total", "Datagrams forwarded by UDP device links, by direction.", labels, h.st.datagrams[dir].Load)
		counter("fleetrelay_devicelink_udp_bytes_total", "Payload bytes (before sealing, after opening) forwarded by UDP device links, by direction.", labels, h.st.bytes[dir].Load)
	}
	for reason, name := range udpDropReasons {
		counter("fleetrelay_devicelink_udp_dropped_total", udpDroppedHelp, prometheus.Labels{"reason": name}, h.st.dropped[reason].Load)
	}
	cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fleetrelay_devicelink_udp_listener_links", Help: "UDP device links whose device leg goes through the relay's UDP device listener (via listener).",
	}, func() float64 { return float64(h.listenerLinks()) }))
	counter("fleetrelay_devicelink_udp_followed_total", "Times a UDP device link via the device listener moved to its device's new UDP source.", nil, h.st.followed.Load)
	counter("fleetrelay_devicelink_udp_timeouts_total", "UDP device links closed for carrying no datagram for their timeout.", nil, h.st.timeouts.Load)
	return cs
}

const udpDroppedHelp = "Datagrams UDP device links dropped, by reason: no_link (to a port of the range without a link), " +
	"source (from a host:port other than the link's pinned or first client), no_client (from the device before any client), " +
	"cipher (refused by the link's decryption), too_large (too long to send once sealed), send (refused by the kernel: buffer full, ICMP error)."
