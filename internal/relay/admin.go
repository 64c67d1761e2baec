package relay

import (
	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
)

// buildAdmin builds the admin server: its bootstrap super key (admin.bootstrap_key, or
// <data_dir>/admin.key made at the first start), the keys of the registry, and the
// components' endpoints.
func (r *Relay) buildAdmin() error {
	cfg := r.cfg
	hash, path, created, err := access.Bootstrap(cfg.DataDir, cfg.Admin.BootstrapKey)
	if err != nil {
		return err
	}
	switch {
	case created:
		r.log.Warn("admin: made a bootstrap super key; read it from the file, keep it secret", "component", "api", "file", path)
	case path != "":
		r.log.Info("admin: bootstrap super key from its file", "component", "api", "file", path)
	}
	r.admin = api.New(cfg.Admin.Listen, r.reg, r.health, r.log,
		api.WithKeys(r.registry, hash), api.WithHosts(cfg.Admin.Hosts), api.WithOpenMetrics(cfg.Admin.OpenMetrics))
	registerPprof(r.admin)
	r.admin.RegisterAccounts(r.registry)
	r.admin.RegisterKeys(r.registry)
	r.admin.HandleRoutes(r.control)
	r.admin.HandleDevices(r.control)
	r.admin.HandleImport(r.control)
	r.admin.HandleCommands(r.control, r.tasks)
	r.admin.HandleDeviceLinks(r.control, r.apiLinks(), r.linkOptions())
	// The config file's routes and the API's, with their accounts.
	deadletter.Register(r.admin, r.deadLetters(), r.sys, deadletter.RoutesFunc(r.control.RouteRef), r.log)
	return nil
}
