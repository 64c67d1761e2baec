package relay_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// pemFiles writes c's certificate and key as PEM files.
func pemFiles(t testing.TB, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// tlsRelay starts a relay delivering to sink whose devices.native.tls listener has a
// certificate of ca for 127.0.0.1 and requires device certificates of ca.
func tlsRelay(t *testing.T, ca *testCA, sinkURL string) *relay.Relay {
	t.Helper()
	cfg := relaytest.Config(t, sinkURL)
	cert, key := pemFiles(t, ca.Issue(t, true, "127.0.0.1"))
	cfg.Devices.Native.TLS = config.NativeTLS{Listen: "127.0.0.1:0", Cert: cert, Key: key, ClientCA: ca.file, MinVersion: "1.2"}
	return relaytest.Start(t, cfg)
}

// tlsDevice is a loadgen device of the relay's TLS listener presenting cert (none if nil).
func tlsDevice(r *relay.Relay, ca *testCA, serial string, cert *tls.Certificate) *loadgen.Device {
	cfg := &tls.Config{RootCAs: ca.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTLSAddr().String(), Hello: native.Hello{Serial: serial}, TLS: cfg}, 1)
}

// Encrypted device connections end to end: a device with a certificate of the relay's client
// CA connects over TLS, is identified by it, and its DATA is stored, acknowledged and delivered
// to a real HTTP endpoint under its identity; without a certificate it is refused at the
// handshake, with a certificate of another identity than its HELLO's it gets ERROR 401, and a
// plain client on the TLS port is told so in the clear and closed. The metrics count each.
func TestDeviceTLS(t *testing.T) {
	ca := newTestCA(t)
	sink := relaytest.StartSink(t)
	r := tlsRelay(t, ca, sink.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cert := ca.Issue(t, false, "TLSDEV1")
	d := tlsDevice(r, ca, "TLSDEV1", &cert)
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := range 3 {
		if _, err := d.Send([]byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.WaitAcked(ctx, 3); err != nil {
		t.Fatal(err)
	}
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		for seq := uint64(1); seq <= 3; seq++ {
			if n := sink.Count(loadgen.MsgKey{Device: "TLSDEV1", Seq: seq}); n != 1 {
				return fmt.Errorf("TLSDEV1 seq %d delivered %d times", seq, n)
			}
		}
		return nil
	})
	for _, m := range sink.Messages() {
		if m.Path != "/ingest/TLSDEV1" {
			t.Errorf("delivered to %s, want /ingest/TLSDEV1", m.Path)
		}
	}

	// No certificate: the relay ends the handshake (a TLS 1.3 client learns it reading WELCOME).
	if err := tlsDevice(r, ca, "TLSDEV2", nil).Connect(ctx); err == nil {
		t.Error("a device without a certificate was admitted")
	}
	// A certificate for TLSDEV1, a HELLO as TLSDEV3.
	var re *loadgen.ErrRelay
	if err := tlsDevice(r, ca, "TLSDEV3", &cert).Connect(ctx); !errors.As(err, &re) || re.Code != native.CodeUnauthorized {
		t.Errorf("a HELLO naming another device than its certificate: %v, want ERROR 401", err)
	}
	// A plain client on the TLS port.
	plain := loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTLSAddr().String(), Hello: native.Hello{Serial: "PLAIN"}}, 1)
	if err := plain.Connect(ctx); !errors.As(err, &re) || re.Code != native.CodeMalformed || !strings.Contains(re.Msg, "TLS") {
		t.Errorf("a plain client on the TLS port: %v, want ERROR 400 saying the port speaks TLS", err)
	}

	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		_, body := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
		for _, want := range []string{
			`fleetrelay_device_tls_handshake_failures_total{protocol="native",reason="no_client_cert"} 1`,
			`fleetrelay_device_tls_handshake_failures_total{protocol="native",reason="not_tls"} 1`,
			`fleetrelay_device_tls_identity_refused_total{protocol="native"} 1`,
			`fleetrelay_device_tls_handshakes_total{protocol="native"} 2`,
			`fleetrelay_device_tls_connections{protocol="native"} 1`,
		} {
			if !strings.Contains(body, "\n"+want+"\n") {
				return fmt.Errorf("metrics lack %q", want)
			}
		}
		return nil
	})
	if !strings.Contains(sink.Messages()[0].Path, "TLSDEV1") || len(sink.Messages()) != 3 {
		t.Errorf("sink holds %d messages, want TLSDEV1's 3 only", len(sink.Messages()))
	}
}

// The TLS listener's files are read at start: a missing key or a client CA file without a
// certificate in it stops the relay from starting, each problem under its dotted path.
func TestDeviceTLSFiles(t *testing.T) {
	ca := newTestCA(t)
	cfg := relaytest.Config(t, "")
	cert, _ := pemFiles(t, ca.Issue(t, true, "127.0.0.1"))
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("no certificate here"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Devices.Native.TLS = config.NativeTLS{Listen: "127.0.0.1:0", Cert: cert, Key: cert + ".missing", ClientCA: notPEM, MinVersion: "1.2"}
	_, err := relaytest.Open(cfg, relaytest.Logger(t))
	var ve *config.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 ||
		!strings.HasPrefix(ve.Problems[0], "devices.native.tls.cert: ") || !strings.HasPrefix(ve.Problems[1], "devices.native.tls.client_ca: no PEM certificate") {
		t.Fatalf("relay with bad TLS files: %v, want the cert and client_ca problems", err)
	}
}

// loadgen's fleet runs over TLS from its command line (-tls-ca, -tls-version), so the bench can
// measure the TLS listener: against a relay without a client CA, every frame is acknowledged and
// reaches the sink (loadgen's own -sink account finds nothing lost).
func TestLoadgenOverTLS(t *testing.T) {
	ca := newTestCA(t)
	sink := relaytest.StartSink(t)
	cfg := relaytest.Config(t, sink.URL())
	cert, key := pemFiles(t, ca.Issue(t, true, "127.0.0.1"))
	cfg.Devices.Native.TLS = config.NativeTLS{Listen: "127.0.0.1:0", Cert: cert, Key: key, MinVersion: "1.2"}
	r := relaytest.Start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	code := loadgen.Main(ctx, []string{"run", "-addr", r.DeviceTLSAddr().String(), "-tls-ca", ca.file, "-tls-version", "1.2",
		"-devices", "5", "-rate", "50", "-duration", "300ms", "-prefix", "TLSLG", "-quiet", "-sink", sink.URL(), "-sink-quiet", "5s"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("loadgen run over TLS exited %d: %s%s", code, out.String(), errOut.String())
	}
	if st := sink.Stats(); st.Unique == 0 {
		t.Fatalf("sink got nothing: %+v\n%s", st, out.String())
	}
	_, body := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	if !strings.Contains(body, "\n"+`fleetrelay_device_tls_handshakes_total{protocol="native"} 5`+"\n") {
		t.Errorf("metrics: want 5 TLS handshakes\n%s", out.String())
	}
}
