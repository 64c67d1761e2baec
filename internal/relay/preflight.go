package relay

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// Preflight runs the checks of cfg that depend on the machine and the process rather than on the
// file alone, which config.Validate cannot make: devices.event_loops against the CPUs,
// devices.max_connections against the open-file limit ([config.Config.CheckMachine] on
// [ThisMachine]), and for every enabled route what the relay would build from its tls, auth and
// sign sections, reading every secret and certificate file. [New] runs it before it opens
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
		path := fmt.Sprintf("routes[%d]", i)
		t := rc.TLS
		if _, err := deliver.NewTLSConfig(deliver.TLSOptions{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
			MinVersion: t.MinVersion, InsecureSkipVerify: t.InsecureSkipVerify}); err != nil {
			for _, e := range flatten(err) { // each named "tls.field: ..." or not named
				if msg := e.Error(); strings.HasPrefix(msg, "tls.") {
					problems = append(problems, path+"."+msg)
				} else {
					problems = append(problems, path+".tls: "+msg)
				}
			}
		}
		if _, err := routeAuth(rc, path, http.DefaultClient); err != nil {
			for _, e := range flatten(err) {
				problems = append(problems, e.Error())
			}
		}
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
