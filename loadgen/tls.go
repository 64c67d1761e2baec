package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientTLS is the TLS configuration of devices that trust the CAs of the PEM file caFile and,
// with certFile and keyFile, present that certificate. version "1.2" or "1.3" pins the version
// ("" lets the two sides agree on the highest).
func ClientTLS(caFile, certFile, keyFile, version string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("-tls-ca is required for TLS")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls ca: %w", err)
	}
	cfg := &tls.Config{RootCAs: x509.NewCertPool()}
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls ca: no PEM certificate in %s", caFile)
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls cert: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	switch version {
	case "":
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		return nil, fmt.Errorf("tls version %q: want 1.2 or 1.3", version)
	}
	return cfg, nil
}
