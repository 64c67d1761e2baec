package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// telTLSDial connects to the Teltonika TLS listener at addr trusting ca, presenting cert (none
// if nil), and sends imei's handshake. It returns the connection and the relay's answer (1 or
// 0), or the error that ended the exchange (a refused handshake surfaces at the first read
// under TLS 1.3).
func telTLSDial(t *testing.T, addr string, ca *testCA, cert *tls.Certificate, imei string) (*tls.Conn, byte, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, 0, err
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(teltonika.AppendIMEI(nil, imei)); err != nil {
		return c, 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return c, 0, err
	}
	return c, b[0], nil
}

// readEOF checks that the relay closed c: nothing more to read, then the end of the stream.
func readEOF(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); len(b) > 0 || (err != nil && !errors.Is(err, net.ErrClosed)) {
		t.Fatalf("after a refusal: read % x, %v; want the end of the stream", b, err)
	}
}

// Teltonika over TLS (devices.teltonika.tls), end to end through the real relay to an HTTP
// endpoint, with device certificates of a CA made here: a tracker whose certificate's CN is its
// IMEI is admitted (01), and its AVL packet is answered with its count only once the route took
// its records (ack mode delivery: not while the endpoint answers 503), the decoded fields
// delivered under its IMEI; a certificate for another IMEI gets 00 and the connection closed;
// no certificate (client_ca set) fails the handshake; a plain tracker on the TLS port is
// answered 00 and closed. The metrics tell Teltonika's TLS connections from native ones, and
// shutdown leaves no goroutine behind.
func TestTeltonikaTLS(t *testing.T) {
	leakOpts := []goleak.Option{
		goleak.IgnoreCurrent(),
		// fasthttp's process-wide Date-header ticker and its idle-connection cleaners stop on
		// their own schedule, not with the client or server.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	}
	ca := newTestCA(t)
	sink := newTelSink(t)
	sink.setStatus(http.StatusServiceUnavailable)
	cfg := telConfig(t, sink)
	cfg.Devices.Ack = config.AckDelivery
	cert, key := pemFiles(t, ca.Issue(t, true, "127.0.0.1"))
	cfg.Devices.Teltonika.TLS = config.NativeTLS{Listen: "127.0.0.1:0", Cert: cert, Key: key, ClientCA: ca.file, MinVersion: "1.2"}
	r := relaytest.Start(t, cfg)
	addr := r.TeltonikaTLSAddr().String()

	// Admitted by its certificate; answered once delivered.
	devCert := ca.Issue(t, false, telIMEI)
	c, ok, err := telTLSDial(t, addr, ca, &devCert, telIMEI)
	if err != nil || ok != 1 {
		t.Fatalf("handshake with a certificate naming the IMEI: answer %d, %v; want 1", ok, err)
	}
	base := time.Date(2026, 12, 7, 11, 0, 0, 250e6, time.UTC)
	if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base, 3))); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, bodies := sink.got(); bodies == 0 {
			return errors.New("the route has not tried the endpoint yet")
		}
		return nil
	})
	noAnswer(t, c) // stored, but not delivered: not answered
	sink.setStatus(0)
	if n := readAck(t, c); n != 3 {
		t.Fatalf("answer to 3 records = %d, want 3", n)
	}
	recs, _ := sink.got()
	if len(recs) != 3 {
		t.Fatalf("%d records delivered when answered, want 3", len(recs))
	}
	for k, want := range map[string]any{"ts": "2026-12-07T11:00:00.250Z", "lat": -54.654321, "lon": 25.1234567, "alt": -12.0,
		"speed": 40.0, "satellites": 9.0, "ignition": true, "_imei": telIMEI} {
		if recs[0][k] != want {
			t.Errorf("delivered %s = %v (%T), want %v; record %v", k, recs[0][k], recs[0][k], want, recs[0])
		}
	}

	// A certificate for another IMEI: the TLS handshake succeeds, the IMEI handshake does not.
	other := ca.Issue(t, false, "356307042441999")
	c2, ok, err := telTLSDial(t, addr, ca, &other, telIMEI)
	if err != nil || ok != 0 {
		t.Fatalf("handshake naming another IMEI than the certificate: answer %d, %v; want 0", ok, err)
	}
	readEOF(t, c2)

	// No certificate while client_ca is set: refused at the TLS handshake.
	if _, ok, err := telTLSDial(t, addr, ca, nil, telIMEI); err == nil {
		t.Fatalf("a tracker without a certificate was answered %d", ok)
	}

	// A plain tracker on the TLS port: answered 00, in its own protocol, and closed.
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Write(teltonika.AppendIMEI(nil, telIMEI)); err != nil {
		t.Fatal(err)
	}
	_ = plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(plain); string(b) != "\x00" || (err != nil && !isReset(err)) {
		t.Fatalf("a plain tracker on the TLS port read % x, %v; want 00 then the end", b, err)
	}

	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, body := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
		for _, want := range []string{
			`fleetrelay_device_tls_connections{protocol="teltonika"} 1`,
			`fleetrelay_device_tls_connections{protocol="native"} 0`,
			`fleetrelay_device_tls_handshakes_total{protocol="teltonika"} 2`,
			`fleetrelay_device_tls_handshakes_total{protocol="native"} 0`,
			`fleetrelay_device_tls_identity_refused_total{protocol="teltonika"} 1`,
			`fleetrelay_device_tls_handshake_failures_total{protocol="teltonika",reason="no_client_cert"} 1`,
			`fleetrelay_device_tls_handshake_failures_total{protocol="teltonika",reason="not_tls"} 1`,
			`fleetrelay_device_tls_handshake_failures_total{protocol="native",reason="not_tls"} 0`,
			`fleetrelay_teltonika_refused_total 1`,
			`fleetrelay_teltonika_packets_total 1`,
		} {
			if !strings.Contains(body, "\n"+want+"\n") {
				return fmt.Errorf("metrics lack %q", want)
			}
		}
		return nil
	})
	if st := r.TeltonikaStats().Net.TLS; st.Connections != 1 || st.Handshakes != 2 || st.IdentityRefused != 1 {
		t.Errorf("Teltonika TLS stats %+v, want 1 connection, 2 handshakes, 1 identity refused", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	readEOF(t, c) // the relay closed the admitted tracker's connection
	c.Close()
	sink.srv.Close()
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		return goleak.Find(leakOpts...)
	})
}

