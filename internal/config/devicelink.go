package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DeviceLink configures device links: a client reaches a device through the relay, over TCP or
// UDP, on a port of its own that POST /api/v1/devicelink/{device} opens (README, "Device links").
type DeviceLink struct {
	// The IP address (without a port) the links' client sockets listen on, apart from the
	// devices' listeners so that device and client networks can be separate interfaces. An
	// empty string ("", the default) disables device links: the API answers 503.
	Listen string `yaml:"listen"`
	// Cluster mode: the IP address (without a port) other relay nodes dial to reach this node's
	// links, when a link created through another node reaches a device connected to this one
	// (that node's link connects to a port of this node's range). "": listen, which must then
	// be an address the other nodes reach (not 0.0.0.0 or ::). Unused on one node.
	Advertise string `yaml:"advertise"`
	// The ports links take on listen, a range written "first-last" (a single port: "40000"):
	// one port per link, for TCP or UDP. When every port holds a link, a new one is refused (503).
	// Each port may hold [DeviceLink.FilesPerPort] open files, which [Config.CheckMachine] counts.
	Ports string `yaml:"ports"`
	// The protocols links may use, "tcp" and "udp" (the default: both). Only the listed
	// protocols' sockets are bound on every port of the range, from the start: a relay whose
	// links are all TCP saves a UDP socket per port. A link of another protocol is refused (422).
	Protocols []string `yaml:"protocols"`
	// The device's port a link reaches when its request names none (devicePort); 0: none, every
	// request must name one (422 otherwise).
	DevicePort int `yaml:"device_port"`
	// A UDP link is closed after this long without a datagram either way when its request gives
	// no timeout; 0: never.
	Timeout Duration `yaml:"timeout"`
	// Most bytes a link holds in memory for each direction, waiting for the slower side: once
	// full, the other side is not read until it drains (a slow client never grows memory). 4KiB
	// to 64MiB.
	Buffer Size `yaml:"buffer"`
	// After a TCP link's event loop carried bytes, it keeps polling its sockets for this long
	// instead of sleeping, like Linux's busy_poll, so the next bytes either way need not wait
	// for its thread to wake up: on a virtual machine that wake-up is most of a link's added
	// latency. The polling thread yields to every other thread that wants its CPU; it spends at
	// most this long per burst of traffic, and nothing while links are idle. 0 turns it off; at
	// most 1ms.
	BusyPoll Duration `yaml:"busy_poll"`
}

// Limits of the devicelink section.
const (
	MinLinkBuffer = 4 * KiB  // smallest devicelink.buffer
	MaxLinkBuffer = 64 * MiB // largest devicelink.buffer
	// MaxBusyPoll is the longest devicelink.busy_poll: beyond it a loop with sparse traffic
	// would poll nearly all the time.
	MaxBusyPoll = Duration(time.Millisecond)
	// DefaultBusyPoll is devicelink.busy_poll's default.
	DefaultBusyPoll = Duration(100 * time.Microsecond)
)

// Enabled reports whether device links are on (listen is set).
func (d *DeviceLink) Enabled() bool { return d.Listen != "" }

// Link protocols, as devicelink.protocols names them.
const (
	LinkTCP = "tcp"
	LinkUDP = "udp"
)

// Allows reports whether links of protocol (LinkTCP or LinkUDP) are on: protocols lists it,
// or is empty (both).
func (d *DeviceLink) Allows(protocol string) bool {
	return len(d.Protocols) == 0 || slices.Contains(d.Protocols, protocol)
}

// Files one port of devicelink.ports may hold open, by protocol: a TCP port its listener and a
// link's two sockets (client and device), a UDP port its socket (the client side) and a link's
// device socket.
const (
	LinkFilesPerTCPPort = 3
	LinkFilesPerUDPPort = 2
)

// FilesPerPort is what one port of the range may hold open with the protocols on: 5 with both
// (the default), 3 with tcp only, 2 with udp only.
func (d *DeviceLink) FilesPerPort() int {
	n := 0
	if d.Allows(LinkTCP) {
		n += LinkFilesPerTCPPort
	}
	if d.Allows(LinkUDP) {
		n += LinkFilesPerUDPPort
	}
	return n
}

// PortRange returns the first and last port of Ports; err says what is wrong with it.
func (d *DeviceLink) PortRange() (first, last uint16, err error) {
	return ParsePortRange(d.Ports)
}

