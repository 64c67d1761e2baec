package relay_test

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// helloRefused sends HELLO h over a new connection, with DATA frames pipelined right behind it
// (an attacker does not wait for WELCOME), and checks the relay answers ERROR 401 and closes.
func helloRefused(t *testing.T, r *relay.Relay, h native.Hello) {
	t.Helper()
	c := rawConn(t, r.DeviceTCPAddr().String())
	b := native.AppendHello(nil, &h)
	for seq := uint64(1); seq <= 3; seq++ {
		b = native.AppendData(b, seq, record(h.Identity(), seq, 0))
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	typ, body := readOne(t, c)
	if typ != native.TypeError {
		t.Fatalf("HELLO %s (token %q): frame type %#x, want ERROR", h.Identity(), h.Token, typ)
	}
	if code, _, err := native.ParseError(body); err != nil || code != native.CodeUnauthorized {
		t.Fatalf("HELLO %s (token %q): ERROR %d (%v), want 401", h.Identity(), h.Token, code, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("HELLO %s: %d bytes after the ERROR, want the connection closed", h.Identity(), n)
	}
}

// udpUnanswered sends datagrams and checks none is answered within a short wait (a refused
// datagram is dropped without an answer).
func udpUnanswered(t *testing.T, r *relay.Relay, datagrams ...[]byte) {
	t.Helper()
	c, err := net.Dial("udp", r.DeviceUDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1024)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("relay answered a refused datagram with % x", buf[:n])
	} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v", err)
	}
}

