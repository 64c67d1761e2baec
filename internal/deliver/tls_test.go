package deliver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and localhost and a client
// certificate, written as PEM files to a temporary directory.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
	pool   *x509.CertPool
	server tls.Certificate
	// client certificate "relay-1" and its key
	certFile, keyFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.caKey = newKey(t)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fleetrelay test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(2 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.caFile = p.writePEM(t, "ca.pem", "CERTIFICATE", der)

	srvDER, srvKey := p.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "route.test"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, 365*24*time.Hour)
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}

	p.certFile, p.keyFile = p.writeCert(t, "client", "relay-1", x509.ExtKeyUsageClientAuth, 365*24*time.Hour)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial atomic.Int64

// issue signs tmpl with the CA for validity from now.
func (p *testPKI) issue(t *testing.T, tmpl *x509.Certificate, validity time.Duration) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = big.NewInt(100 + serial.Add(1))
	tmpl.NotBefore = time.Now().Add(-2 * time.Hour)
	tmpl.NotAfter = time.Now().Add(validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// writeCert issues a certificate for cn with usage and writes it and its key as name.pem and
// name-key.pem.
func (p *testPKI) writeCert(t *testing.T, name, cn string, usage x509.ExtKeyUsage, validity time.Duration) (certFile, keyFile string) {
	t.Helper()
	der, key := p.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{usage}}, validity)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.writePEM(t, name+".pem", "CERTIFICATE", der), p.writePEM(t, name+"-key.pem", "PRIVATE KEY", keyDER)
}

func (p *testPKI) writePEM(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tlsServer is an HTTPS route server answering 204, recording the TLS version and client
// certificate of its last request.
type tlsServer struct {
	*httptest.Server
	version atomic.Uint32
	client  atomic.Pointer[string] // CN of the last client certificate
}

// startTLSServer starts a route server with p's server certificate; edit adjusts its TLS
// configuration before it starts.
func startTLSServer(t *testing.T, p *testPKI, edit func(*tls.Config)) *tlsServer {
	t.Helper()
	s := &tlsServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.version.Store(uint32(r.TLS.Version))
		if len(r.TLS.PeerCertificates) > 0 {
			cn := r.TLS.PeerCertificates[0].Subject.CommonName
			s.client.Store(&cn)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	s.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}}
	if edit != nil {
		edit(s.TLS)
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func tlsConfig(t *testing.T, o deliver.TLSOptions) *tls.Config {
	t.Helper()
	cfg, err := deliver.NewTLSConfig(o)
	if err != nil {
		t.Fatalf("NewTLSConfig(%+v): %v", o, err)
	}
	return cfg
}

// deliverTLS makes one attempt to url with a new client using cfg.
func deliverTLS(t *testing.T, cfg *tls.Config, url string) deliver.Result {
	t.Helper()
	c := newClient(t, deliver.Options{AllowPrivateNetworks: true, TLS: cfg, Timeout: 5 * time.Second})
	return c.Do(t.Context(), &deliver.Request{URL: url + "/in", Body: []byte(`[]`)})
}

func wantDelivered(t *testing.T, what string, res deliver.Result) {
	t.Helper()
	if res.Err != nil || res.Status != http.StatusNoContent {
		t.Fatalf("%s: status %d, error %v; want 204", what, res.Status, res.Err)
	}
}

func wantRefused(t *testing.T, what string, res deliver.Result, errWant string) {
	t.Helper()
	if res.Err == nil || res.Status != 0 {
		t.Fatalf("%s: status %d, error %v; want a TLS error", what, res.Status, res.Err)
	}
	t.Logf("%s: %v", what, res.Err)
	if !strings.Contains(res.Err.Error(), errWant) {
		t.Errorf("%s: error %q, want it to contain %q", what, res.Err, errWant)
	}
}

func TestTLSCAFile(t *testing.T) {
	p := newTestPKI(t)
	srv := startTLSServer(t, p, nil)

	wantDelivered(t, "CA file", deliverTLS(t, tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile}), srv.URL))
	if v := srv.version.Load(); v != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(uint16(v)))
	}

	// The same server is unknown to the system roots, with or without a TLS configuration.
	for _, cfg := range []*tls.Config{nil, tlsConfig(t, deliver.TLSOptions{})} {
		res := deliverTLS(t, cfg, srv.URL)
		wantRefused(t, "no CA file", res, "certificate")
		var uae x509.UnknownAuthorityError
		if !errors.As(res.Err, &uae) {
			t.Errorf("no CA file: error %v (%T), want an x509.UnknownAuthorityError", res.Err, errors.Unwrap(res.Err))
		}
	}

	// The CA vouches for 127.0.0.1 and localhost only.
	other := startTLSServer(t, p, func(c *tls.Config) {
		der, key := p.issue(t, &x509.Certificate{DNSNames: []string{"elsewhere.test"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, time.Hour)
		c.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}
	})
	wantRefused(t, "wrong host name", deliverTLS(t, tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile}), other.URL), "127.0.0.1")
}

