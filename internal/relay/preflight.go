package relay

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/route"
)

// Preflight runs the checks of cfg that depend on the machine and the process rather than on the
// file alone, which config.Validate cannot make: devices.event_loops against the CPUs,
// devices.max_connections against the open-file limit ([config.Config.CheckMachine] on
// [ThisMachine]), every enabled route compiled by [route.Compile] as the relay compiles it
// (reading every secret and certificate file), then discarded, and the device TLS listener's
// certificate, key and client CAs read. [New] runs it before it opens
// anything, and fleetrelay -check-config prints it.
//
// It returns warnings ("dotted.path: message") and a [*config.ValidationError] listing every
// problem with its dotted path, or nil. No message shows a secret's value.
func Preflight(cfg *config.Config) (warnings []string, err error) {
	cfg.Resolve()
	warnings, err = cfg.CheckMachine(ThisMachine())
	var problems []string
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		problems = append(problems, ve.Problems...)
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		if !rc.IsEnabled() {
			continue
		}
		// Compiled and discarded: the same compile the relay runs, without clients.
		if _, err := route.Compile(*rc, fmt.Sprintf("routes[%d]", i), route.Deps{Delivery: cfg.Delivery}); errors.As(err, &ve) {
			problems = append(problems, ve.Problems...)
		} else if err != nil {
			problems = append(problems, err.Error())
		}
	}
	if _, _, ps := devicesTLS(&cfg.Devices); len(ps) > 0 { // read, then dropped
		problems = append(problems, ps...)
	}
	if len(problems) > 0 {
		return warnings, &config.ValidationError{Problems: problems}
	}
	return warnings, nil
}

// ThisMachine measures the machine the process runs on: the CPUs it may use and its open-file
// limit (0, not checked, when unlimited or unreadable).
func ThisMachine() config.Machine {
	m := config.Machine{CPUs: runtime.NumCPU()}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		m.OpenFiles = rl.Cur
	}
	return m
}