// devices.auth: token, end to end. Wrong and missing tokens, and unknown identities, are refused
// with ERROR 401 and nothing of them is stored (DATA pipelined behind the HELLO included: the
// right device's WELCOME then says lastSeq 0, and the sink never sees those frames); the right
// token gets WELCOME and delivery, for a device of the API and one of the config's fleet. Over
// UDP, refused datagrams are never answered and never stored. The token is write-only: no GET
// and no log line shows it.
func TestDeviceAuthToken(t *testing.T) {
	const (
		apiToken = "tok-api-7f3a9c21e4b0d5"
		cfgToken = "tok-cfg-0c8e55b1a2d9f6"
		udpToken = "tok-udp-39d1e7a0bb4c52"
	)
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Devices.Auth = config.AuthToken
	cfg.Fleet = []config.Device{{ID: "SN-CFG", Token: config.SecretValue(cfgToken)}, {ID: "SN-NOTOKEN"}}
	r, logs := startLoggedRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	v := api.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-api", map[string]any{"custom1": "c", "token": apiToken})
	if field(v, "has_token") != true || field(v, "token") != nil {
		t.Errorf("PUT with a token = %v, want has_token and no token", v)
	}
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-udp", map[string]any{"token": udpToken})
	for _, tok := range []any{strings.Repeat("x", 256), 5} {
		if st, p := api.breaking().do("PUT", "/api/v1/devices/sn-bad", map[string]any{"token": tok}); st != http.StatusUnprocessableEntity || !slices.Equal(pointers(p), []string{"/token"}) {
			t.Errorf("PUT with token %v = %d %v, want 422 at /token", tok, st, p)
		}
	}

	tcp := r.DeviceTCPAddr().String()
	for _, h := range []native.Hello{
		{Serial: "sn-api", Token: "tok-api-7f3a9c21e4b0d6"}, // one character off
		{Serial: "SN-API"},                        // no token
		{Serial: "sn-api", Token: cfgToken},       // another device's token
		{Serial: "SN-NOBODY", Token: apiToken},    // unknown identity
		{Serial: "SN-NOTOKEN", Token: "anything"}, // known, but has no token to match
	} {
		helloRefused(t, r, h)
	}
	for _, reason := range []string{"bad_token", "no_token", "unknown"} {
		if n := metric(t, r, `fleetrelay_device_auth_refusals_total{reason="`+reason+`"}`); n == 0 {
			t.Errorf("refusals for %s counted %v times", reason, n)
		}
	}

	// The right token: WELCOME says nothing was stored from the refused connections.
	d := connect(t, tcp, native.Hello{Serial: "sn-api", Token: apiToken}, 1)
	if w := d.Welcome(); w.LastSeq != 0 {
		t.Fatalf("WELCOME lastSeq %d after refused connections, want 0: a refused device's DATA was stored", w.LastSeq)
	}
	seqs := send(t, d, "sn-api", 3)
	waitRecords(t, sink, "sn-api", seqs)
	dc := connect(t, tcp, native.Hello{Serial: "SN-CFG", Token: cfgToken}, 1)
	waitRecords(t, sink, "SN-CFG", send(t, dc, "SN-CFG", 2))
	for serial := range sink.Devices() {
		if up := strings.ToUpper(serial); up != "SN-API" && up != "SN-CFG" {
			t.Errorf("sink got messages of %s, which was refused", serial)
		}
	}

	// UDP: wrong and missing tokens are dropped unanswered and not stored; the right one is acknowledged.
	udpUnanswered(t, r,
		native.AppendUData(nil, "sn-udp", "wrong", 1, []byte(`{"a":1}`)),
		native.AppendUData(nil, "sn-udp", "", 2, []byte(`{"a":2}`)),
		native.AppendUData(nil, "SN-NOBODY", udpToken, 1, []byte(`{"a":3}`)))
	if v := api.must(http.StatusOK, "GET", "/api/v1/devices/sn-udp", nil); field(v, "state", "last_seq") != float64(0) {
		t.Errorf("refused datagrams stored: %v", field(v, "state"))
	}
	u := dialUDPDevice(t, r.DeviceUDPAddr().String(), "sn-udp")
	if _, err := u.c.Write(native.AppendUData(nil, "sn-udp", udpToken, 3, record("sn-udp", 3, 0))); err != nil {
		t.Fatal(err)
	}
	u.waitAcks(3)
	waitOnce(t, sink, "sn-udp", 3)
	for _, seq := range []uint64{1, 2} {
		if n := sink.Count(loadgen.MsgKey{Device: "sn-udp", Seq: seq}); n != 0 {
			t.Errorf("refused datagram seq %d delivered %d times", seq, n)
		}
	}

	// A token changed through the API ends the device's connection on its next frame: ERROR 401,
	// that frame not stored. The new token is admitted.
	c := rawConn(t, tcp)
	if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: "sn-udp", Token: udpToken})); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readOne(t, c); typ != native.TypeWelcome {
		t.Fatalf("HELLO with the right token: frame type %#x, want WELCOME", typ)
	}
	const rotated = "tok-udp-rotated-5e2f10"
	api.must(http.StatusOK, "PATCH", "/api/v1/devices/sn-udp", map[string]any{"token": rotated})
	if _, err := c.Write(native.AppendData(nil, 4, record("sn-udp", 4, 0))); err != nil {
		t.Fatal(err)
	}
	if typ, body := readOne(t, c); typ != native.TypeError {
		t.Fatalf("DATA after the token changed: frame type %#x, want ERROR", typ)
	} else if code, _, _ := native.ParseError(body); code != native.CodeUnauthorized {
		t.Fatalf("DATA after the token changed: ERROR %d, want 401", code)
	}
	if w := connect(t, tcp, native.Hello{Serial: "sn-udp", Token: rotated}, 4).Welcome(); w.LastSeq != 3 {
		t.Fatalf("WELCOME lastSeq %d with the new token, want 3: the frame sent after the change was stored", w.LastSeq)
	}

	// Write-only: a GET shows has_token, never the token; a PUT without one keeps it, null removes it.
	v = api.must(http.StatusOK, "PUT", "/api/v1/devices/sn-api", map[string]any{"custom1": "d"})
	if field(v, "has_token") != true {
		t.Errorf("PUT without a token dropped it: %v", v)
	}
	api.must(http.StatusOK, "GET", "/api/v1/devices/sn-api", nil)
	api.must(http.StatusOK, "GET", "/api/v1/devices/sn-cfg", nil)
	api.must(http.StatusOK, "GET", "/api/v1/devices", nil)
	v = api.must(http.StatusOK, "PATCH", "/api/v1/devices/sn-api", map[string]any{"token": nil})
	if field(v, "has_token") != nil {
		t.Errorf("PATCH token null kept it: %v", v)
	}
	helloRefused(t, r, native.Hello{Serial: "sn-api", Token: apiToken}) // it has none now
	for _, secret := range []string{apiToken, cfgToken, udpToken, rotated} {
		if strings.Contains(api.seen.String(), secret) {
			t.Errorf("an API answer shows the token %q", secret)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log shows the token %q", secret)
		}
	}
	if !strings.Contains(logs.String(), "device refused") {
		t.Error("no refusal logged") // the log was captured: the check above looked at something
	}
}

