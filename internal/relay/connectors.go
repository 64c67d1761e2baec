package relay

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/fleetrelay/fleetrelay/netio/link"
)

// buildConnectors builds one raw TCP connector per entry of connectors (README, "Raw TCP
// connector") and registers its metrics; nothing listens until Start. They are config-only: a
// reload names "connectors" among the sections that need a restart.
func (r *Relay) buildConnectors() error {
	for i := range r.cfg.Connectors {
		cc := &r.cfg.Connectors[i]
		c, err := link.NewConnector(link.ConnectorConfig{
			Name:           cc.Name,
			Listen:         cc.Listen,
			Upstream:       cc.Upstream,
			ConnectTimeout: time.Duration(cc.ConnectTimeout),
			IdleTimeout:    time.Duration(cc.IdleTimeout),
			ProxyProtocol:  cc.ProxyProtocol == "v2",
			MaxConnections: cc.MaxConnections,
			Buffer:         int(cc.Buffer),
			EventLoops:     r.cfg.Devices.EventLoops,
			Logger:         r.log,
		})
		if err != nil {
			return fmt.Errorf("connectors[%d] (%s): %w", i, cc.Name, err)
		}
		for _, m := range c.Collectors() {
			if err := r.reg.Register(m); err != nil {
				return fmt.Errorf("connectors[%d] (%s) metrics: %w", i, cc.Name, err)
			}
		}
		r.connectors = append(r.connectors, c)
	}
	return nil
}

// startConnectors starts the connectors in the config's order and logs where each listens. On
// an error (a listen address taken), the ones started stay for Shutdown to stop.
func (r *Relay) startConnectors(ctx context.Context) error {
	for i, c := range r.connectors {
		cc := &r.cfg.Connectors[i]
		if err := c.Start(ctx); err != nil {
			return fmt.Errorf("connectors[%d]: %w", i, err)
		}
		r.log.Info("connector listening", "component", "connector", "connector", cc.Name, "listen", c.Addr(),
			"upstream", cc.Upstream, "proxy_protocol", cc.ProxyProtocol, "max_connections", cc.MaxConnections)
	}
	return nil
}

// stopConnectors stops every connector: their device and upstream connections are cut at once
// (nothing of theirs is stored), and their dials in flight are waited for.
func (r *Relay) stopConnectors(ctx context.Context) []error {
	var errs []error
	for _, c := range r.connectors {
		if err := c.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ConnectorAddr is the listen address of the connector named name (nil when there is none, or
// before Start).
func (r *Relay) ConnectorAddr(name string) net.Addr {
	for _, c := range r.connectors {
		if c.Name() == name {
			return c.Addr()
		}
	}
	return nil
}
