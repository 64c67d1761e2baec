package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/netio"
)

// deviceTLS reads the files of a device TLS listener (devices.native.tls, devices.teltonika.tls:
// path) once, at start (no reload yet), into its options; problems name their dotted path.
// Disabled, it reads nothing.
func deviceTLS(path string, t config.NativeTLS) (netio.TLSOptions, []string) {
	if t.Listen == "" {
		return netio.TLSOptions{}, nil
	}
	o := netio.TLSOptions{Addr: t.Listen, MinVersion: tls.VersionTLS12}
	if t.MinVersion == "1.3" {
		o.MinVersion = tls.VersionTLS13
	}
	var problems []string
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		problems = append(problems, fmt.Sprintf("%s.cert: %v", path, err))
	} else {
		o.Certificates = []tls.Certificate{cert}
	}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s.client_ca: %v", path, err))
		default:
			o.ClientCAs = x509.NewCertPool()
			if !o.ClientCAs.AppendCertsFromPEM(pem) {
				problems = append(problems, fmt.Sprintf("%s.client_ca: no PEM certificate in %s", path, t.ClientCA))
			}
		}
	}
	return o, problems
}

// devicesTLS reads the files of both device TLS listeners.
func devicesTLS(d *config.Devices) (native, teltonika netio.TLSOptions, problems []string) {
	native, problems = deviceTLS("devices.native.tls", d.Native.TLS)
	teltonika, ps := deviceTLS("devices.teltonika.tls", d.Teltonika.TLS)
	return native, teltonika, append(problems, ps...)
}
