package netio

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics registers the server's collectors with reg: connections, frames, bytes and
// errors of the device sockets, the TLS listeners' connections, handshakes and failed
// handshakes by protocol and reason, dropped datagrams, and the NDJSON listener's lines, in-flight
// bytes and drops by reason (the dispatcher counts the drops that are its own, with the same
// metric name). They read Stats when scraped. Call it once per server and registry: it panics
// if reg has them already.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) {
	var cs []prometheus.Collector
	gauge := func(name, help string, f func() float64) {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("fleetrelay_device_connections", "Open device TCP connections (native and NDJSON).", func() float64 { return float64(s.Stats().Connections) })
	counter("fleetrelay_device_frames_total", "Native frames decoded from devices (TCP and UDP).", func() float64 { return float64(s.Stats().Frames) })
	counter("fleetrelay_device_bytes_total", "Bytes decoded from devices (native frames and NDJSON lines).", func() float64 { return float64(s.Stats().Bytes) })
	counter("fleetrelay_device_errors_total", "Device connections closed with an ERROR frame.", func() float64 { return float64(s.Stats().Errors) })
	counter("fleetrelay_device_refused_total", "Device connections refused (capacity, shutdown), native and NDJSON.", func() float64 { return float64(s.Stats().Refused) })
	counter("fleetrelay_device_source_refused_total", "Device connections refused because their source address (IPv6: /64) held devices.max_connections_per_source; also counted in fleetrelay_device_refused_total.",
		func() float64 { return float64(s.Stats().SourceRefused) })
	counter("fleetrelay_device_first_data_timeouts_total", "Unauthenticated device connections closed (ERROR 408) for sending no DATA within devices.first_data_timeout.",
		func() float64 { return float64(s.Stats().FirstDataLate) })
	counter("fleetrelay_udp_dropped_total", "Malformed or unexpected datagrams dropped unanswered.", func() float64 { return float64(s.Stats().UDPDropped) })
	counter("fleetrelay_ndjson_lines_total", "NDJSON lines accepted for storing.", func() float64 { return float64(s.Stats().NDJSONLines) })
	gauge("fleetrelay_ndjson_inflight_bytes", "Bytes of NDJSON lines read and not yet stored; at devices.ndjson.max_inflight no NDJSON connection is read.",
		func() float64 { return float64(s.Stats().NDJSONInflight) })
	for _, p := range []struct {
		name string
		st   *tlsCounters
	}{{"native", &s.st.tls}, {"teltonika", &s.tel.tls}} {
		label := func(more ...string) prometheus.Labels {
			l := prometheus.Labels{"protocol": p.name}
			for i := 0; i+1 < len(more); i += 2 {
				l[more[i]] = more[i+1]
			}
			return l
		}
		st := p.st
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetrelay_device_tls_connections", ConstLabels: label(),
				Help: "Open TLS device connections past their handshake, by protocol (native, teltonika); also in fleetrelay_device_connections."},
				func() float64 { return float64(st.conns.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetrelay_device_tls_handshakes_total", ConstLabels: label(),
				Help: "TLS handshakes of devices completed, by protocol (native, teltonika)."},
				func() float64 { return float64(st.handshakes.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetrelay_device_tls_identity_refused_total", ConstLabels: label(),
				Help: "TLS devices refused for naming another device than their certificate, by protocol: a native HELLO (ERROR 401), a Teltonika IMEI (answered 00)."},
				func() float64 { return float64(st.identityRefused.Load()) }))
		for i, reason := range TLSReasons {
			cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "fleetrelay_device_tls_handshake_failures_total",
				Help:        "Failed TLS handshakes of devices, by protocol (native, teltonika) and reason: not_tls (a plain client), no_client_cert, bad_client_cert, timeout, closed, protocol.",
				ConstLabels: label("reason", reason),
			}, func() float64 { return float64(st.failures[i].Load()) }))
		}
	}
	for reason, f := range map[string]func() int64{
		"malformed": func() int64 { return s.Stats().NDJSONMalformed },
		"identity":  func() int64 { return s.Stats().NDJSONIdentity },
		"too_long":  func() int64 { return s.Stats().NDJSONTooLong },
		"shutdown":  func() int64 { return s.Stats().NDJSONShutdown },
	} {
		cs = append(cs, NDJSONDropped(reason, f))
	}
	reg.MustRegister(cs...)
	reg.MustRegister(s.teltonikaCollectors()...)
}

// NDJSONDroppedHelp is the help of fleetrelay_ndjson_dropped_total, whose reasons are counted
// by the listener (malformed, identity, too_long, shutdown) and by the dispatcher (native,
// store): one help for both, as Prometheus requires.
const NDJSONDroppedHelp = "NDJSON lines dropped, by reason: malformed (not a JSON object), identity (identity field missing or invalid), " +
	"too_long (over max_line; closes the connection), shutdown (arrived after shutdown began), " +
	"native (the identity was connected natively), store (the store refused them)."

// NDJSONDropped is the fleetrelay_ndjson_dropped_total counter of one reason, reading count.
func NDJSONDropped(reason string, count func() int64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_ndjson_dropped_total", Help: NDJSONDroppedHelp, ConstLabels: prometheus.Labels{"reason": reason},
	}, func() float64 { return float64(count()) })
}
