package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// TLSOptions configures HTTPS for the relay's outgoing requests: deliveries to routes and, through
// NewHTTPClient, OAuth2 token requests. It applies to every route of a relay.
type TLSOptions struct {
	// CAFile is a PEM file of CA certificates trusted in addition to the system roots, so that
	// routes behind a private CA and routes with public certificates work side by side. Empty:
	// the system roots only.
	CAFile string
	// CertFile is a PEM client certificate (its chain may follow) presented to servers that ask
	// for one (mutual TLS). It must allow client authentication. Requires KeyFile.
	CertFile string
	// KeyFile is the PEM private key of CertFile; its contents are never printed.
	KeyFile string
	// MinVersion is the lowest TLS version accepted: "1.2" (the default) or "1.3". Older
	// versions are never accepted.
	MinVersion string
	// InsecureSkipVerify accepts any server certificate, for any host name: anyone on the path
	// can read and change deliveries. For tests only; TLSWarning reports it.
	InsecureSkipVerify bool
}

// expiryWarning is how long before its client certificate expires TLSWarning reports it.
const expiryWarning = 14 * 24 * time.Hour

// NewTLSConfig builds the TLS configuration described by o, reading its files once. It reports
// every problem, each prefixed with its setting (tls.ca_file: …).
//
// The result is meant for Options.TLS and NewHTTPClient, which copy it; it must not be modified
// afterwards.
func NewTLSConfig(o TLSOptions) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: o.InsecureSkipVerify, // only when configured; TLSWarning reports it
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
	}
	var errs []error
	switch o.MinVersion {
	case "", "1.2":
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	default:
		errs = append(errs, fmt.Errorf("tls.min_version: %q: want \"1.2\" or \"1.3\"", o.MinVersion))
	}
	if o.CAFile != "" {
		pool, err := loadCAs(o.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.ca_file: %w", err))
		}
		cfg.RootCAs = pool
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		cert, err := loadClientCert(o.CertFile, o.KeyFile)
		if err != nil {
			errs = append(errs, err)
		} else {
			cfg.Certificates = []tls.Certificate{cert}
		}
	case o.CertFile != "":
		errs = append(errs, errors.New("tls.key_file: required with tls.cert_file"))
	case o.KeyFile != "":
		errs = append(errs, errors.New("tls.cert_file: required with tls.key_file"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// loadCAs returns the system roots plus the certificates of the PEM file at path.
func loadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool() // no system roots on this platform: the file's alone
	}
	n := 0
	for i := 1; ; i++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q, want CERTIFICATE", path, i, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: %w", path, i, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return pool, nil
}

// loadClientCert loads a client certificate and its key and checks that servers can accept it.
func loadClientCert(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return cert, fmt.Errorf("tls.cert_file %s, tls.key_file %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil { // Go fills Leaf unless GODEBUG x509keypairleaf=0
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return cert, fmt.Errorf("tls.cert_file %s: %w", certFile, err)
		}
		cert.Leaf = leaf
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return cert, fmt.Errorf("tls.cert_file %s: certificate %q is not for client authentication (extended key usage)",
			certFile, leaf.Subject)
	}
	return cert, nil
}

// TLSWarning reports whether cfg deserves a warning when the relay starts, and the warning:
// server certificates are not verified, or the client certificate has expired or expires within
// 14 days. A nil cfg (the defaults) deserves none.
func TLSWarning(cfg *tls.Config) (warning string, due bool) {
	if cfg == nil {
		return "", false
	}
	var ws []string
	if cfg.InsecureSkipVerify {
		ws = append(ws, "TLS server certificates are not verified (insecure_skip_verify): deliveries can be read and changed in transit")
	}
	now := time.Now()
	for _, c := range cfg.Certificates {
		if c.Leaf == nil {
			continue
		}
		switch left := c.Leaf.NotAfter.Sub(now); {
		case left <= 0:
			ws = append(ws, fmt.Sprintf("TLS client certificate %q expired on %s", c.Leaf.Subject, c.Leaf.NotAfter.UTC().Format(time.DateOnly)))
		case left < expiryWarning:
			ws = append(ws, fmt.Sprintf("TLS client certificate %q expires on %s", c.Leaf.Subject, c.Leaf.NotAfter.UTC().Format(time.DateOnly)))
		}
	}
	return strings.Join(ws, "; "), len(ws) > 0
}

// clientTLS returns a copy of cfg for one client, never accepting less than TLS 1.2; a nil cfg
// gives the defaults (system roots, TLS 1.2).
func clientTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		return &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(0)}
	}
	cfg = cfg.Clone()
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	return cfg
}

// NewHTTPClient returns a net/http client for the relay's other outgoing requests, such as OAuth2
// token requests, that follows the delivery client's rules: o.TLS (TLS 1.2 at least), o.Timeout
// per request, no proxy, and private addresses refused unless o.AllowPrivateNetworks (checked on
// every address dialled, after DNS resolution). It does not follow redirects. Its Logger and
// MaxConnsPerHost are not used.
//
// The client is safe for concurrent use. Its idle connections hold goroutines: call its
// CloseIdleConnections when done with it.
func NewHTTPClient(o Options) *http.Client {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	d := &net.Dialer{Timeout: o.Timeout}
	if !o.AllowPrivateNetworks {
		d.ControlContext = refusePrivate
	}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           d.DialContext,
			TLSClientConfig:       clientTLS(o.TLS),
			TLSHandshakeTimeout:   o.Timeout,
			ResponseHeaderTimeout: o.Timeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
		Timeout: o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// refusePrivate is a net.Dialer control function that refuses private addresses; it sees each
// resolved address just before it is dialled.
func refusePrivate(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || IsPrivate(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrPrivateAddress, address)
	}
	return nil
}
