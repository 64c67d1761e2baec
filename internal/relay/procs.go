package relay

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// SetProcs raises GOMAXPROCS by one when the relay runs gnet event loops, unless the GOMAXPROCS
// environment variable is set, and returns the value in effect.
//
// A gnet event loop waits in epoll_wait, a blocking system call that keeps its P (Go's right to
// run code) until the runtime's monitor notices and hands the P to another thread. When idle,
// the monitor looks only every 10 ms. With GOMAXPROCS equal to the number of CPUs and as many
// event loops, every P can be parked in epoll_wait while the actors, the store's committer or
// Badger have work: they then wait up to 10 ms to run (golang/go#76290). On the 2-core
// development machine this put the p99 ACK latency of a lightly loaded relay at ≈10 ms instead of
// ≈4 ms. One spare P is enough for that. Spare Ps are not free under load: whenever a goroutine
// is readied while a P is idle, the runtime wakes a thread for it (a futex call, and another when
// the thread parks again). With a spare P per event loop (4 or 6 Ps on 2 cores) that was about
// one wake-up per frame at 10 frames/s from 1,000 devices, and 13–25 % of the relay's CPU
// against one spare P, for the same ACK p99 (median of 3 alternating runs each: 33.3 → 28.8 µs
// per frame with TCP only; 173 → 130 µs per frame at 1 frame/s with TCP and UDP listening).
func SetProcs(cfg *config.Config) int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	if cfg.Devices.Native.TCP == "" && cfg.Devices.Native.UDP == "" {
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0) + 1
	runtime.GOMAXPROCS(n)
	return n
}

// SetMemoryLimit sets the Go runtime's soft memory limit to memory_limit (0: none), unless the
// GOMEMLIMIT environment variable is set, and returns the limit in effect (math.MaxInt64: none).
//
// The relay's memory is mostly queued messages (delivery.max_queued_messages) and what is in
// flight; with GOGC alone the heap may grow to twice what is live before a collection, so a full
// queue's headroom costs as much as the queue. The limit makes the collector run earlier as the
// heap nears it instead; the runtime caps the collector's share of CPU, so a live heap above the
// limit slows the relay rather than stopping it.
//
// It also sets the collector's pace to gc_percent unless the GOGC environment variable is set:
// with the limit as the bound on memory, a higher pace than Go's default of 100 costs memory the
// budget has and saves collections (on the per-frame benchmark, 400 against 100: ≈11 % less CPU
// per frame and ≈14 % off the ACK p99, for 101 instead of 57 MiB of RSS).
func SetMemoryLimit(cfg *config.Config) int64 {
	if os.Getenv("GOGC") == "" && cfg.GCPercent != 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	limit := int64(math.MaxInt64)
	if cfg.MemoryLimit > 0 {
		limit = int64(cfg.MemoryLimit)
	}
	debug.SetMemoryLimit(limit)
	return limit
}
