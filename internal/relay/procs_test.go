package relay_test

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

func TestSetProcs(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(base)

	t.Setenv("GOMAXPROCS", "")
	cfg := config.Default()
	cfg.Devices.EventLoops = 3
	if got := relay.SetProcs(cfg); got != base+1 || runtime.GOMAXPROCS(0) != base+1 {
		t.Fatalf("TCP and UDP with 3 loops each: SetProcs = %d, GOMAXPROCS %d; want %d (one spare P)", got, runtime.GOMAXPROCS(0), base+1)
	}
	runtime.GOMAXPROCS(base)
	cfg.Devices.Native.UDP = ""
	if got := relay.SetProcs(cfg); got != base+1 {
		t.Fatalf("TCP only: SetProcs = %d, want %d", got, base+1)
	}
	runtime.GOMAXPROCS(base)
	cfg.Devices.Native.TCP = ""
	if got := relay.SetProcs(cfg); got != base {
		t.Fatalf("no native listener: SetProcs = %d, want %d unchanged", got, base)
	}
	runtime.GOMAXPROCS(base)

	t.Setenv("GOMAXPROCS", "1") // an operator's choice wins (the runtime read it at start)
	if got := relay.SetProcs(cfg); got != base {
		t.Fatalf("with GOMAXPROCS set: SetProcs = %d, want %d unchanged", got, base)
	}
}

func TestSetMemoryLimit(t *testing.T) {
	base := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(base)
	gc := debug.SetGCPercent(100)
	defer debug.SetGCPercent(gc)

	t.Setenv("GOGC", "")
	relay.SetMemoryLimit(config.Default())
	if got := debug.SetGCPercent(100); got != config.Default().GCPercent {
		t.Fatalf("default: GC percent %d, want %d", got, config.Default().GCPercent)
	}
	t.Setenv("GOGC", "50") // an operator's choice wins (the runtime read it at start)
	relay.SetMemoryLimit(config.Default())
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set: GC percent %d, want 100 unchanged", got)
	}

	t.Setenv("GOMEMLIMIT", "")
	cfg := config.Default()
	if got, now := relay.SetMemoryLimit(cfg), debug.SetMemoryLimit(-1); got != int64(cfg.MemoryLimit) || now != got {
		t.Fatalf("default: SetMemoryLimit = %d, runtime limit %d; want %d", got, now, int64(cfg.MemoryLimit))
	}
	cfg.MemoryLimit = 0
	if got, now := relay.SetMemoryLimit(cfg), debug.SetMemoryLimit(-1); got != math.MaxInt64 || now != math.MaxInt64 {
		t.Fatalf("memory_limit 0: SetMemoryLimit = %d, runtime limit %d; want no limit", got, now)
	}

	debug.SetMemoryLimit(123 << 20)
	t.Setenv("GOMEMLIMIT", "123MiB") // an operator's choice wins (the runtime read it at start)
	cfg.MemoryLimit = 64 * config.MiB
	if got := relay.SetMemoryLimit(cfg); got != 123<<20 {
		t.Fatalf("with GOMEMLIMIT set: SetMemoryLimit = %d, want %d unchanged", got, 123<<20)
	}
}