// devices.auth: known admits the identities of the fleet and of the API (applied live: a device
// created after start is admitted, a deleted one no longer), without checking tokens; an unknown
// identity is refused with ERROR 401 over TCP and unanswered over UDP.
func TestDeviceAuthKnown(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Devices.Auth = config.AuthKnown
	cfg.Fleet = []config.Device{{ID: "SN-K"}}
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	tcp := r.DeviceTCPAddr().String()

	helloRefused(t, r, native.Hello{Serial: "SN-X"})
	udpUnanswered(t, r, native.AppendUData(nil, "SN-X", "", 1, []byte(`{"a":1}`)))
	if n := metric(t, r, `fleetrelay_device_auth_refusals_total{reason="unknown"}`); n != 2 {
		t.Errorf("unknown refusals = %v, want 2", n)
	}

	d := connect(t, tcp, native.Hello{Serial: "sn-k"}, 1) // identities are case-insensitive
	waitRecords(t, sink, "sn-k", send(t, d, "sn-k", 2))

	api.must(http.StatusCreated, "PUT", "/api/v1/devices/SN-X", map[string]any{"custom1": "x"})
	dx := connect(t, tcp, native.Hello{Serial: "SN-X", Token: "ignored in mode known"}, 1)
	waitRecords(t, sink, "SN-X", send(t, dx, "SN-X", 1))
	u := dialUDPDevice(t, r.DeviceUDPAddr().String(), "SN-X")
	u.send(2)
	u.waitAcks(2)

	api.must(http.StatusNoContent, "DELETE", "/api/v1/devices/SN-X", nil)
	helloRefused(t, r, native.Hello{Serial: "SN-X"})
}

// Brute force: failed token checks are limited per source address. A run of wrong tokens from
// one address is refused without a check once its budget is spent (counted as "limited"), and
// every attempt is refused either way.
func TestDeviceAuthLimiter(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.Auth = config.AuthToken
	cfg.Fleet = []config.Device{{ID: "SN-L", Token: config.SecretValue("the-right-token")}}
	r := startRelay(t, cfg)

	const attempts = 100 // far more than the budget's burst
	for i := range attempts {
		helloRefused(t, r, native.Hello{Serial: "SN-L", Token: "guess-" + string(rune('a'+i%26)) + string(rune('a'+i/26))})
	}
	bad := metric(t, r, `fleetrelay_device_auth_refusals_total{reason="bad_token"}`)
	limited := metric(t, r, `fleetrelay_device_auth_refusals_total{reason="limited"}`)
	if limited == 0 || bad+limited != attempts {
		t.Fatalf("%d wrong tokens: %v checked and refused, %v refused unchecked; want some unchecked, %d in all",
			attempts, bad, limited, attempts)
	}
}

// A device's token hash is kept in the store: after a restart the API's device is admitted with
// its token and refused without it.
func TestDeviceAuthTokenAfterRestart(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.Auth = config.AuthToken
	r := startRelay(t, cfg)
	newAPI(t, r, bootstrapKey(t, cfg)).must(http.StatusCreated, "PUT", "/api/v1/devices/sn-r", map[string]any{"token": "tok-restart-91c2"})
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	r = startRelay(t, cfg)
	helloRefused(t, r, native.Hello{Serial: "sn-r", Token: "tok-restart-91c3"})
	connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "sn-r", Token: "tok-restart-91c2"}, 1)
	if v := newAPI(t, r, bootstrapKey(t, cfg)).must(http.StatusOK, "GET", "/api/v1/devices/sn-r", nil); field(v, "has_token") != true {
		t.Errorf("after a restart: %v, want has_token", v)
	}
}

// A fleet token read from the environment or a file is read at start: one that cannot be read
// stops the start, naming the device's token.
func TestDeviceAuthFleetTokenUnreadable(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.Auth = config.AuthToken
	cfg.Fleet = []config.Device{{ID: "SN-E", Token: config.SecretEnv("FLEETRELAY_TEST_UNSET_DEVICE_TOKEN")}}
	r, err := relaytest.Open(cfg, relaytest.Logger(t))
	if err == nil {
		_ = relaytest.Shutdown(r)
		t.Fatal("relay started with an unreadable fleet token")
	}
	if !strings.Contains(err.Error(), "fleet[0].token") || !strings.Contains(err.Error(), "FLEETRELAY_TEST_UNSET_DEVICE_TOKEN") {
		t.Fatalf("start error %q, want it to name fleet[0].token and the variable", err)
	}
}
