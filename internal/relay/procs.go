package relay

import (
	"os"
	"runtime"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// SetProcs raises GOMAXPROCS by one per gnet event loop, unless the GOMAXPROCS environment
// variable is set, and returns the value in effect.
//
// A gnet event loop waits in epoll_wait, a blocking system call that keeps its P (Go's right to
// run code) until the runtime's monitor notices and hands the P to another thread. When idle,
// the monitor looks only every 10 ms. With GOMAXPROCS equal to the number of CPUs and as many
// event loops, every P can be parked in epoll_wait while the actors, the store's committer or
// Badger have work: they then wait up to 10 ms to run (golang/go#76290). On the 2-core
// development machine this put the p99 ACK latency of a lightly loaded relay at ≈7 ms instead of
// ≈2 ms. Spare Ps cost nothing while idle; the event loops still use at most one CPU each.
func SetProcs(cfg *config.Config) int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	loops := cfg.Devices.EventLoops
	if loops <= 0 {
		loops = runtime.NumCPU()
	}
	engines := 0
	for _, addr := range []string{cfg.Devices.Native.TCP, cfg.Devices.Native.UDP} {
		if addr != "" {
			engines++
		}
	}
	n := runtime.GOMAXPROCS(0) + engines*loops
	runtime.GOMAXPROCS(n)
	return n
}
