package config

import "fmt"

// Machine holds the facts about the host and the process that [Config.CheckMachine] compares a
// configuration with. Unlike [Config.Validate], which judges the file alone, these checks give a
// different answer on a different machine, so the caller measures the machine (the relay does so
// at start and in fleetrelay -check-config) and passes it in. A zero field is unknown and not
// checked.
type Machine struct {
	// CPUs the process may run on (runtime.NumCPU).
	CPUs int
	// The process's open-file limit: the soft RLIMIT_NOFILE, which Go raises to the hard limit
	// when the process starts. Every device connection holds one file.
	OpenFiles uint64
}

// Limits checked against the machine.
const (
	// MaxEventLoopsPerCPU bounds devices.event_loops: at most this many per CPU. An event loop
	// uses at most one CPU, so loops beyond a few per CPU only add threads, and 100000 of them
	// never finish starting.
	MaxEventLoopsPerCPU = 4
	// StoreFiles is the part of the open-file limit [Config.OwnFiles] counts for the store and
	// the process itself: Badger keeps every value-log file (16 MiB each) and table open, so
	// this covers ≈3 GiB of stored backlog, plus the standard streams, the listeners and admin
	// connections.
	StoreFiles = 256
)

// EventLoops is the number of event loops each native listener runs on m: devices.event_loops,
// or one per CPU when it is 0.
func (c *Config) EventLoops(m Machine) int {
	if c.Devices.EventLoops > 0 {
		return c.Devices.EventLoops
	}
	return max(m.CPUs, 1)
}

// OwnFiles estimates the files the relay holds open besides device connections: [StoreFiles],
// two per event loop of each native listener (its epoll and event descriptors), for each
// enabled route its concurrency (one connection per request in flight) plus one (a token
// request or an idle connection), and with device links on, [DeviceLink.FilesPerPort] per port
// of devicelink.ports.
func (c *Config) OwnFiles(m Machine) int {
	n := StoreFiles
	loops := c.EventLoops(m)
	if m.CPUs > 0 {
		loops = min(loops, MaxEventLoopsPerCPU*m.CPUs) // more is refused anyway
	}
	for _, addr := range []string{c.Devices.Native.TCP, c.Devices.Native.UDP} {
		if addr != "" {
			n += 2 * loops
		}
	}
	for i := range c.Routes {
		if r := &c.Routes[i]; r.IsEnabled() {
			n += max(r.Concurrency, 1) + 1
		}
	}
	return n + c.linkFiles()
}

// linkFiles is the files device links may hold at most (0 when they are off).
func (c *Config) linkFiles() int {
	if !c.DeviceLink.Enabled() {
		return 0
	}
	first, last, err := c.DeviceLink.PortRange()
	if err != nil {
		return 0
	}
	return c.DeviceLink.FilesPerPort() * (int(last) - int(first) + 1)
}

// CheckMachine compares c, which should have passed [Config.Validate], with the machine it is to
// run on. It returns warnings, each in the form "dotted.path: message", and a [*ValidationError]
// listing every problem, or nil:
//
//   - devices.event_loops above [MaxEventLoopsPerCPU] per CPU is an error;
//   - devices.max_connections that the open-file limit can never allow (at or above it) is an
//     error; one that leaves fewer files than [Config.OwnFiles] for the relay's own use is a
//     warning: at max_connections the relay could not open a store file or reach an endpoint;
//   - connectors whose worst case ([Connector.Files] each) does not fit in the open-file limit
//     beside devices.max_connections and [Config.OwnFiles] are errors, each naming the
//     connectors[i].max_connections that ends up past the limit: a flood of connections to a
//     connector would otherwise take the files the device listeners and the store need.
func (c *Config) CheckMachine(m Machine) (warnings []string, err error) {
	var p, w problems
	d := &c.Devices
	if m.CPUs > 0 && d.EventLoops > MaxEventLoopsPerCPU*m.CPUs {
		p.add("devices.event_loops", "%d is more than %d per CPU: at most %d on this machine's %d CPUs (0 starts one per CPU)",
			d.EventLoops, MaxEventLoopsPerCPU, MaxEventLoopsPerCPU*m.CPUs, m.CPUs)
	}
	if m.OpenFiles > 0 && d.MaxConnections > 0 {
		limit, own := m.OpenFiles, uint64(c.OwnFiles(m))
		conns := uint64(d.MaxConnections)
		fit := uint64(0)
		if limit > own {
			fit = limit - own
		}
		switch {
		case conns >= limit:
			p.add("devices.max_connections", "%d can never be reached: the process's open-file limit (RLIMIT_NOFILE) is %d, and the relay needs about %d files of its own; "+
				"raise the limit (ulimit -n, systemd LimitNOFILE=) or set max_connections to at most %d", conns, limit, own, fit)
		case conns+own > limit:
			w.add("devices.max_connections", "%d leaves %d of the open-file limit %d (RLIMIT_NOFILE) for the relay's own files, which need about %d "+
				"(store, listeners, event loops, delivery connections): at max_connections the store or the routes could fail to open a file; "+
				"raise the limit (ulimit -n, systemd LimitNOFILE=) or set max_connections to at most %d", conns, limit-conns, limit, own, fit)
		}
	}
	c.checkConnectorFiles(&p, m)
	return w, p.err()
}

// checkConnectorFiles adds the connectors' worst case to the relay's own files and
// devices.max_connections, in the config's order, and reports each connector from which on the
// sum exceeds the open-file limit, with the max_connections that would fit there.
func (c *Config) checkConnectorFiles(p *problems, m Machine) {
	if m.OpenFiles == 0 || len(c.Connectors) == 0 {
		return
	}
	limit := m.OpenFiles
	own, devs := uint64(c.OwnFiles(m)), uint64(max(c.Devices.MaxConnections, 0))
	sum := own + devs
	for i := range c.Connectors {
		cn := &c.Connectors[i]
		before := sum
		sum += uint64(cn.Files())
		if sum <= limit {
			continue
		}
		fit := uint64(0)
		if limit > before+1 {
			fit = (limit - before - 1) / ConnectorFilesPerConnection
		}
		p.add(fmt.Sprintf("connectors[%d].max_connections", i),
			"%d does not fit in the open-file limit %d (RLIMIT_NOFILE): the connector may hold %d files (%d per connection and its listener), "+
				"on top of devices.max_connections (%d), the relay's own files (about %d) and the connectors before it (%d): %d in all; "+
				"raise the limit (ulimit -n, systemd LimitNOFILE=) or set connectors[%d].max_connections to at most %d",
			cn.MaxConnections, limit, cn.Files(), ConnectorFilesPerConnection, devs, own, before-own-devs, sum, i, fit)
	}
}