// ParsePortRange parses a port range written "first-last" ("40000-40999") or a single port
// ("40000"), each port 1 to 65535, first not above last.
func ParsePortRange(s string) (first, last uint16, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		b = a
	}
	port := func(v string) (uint16, bool) {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
		return uint16(n), err == nil && n > 0
	}
	f, okF := port(a)
	l, okL := port(b)
	switch {
	case !okF || !okL:
		return 0, 0, fmt.Errorf("want a port range such as 40000-40999 (ports 1 to 65535), got %q", s)
	case f > l:
		return 0, 0, fmt.Errorf("the first port %d is above the last %d", f, l)
	}
	return f, l, nil
}

// Connector forwards a device's raw TCP stream to an end server: each connection devices make
// to listen is paired with a new connection to upstream, and the bytes flow both ways
// unchanged, so the end server's own answers reach the device.
type Connector struct {
	// Unique name: letters, digits, '_', '.' and '-'. It labels the connector's metrics and logs.
	Name string `yaml:"name"`
	// Where devices connect (host:port). Required.
	Listen string `yaml:"listen"`
	// The end server (host:port, port not 0) each device connection is forwarded to. Required.
	Upstream string `yaml:"upstream"`
	// How long connecting to upstream may take; past it the device's connection is closed and
	// counted. Must be > 0. Default 5s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// A pair that carries no byte either way for this long is closed; 0 (the default): never.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// "" (the default) sends the device's bytes as they are; "v2" first sends upstream an
	// HAProxy PROXY protocol v2 header, so the end server sees the device's address.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// Most device connections the connector holds at once (at least 1, default 1000): one
	// beyond it is closed at accept, before upstream is dialled, and counted. Each connection
	// holds two open files (the device's and the upstream's), which [Config.CheckMachine]
	// counts.
	MaxConnections int `yaml:"max_connections"`
	// Most bytes a connection holds in memory for each direction, waiting for the slower side:
	// once full, the other side is not read until it drains. 4KiB to 64MiB, default 256KiB.
	Buffer Size `yaml:"buffer"`
}

// Defaults of a connector.
const (
	DefaultConnectorMaxConnections = 1000
	DefaultConnectorBuffer         = 256 * KiB
)

// ConnectorFilesPerConnection is the open files one device connection of a connector holds: its
// own socket and its upstream's.
const ConnectorFilesPerConnection = 2

// Files is the most files the connector may hold open: [ConnectorFilesPerConnection] per
// connection up to max_connections, and its listener.
func (c Connector) Files() int { return ConnectorFilesPerConnection*max(c.MaxConnections, 0) + 1 }

// DefaultConnector returns a connector with every default set and no name or addresses.
// Connectors decoded from YAML start from it.
func DefaultConnector() Connector {
	return Connector{
		ConnectTimeout: Duration(5 * time.Second),
		MaxConnections: DefaultConnectorMaxConnections,
		Buffer:         DefaultConnectorBuffer,
	}
}

// UnmarshalYAML decodes a connector on top of [DefaultConnector], so absent keys keep their
// defaults.
func (c *Connector) UnmarshalYAML(n *yaml.Node) error {
	type plain Connector // plain has no UnmarshalYAML method
	v := plain(DefaultConnector())
	if err := n.Decode(&v); err != nil {
		return err
	}
	*c = Connector(v)
	return nil
}

// tcpListener is a TCP listen address of the config, to find two that would bind one socket.
type tcpListener struct {
	path, addr string
}

