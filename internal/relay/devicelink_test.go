package relay_test

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
)

// The device GET shows where each device was last seen and over what: a native TCP
// connection's peer, a UDP source, an NDJSON connection's peer — real sockets on loopback.
func TestDeviceLastKnownAddress(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.NDJSON.TCP = "127.0.0.1:0"
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	for _, id := range []string{"via-tcp", "via-udp", "via-ndjson"} {
		boot.must(http.StatusCreated, "PUT", "/api/v1/devices/"+id, map[string]any{})
	}

	d := rawConn(t, r.DeviceTCPAddr().String())
	if _, err := d.Write(native.AppendHello(nil, &native.Hello{Serial: "via-tcp"})); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readOne(t, d); typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: type %d, want WELCOME", typ)
	}
	if _, err := d.Write(native.AppendData(nil, 1, []byte(`{"t":1}`))); err != nil {
		t.Fatal(err)
	}

	u, err := net.Dial("udp", r.DeviceUDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(native.AppendUData(nil, "via-udp", "", 1, []byte(`{"u":1}`))); err != nil {
		t.Fatal(err)
	}

	n, err := net.Dial("tcp", r.DeviceNDJSONAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.Write([]byte(`{"serial":"via-ndjson","t":1}` + "\n")); err != nil {
		t.Fatal(err)
	}

	want := map[string][2]string{
		"via-tcp":    {d.LocalAddr().String(), "tcp"},
		"via-udp":    {u.LocalAddr().String(), "udp"},
		"via-ndjson": {n.LocalAddr().String(), "ndjson"},
	}
	for id, w := range want {
		checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
			v := boot.must(http.StatusOK, "GET", "/api/v1/devices/"+id, nil)
			if field(v, "state", "remote") != w[0] || field(v, "state", "transport") != w[1] || field(v, "state", "last_seen") == nil {
				return fmt.Errorf("GET %s state = %v, want remote %s over %s", id, field(v, "state"), w[0], w[1])
			}
			return nil
		})
	}
}

// Device links without devicelink.listen: the rights and account checks come first (401, 404,
// 403), then the body's (422, with every field's pointer), then 503 saying links are off.
func TestDeviceLinkDisabled(t *testing.T) {
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	key := func(body map[string]any) string {
		t.Helper()
		return boot.must(http.StatusCreated, "POST", "/api/v1/keys", body)["key"].(string)
	}
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "other", "name": "Other"})
	held := key(map[string]any{"name": "acme dealer", "account": "acme", "preset": "dealer"})
	other := key(map[string]any{"name": "other dealer", "account": "other", "preset": "dealer"})
	none := key(map[string]any{"name": "acme devices", "account": "acme", "rights": []string{"devices:*"}})
	boot.as(held).must(http.StatusCreated, "PUT", "/api/v1/devices/d-acme", map[string]any{})

	body := map[string]any{"protocol": "tcp", "devicePort": 7000}
	for _, c := range []struct {
		method, path string
		body         any
		// statuses for no key, another account's key, a key without the right, the held key
		noKey, otherAccount, missing, ok int
	}{
		{"POST", "/api/v1/devicelink/d-acme", body, 401, 404, 403, 503},
		{"POST", "/api/v1/devicelink/D-ACME", body, 401, 404, 403, 503},
		{"GET", "/api/v1/devicelink", nil, 401, 503, 403, 503},
		{"DELETE", "/api/v1/devicelink/sometoken", nil, 401, 503, 403, 503},
	} {
		for _, k := range []struct {
			who  string
			key  string
			want int
		}{{"no key", "", c.noKey}, {"another account's key", other, c.otherAccount}, {"a key without the right", none, c.missing}, {"the account's key", held, c.ok}} {
			if st, v := boot.as(k.key).do(c.method, c.path, c.body); st != k.want {
				t.Errorf("%s %s with %s = %d %v, want %d", c.method, c.path, k.who, st, v, k.want)
			} else if st == http.StatusServiceUnavailable && !strings.Contains(fmt.Sprint(v["detail"]), "devicelink.listen") {
				t.Errorf("%s %s = %v, want a detail naming devicelink.listen", c.method, c.path, v)
			}
		}
	}
	acme := boot.as(held)
	acme.must(http.StatusNotFound, "POST", "/api/v1/devicelink/no-such-device", body)

	// Every problem of a body at once, each at its pointer; the key is never echoed.
	for _, c := range []struct {
		body any
		want []string
	}{
		{map[string]any{}, []string{"/devicePort", "/protocol"}},
		{map[string]any{"protocol": "sctp", "devicePort": 70000, "timeout": -1}, []string{"/devicePort", "/protocol", "/timeout"}},
		{map[string]any{"protocol": "udp", "devicePort": 0}, []string{"/devicePort"}},
		{map[string]any{"protocol": "tcp", "devicePort": 1, "source": map[string]any{"host": "client.example.com", "port": 0}}, []string{"/source/host", "/source/port"}},
		{map[string]any{"protocol": "tcp", "devicePort": 1, "encrypt": map[string]any{"key": strings.Repeat("ab", 16), "initializationVector": "xyz"}},
			[]string{"/encrypt/initializationVector", "/encrypt/key"}},
	} {
		st, v := acme.breaking().do("POST", "/api/v1/devicelink/d-acme", c.body)
		if got := pointers(v); st != http.StatusUnprocessableEntity || !slices.Equal(got, c.want) {
			t.Errorf("POST %v = %d %v, want 422 at %q", c.body, st, v, c.want)
		}
	}
	// UDP, a pinned source and a valid encrypt: only the links being off is left.
	st, v := acme.do("POST", "/api/v1/devicelink/d-acme", map[string]any{"protocol": "udp", "devicePort": 7000, "timeout": 5000,
		"source": map[string]any{"host": "::1", "port": 9000}, "encrypt": map[string]any{"key": strings.Repeat("0f", 32), "initializationVector": strings.Repeat("a0", 16)}})
	if st != http.StatusServiceUnavailable {
		t.Errorf("POST valid body = %d %v, want 503", st, v)
	}
	if strings.Contains(acme.seen.String(), strings.Repeat("0f", 32)) {
		t.Errorf("an answer repeats the encrypt key: %s", acme.seen)
	}
}
