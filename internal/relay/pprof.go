package relay

import (
	"net/http/pprof"

	"github.com/fleetrelay/fleetrelay/internal/api"
)

// registerPprof serves Go's profiles under /debug/pprof/ on the admin listener, to super keys
// only (a profile shows the process's memory, command line and symbols).
func registerPprof(s *api.Server) {
	s.HandleAPI("GET /debug/pprof/", api.Super, pprof.Index)
	s.HandleAPI("GET /debug/pprof/cmdline", api.Super, pprof.Cmdline)
	s.HandleAPI("GET /debug/pprof/profile", api.Super, pprof.Profile)
	s.HandleAPI("GET /debug/pprof/symbol", api.Super, pprof.Symbol)
	s.HandleAPI("GET /debug/pprof/trace", api.Super, pprof.Trace)
}
