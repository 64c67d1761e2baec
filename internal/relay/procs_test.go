package relay_test

import (
	"runtime"
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
