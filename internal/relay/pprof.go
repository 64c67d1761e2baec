package relay

import (
	"net/http/pprof"

	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/fleetrelay/fleetrelay/internal/api"
)

// registerPprof serves Go's profiles under /debug/pprof on the admin listener (which has no
// authentication: keep it on loopback or a private network).
func registerPprof(s *api.Server) {
	s.Handle("GET", "/debug/pprof/", fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Index))
	for _, name := range []string{"heap", "goroutine", "allocs", "block", "mutex", "threadcreate"} {
		s.Handle("GET", "/debug/pprof/"+name, fasthttpadaptor.NewFastHTTPHandler(pprof.Handler(name)))
	}
	s.Handle("GET", "/debug/pprof/profile", fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Profile))
	s.Handle("GET", "/debug/pprof/trace", fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Trace))
	s.Handle("GET", "/debug/pprof/cmdline", fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Cmdline))
	s.Handle("GET", "/debug/pprof/symbol", fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Symbol))
}