func TestTLSClientCertificate(t *testing.T) {
	p := newTestPKI(t)
	q := newTestPKI(t) // another CA
	f := func(maxVersion uint16, refusal string) {
		t.Helper()
		srv := startTLSServer(t, p, func(c *tls.Config) {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = p.pool
			c.MaxVersion = maxVersion
		})
		v := tls.VersionName(maxVersion)

		cfg := tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile})
		wantDelivered(t, v+": client certificate", deliverTLS(t, cfg, srv.URL))
		if cn := srv.client.Load(); cn == nil || *cn != "relay-1" {
			t.Errorf("%s: server saw client certificate %v, want relay-1", v, cn)
		}
		wantRefused(t, v+": no client certificate", deliverTLS(t, tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile}), srv.URL), refusal)
		cfg = tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile, CertFile: q.certFile, KeyFile: q.keyFile})
		wantRefused(t, v+": client certificate of another CA", deliverTLS(t, cfg, srv.URL), refusal)
	}
	// TLS 1.2 refuses the client certificate within the handshake: the TLS alert is the error.
	f(tls.VersionTLS12, "remote error: tls:")
	// TLS 1.3 refuses it after the client's handshake is done, and fasthttp reports any error
	// on the first response byte as a connection closed early.
	f(tls.VersionTLS13, "closed connection before returning the first response byte")
}

func TestTLSMinVersion(t *testing.T) {
	p := newTestPKI(t)
	old := startTLSServer(t, p, func(c *tls.Config) {
		c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	})
	// The server does speak TLS 1.1 to a client that accepts it.
	conn, err := tls.Dial("tcp", old.Listener.Addr().String(), &tls.Config{
		RootCAs: p.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10,
	})
	if err != nil {
		t.Fatalf("TLS 1.1 server: handshake at TLS 1.0–1.1: %v", err)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS11 {
		t.Errorf("TLS 1.1 server negotiated %s", tls.VersionName(v))
	}
	_ = conn.Close()

	wantRefused(t, "TLS 1.1 server", deliverTLS(t, tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile}), old.URL), "version")
	// Even a hand-made configuration that allows TLS 1.0 gets TLS 1.2 at least.
	lax := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS10}
	wantRefused(t, "TLS 1.1 server, MinVersion 1.0 configured", deliverTLS(t, lax, old.URL), "version")

	tls12 := startTLSServer(t, p, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
	wantDelivered(t, "TLS 1.2 server, min 1.2", deliverTLS(t, tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile, MinVersion: "1.2"}), tls12.URL))
	if v := tls12.version.Load(); v != tls.VersionTLS12 {
		t.Errorf("negotiated %s, want TLS 1.2", tls.VersionName(uint16(v)))
	}
	wantRefused(t, "TLS 1.2 server, min 1.3", deliverTLS(t, tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile, MinVersion: "1.3"}), tls12.URL), "version")
}

func TestTLSInsecureSkipVerify(t *testing.T) {
	p := newTestPKI(t)
	srv := startTLSServer(t, p, nil)

	cfg := tlsConfig(t, deliver.TLSOptions{InsecureSkipVerify: true})
	wantDelivered(t, "insecure_skip_verify", deliverTLS(t, cfg, srv.URL))
	if w, due := deliver.TLSWarning(cfg); !due || !strings.Contains(w, "not verified") {
		t.Errorf("TLSWarning(insecure) = %q, %v; want a warning", w, due)
	}
	for _, cfg := range []*tls.Config{nil, tlsConfig(t, deliver.TLSOptions{}), tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile})} {
		if w, due := deliver.TLSWarning(cfg); due {
			t.Errorf("TLSWarning(verifying) = %q, want none", w)
		}
	}
}

func TestTLSWarningClientCertificateExpiry(t *testing.T) {
	p := newTestPKI(t)
	f := func(validity time.Duration, want string) {
		t.Helper()
		cert, key := p.writeCert(t, "c", "relay-2", x509.ExtKeyUsageClientAuth, validity)
		w, due := deliver.TLSWarning(tlsConfig(t, deliver.TLSOptions{CertFile: cert, KeyFile: key}))
		if !due || !strings.Contains(w, want) || !strings.Contains(w, "relay-2") {
			t.Errorf("TLSWarning(certificate valid for %v) = %q, %v; want %q", validity, w, due, want)
		}
	}
	f(48*time.Hour, "expires on")
	f(-time.Hour, "expired on")
}