// validateLinks checks the devicelink and connectors sections; others are the TCP listeners
// checked before (native, NDJSON, admin), which a connector's listen must not take.
func (c *Config) validateLinks(p *problems, others []tcpListener) {
	d := &c.DeviceLink
	if d.Listen != "" {
		if a, err := netip.ParseAddr(strings.Trim(d.Listen, "[]")); err != nil || a.Zone() != "" {
			p.add("devicelink.listen", "want an IP address without a port (such as 10.0.0.1 or ::1), got %q", d.Listen)
		}
	}
	if d.Advertise != "" {
		if a, err := netip.ParseAddr(strings.Trim(d.Advertise, "[]")); err != nil || a.Zone() != "" || a.IsUnspecified() {
			p.add("devicelink.advertise", "want an IP address the other relay nodes reach, without a port (such as 10.0.0.1), got %q", d.Advertise)
		}
	} else if a, err := netip.ParseAddr(strings.Trim(d.Listen, "[]")); err == nil && a.IsUnspecified() && c.Cluster.Enabled() {
		p.add("devicelink.advertise", "required in cluster mode when devicelink.listen is %s: the address other relay nodes dial to reach this node's links", d.Listen)
	}
	first, last, err := d.PortRange()
	if err != nil {
		p.add("devicelink.ports", "%v", err)
	}
	if d.DevicePort < 0 || d.DevicePort > 65535 {
		p.add("devicelink.device_port", "must be 0 (none) or a port from 1 to 65535, got %d", d.DevicePort)
	}
	if d.Protocols != nil && len(d.Protocols) == 0 {
		p.add("devicelink.protocols", "name at least one protocol: tcp, udp or both")
	}
	seen := map[string]int{}
	for i, proto := range d.Protocols {
		path := fmt.Sprintf("devicelink.protocols[%d]", i)
		switch first, dup := seen[proto]; {
		case proto != LinkTCP && proto != LinkUDP:
			p.add(path, "want tcp or udp, got %q", proto)
		case dup:
			p.add(path, "%s is listed twice (first as devicelink.protocols[%d])", proto, first)
		default:
			seen[proto] = i
		}
	}
	nonNegative(p, "devicelink.timeout", d.Timeout)
	if d.Buffer < MinLinkBuffer || d.Buffer > MaxLinkBuffer {
		p.add("devicelink.buffer", "must be between %s and %s, got %s", MinLinkBuffer, MaxLinkBuffer, sizeText(d.Buffer))
	}
	if d.BusyPoll < 0 || d.BusyPoll > MaxBusyPoll {
		p.add("devicelink.busy_poll", "must be between 0 (off) and %s, got %s", MaxBusyPoll, d.BusyPoll)
	}

	names := map[string]int{}
	listeners := others
	for i := range c.Connectors {
		cn := &c.Connectors[i]
		path := fmt.Sprintf("connectors[%d]", i)
		switch first, dup := names[cn.Name]; {
		case cn.Name == "":
			p.add(path+".name", "required")
		case !routeNameRE.MatchString(cn.Name):
			p.add(path+".name", "%q: use only letters, digits, '_', '.' and '-'", cn.Name)
		case dup:
			p.add(path+".name", "duplicate connector name %q (first used by connectors[%d])", cn.Name, first)
		default:
			names[cn.Name] = i
		}
		if cn.Listen == "" {
			p.add(path+".listen", "required (host:port)")
		} else if port := listenAddr(p, path+".listen", cn.Listen); port != "" {
			for _, o := range listeners {
				if _, oport, _ := net.SplitHostPort(o.addr); oport == port && hostsOverlap(o.addr, cn.Listen) {
					p.add(path+".listen", "uses the same TCP address as %s (%s)", o.path, o.addr)
				}
			}
			if n, _ := strconv.Atoi(port); d.Listen != "" && d.Allows(LinkTCP) && err == nil && n >= int(first) && n <= int(last) &&
				hostsOverlap(net.JoinHostPort(strings.Trim(d.Listen, "[]"), port), cn.Listen) {
				p.add(path+".listen", "port %s is in devicelink.ports (%s) on the same address", port, d.Ports)
			}
			listeners = append(listeners, tcpListener{path + ".listen", cn.Listen})
		}
		checkUpstream(p, path+".upstream", cn.Upstream)
		positive(p, path+".connect_timeout", cn.ConnectTimeout)
		nonNegative(p, path+".idle_timeout", cn.IdleTimeout)
		if cn.ProxyProtocol != "" && cn.ProxyProtocol != "v2" {
			p.add(path+".proxy_protocol", `must be "" (none) or "v2", got %q`, cn.ProxyProtocol)
		}
		if cn.MaxConnections < 1 {
			p.add(path+".max_connections", "must be at least 1, got %d", cn.MaxConnections)
		}
		if cn.Buffer < MinLinkBuffer || cn.Buffer > MaxLinkBuffer {
			p.add(path+".buffer", "must be between %s and %s, got %s", MinLinkBuffer, MaxLinkBuffer, sizeText(cn.Buffer))
		}
	}
}

// checkUpstream checks a connector's upstream: host:port with a host and a port from 1 to 65535.
func checkUpstream(p *problems, path, addr string) {
	if addr == "" {
		p.add(path, "required (host:port)")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(path, "%q is not host:port (%v)", addr, unwrapAddrError(err))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		p.add(path, "%q has an invalid port %q (want 1 to 65535)", addr, port)
	}
	if host == "" || strings.ContainsAny(host, " \t/") {
		p.add(path, "%q needs a host name or address", addr)
	}
}