// isReset reports whether err is the peer resetting the connection (a close with unread bytes).
func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && strings.Contains(ne.Err.Error(), "connection reset")
}

// A Codec 12 command through the commands API reaches a tracker connected over TLS (written by
// the TLS connection's writer), and its response completes the task.
func TestTeltonikaTLSCodec12(t *testing.T) {
	ca := newTestCA(t)
	sink := newTelSink(t)
	cfg := telConfig(t, sink)
	cert, key := pemFiles(t, ca.Issue(t, true, "127.0.0.1"))
	cfg.Devices.Teltonika.TLS = config.NativeTLS{Listen: "127.0.0.1:0", Cert: cert, Key: key, MinVersion: "1.3"}
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/"+telIMEI, map[string]any{"tags": []string{"fmb"}})
	c, ok, err := telTLSDial(t, r.TeltonikaTLSAddr().String(), ca, nil, telIMEI) // no client CA: none asked for
	if err != nil || ok != 1 {
		t.Fatalf("handshake: answer %d, %v; want 1", ok, err)
	}
	if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(time.Now(), 1))); err != nil {
		t.Fatal(err)
	}
	if n := readAck(t, c); n != 1 {
		t.Fatalf("answer = %d, want 1", n)
	}
	v := api.must(http.StatusCreated, "POST", "/api/v1/devices/"+telIMEI+"/commands", map[string]any{"payload": map[string]any{"text": "getinfo"}})
	if frame, want := telFrame(t, c), teltonika.AppendCommand(nil, "getinfo"); string(frame) != string(want) {
		t.Fatalf("command frame % x, want % x", frame, want)
	}
	const info = "RTC:2026/12/7 11:00 UpTime:60s GPS:3 SAT:8"
	if _, err := c.Write(teltonika.AppendResponse(nil, info)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for _, tk := range tasksOf(api, telIMEI) {
			if float64(tk.ID) == v["task"] && tk.State == "succeeded" && strings.Contains(string(tk.Result), "UpTime:60s") {
				return nil
			}
		}
		return fmt.Errorf("task %v not succeeded with the response: %v", v["task"], tasksOf(api, telIMEI))
	})
}

// devices.teltonika.tls's files are read at start, each problem under its own path.
func TestTeltonikaTLSFiles(t *testing.T) {
	cfg := relaytest.Config(t, "")
	missing := t.TempDir() + "/missing.pem"
	cfg.Devices.Teltonika.TLS = config.NativeTLS{Listen: "127.0.0.1:0", Cert: missing, Key: missing, ClientCA: missing, MinVersion: "1.2"}
	_, err := relaytest.Open(cfg, relaytest.Logger(t))
	var ve *config.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 ||
		!strings.HasPrefix(ve.Problems[0], "devices.teltonika.tls.cert: ") || !strings.HasPrefix(ve.Problems[1], "devices.teltonika.tls.client_ca: ") {
		t.Fatalf("relay with missing Teltonika TLS files: %v, want the cert and client_ca problems", err)
	}
}
