package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/netio"
)

// deviceTLS reads the files of devices.native.tls (once, at start: no reload yet) into the
// native TLS listener's options; problems name their dotted path. Disabled, it reads nothing.
func deviceTLS(t config.NativeTLS) (netio.TLSOptions, []string) {
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
		problems = append(problems, fmt.Sprintf("devices.native.tls.cert: %v", err))
	} else {
		o.Certificates = []tls.Certificate{cert}
	}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("devices.native.tls.client_ca: %v", err))
		default:
			o.ClientCAs = x509.NewCertPool()
			if !o.ClientCAs.AppendCertsFromPEM(pem) {
				problems = append(problems, fmt.Sprintf("devices.native.tls.client_ca: no PEM certificate in %s", t.ClientCA))
			}
		}
	}
	return o, problems
}