func TestNewTLSConfigErrors(t *testing.T) {
	p := newTestPKI(t)
	write := func(name, content string) string {
		path := filepath.Join(p.dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyPEM, err := os.ReadFile(p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	serverOnlyCert, serverOnlyKey := p.writeCert(t, "srv", "server-only", x509.ExtKeyUsageServerAuth, time.Hour)
	otherCert, _ := p.writeCert(t, "other", "other", x509.ExtKeyUsageClientAuth, time.Hour)

	f := func(o deliver.TLSOptions, want ...string) {
		t.Helper()
		cfg, err := deliver.NewTLSConfig(o)
		if err == nil {
			t.Fatalf("NewTLSConfig(%+v) = %v, nil; want an error", o, cfg)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewTLSConfig(%+v) = %q, want it to contain %q", o, err, w)
			}
		}
		if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), string(keyPEM[40:80])) {
			t.Errorf("NewTLSConfig error %q shows key material", err)
		}
	}
	missing := filepath.Join(p.dir, "missing.pem")
	f(deliver.TLSOptions{CAFile: missing}, "tls.ca_file: open "+missing)
	f(deliver.TLSOptions{CAFile: write("garbage.pem", "not PEM\n")}, "tls.ca_file: ", "no PEM certificates")
	f(deliver.TLSOptions{CAFile: p.keyFile}, "tls.ca_file: ", `PEM block 1 is "PRIVATE KEY", want CERTIFICATE`)
	f(deliver.TLSOptions{CAFile: write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}, "tls.ca_file: ", "PEM block 1: x509")
	f(deliver.TLSOptions{CertFile: p.certFile}, "tls.key_file: required with tls.cert_file")
	f(deliver.TLSOptions{KeyFile: p.keyFile}, "tls.cert_file: required with tls.key_file")
	f(deliver.TLSOptions{CertFile: otherCert, KeyFile: p.keyFile}, "tls.cert_file "+otherCert, "private key does not match")
	f(deliver.TLSOptions{CertFile: p.certFile, KeyFile: missing}, "tls.key_file "+missing)
	f(deliver.TLSOptions{CertFile: serverOnlyCert, KeyFile: serverOnlyKey}, "not for client authentication")
	f(deliver.TLSOptions{MinVersion: "1.1"}, `tls.min_version: "1.1"`)
	// Every problem at once.
	f(deliver.TLSOptions{CAFile: missing, CertFile: p.certFile, MinVersion: "1.0"}, "tls.ca_file", "tls.key_file", "tls.min_version")
}

func TestNewHTTPClient(t *testing.T) {
	p := newTestPKI(t)
	srv := startTLSServer(t, p, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = p.pool
	})
	cfg := tlsConfig(t, deliver.TLSOptions{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile})

	get := func(hc *http.Client, url string) (int, error) {
		t.Helper()
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(url)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(deliver.NewHTTPClient(deliver.Options{AllowPrivateNetworks: true, TLS: cfg}), srv.URL+"/token"); err != nil || code != http.StatusNoContent {
		t.Fatalf("GET with CA and client certificate: %d, %v; want 204", code, err)
	}
	if _, err := get(deliver.NewHTTPClient(deliver.Options{AllowPrivateNetworks: true}), srv.URL+"/token"); err == nil {
		t.Error("GET without the CA succeeded")
	}
	_, err := get(deliver.NewHTTPClient(deliver.Options{TLS: cfg}), srv.URL+"/token")
	if !errors.Is(err, deliver.ErrPrivateAddress) {
		t.Errorf("GET of 127.0.0.1 without AllowPrivateNetworks: %v, want ErrPrivateAddress", err)
	}
	_, err = get(deliver.NewHTTPClient(deliver.Options{TLS: cfg}), strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+"/token")
	if !errors.Is(err, deliver.ErrPrivateAddress) {
		t.Errorf("GET of localhost without AllowPrivateNetworks: %v, want ErrPrivateAddress", err)
	}

	redirect := httptest.NewUnstartedServer(http.RedirectHandler(srv.URL+"/elsewhere", http.StatusTemporaryRedirect))
	redirect.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}}
	redirect.StartTLS()
	defer redirect.Close()
	if code, err := get(deliver.NewHTTPClient(deliver.Options{AllowPrivateNetworks: true, TLS: cfg}), redirect.URL); err != nil || code != http.StatusTemporaryRedirect {
		t.Errorf("GET of a redirect: %d, %v; want 307, not followed", code, err)
	}
}
