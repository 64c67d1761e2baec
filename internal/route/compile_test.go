package route_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/route"
)

// problemsOf compiles route i of cfg for checking only and returns its problems (nil if none).
func problemsOf(t *testing.T, cfg *config.Config, i int) []string {
	t.Helper()
	_, err := route.Compile(cfg.Routes[i], "routes[0]", route.Deps{Delivery: cfg.Delivery})
	if err == nil {
		return nil
	}
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T %v, want a *config.ValidationError", err, err)
	}
	return ve.Problems
}

// The values the auth schemes check are reported by Compile (once, with their paths), not by
// the config's validation.
func TestCompileAuthValues(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want []string
	}{
		{"    auth:\n      basic: {username: 'u:x', password: p}\n", []string{"routes[0].auth.basic.username: must not contain ':'"}},
		{"    method: PUT\n    auth:\n      azure_blob: {sas: x, account: a, account_key: k}\n", []string{"routes[0].auth.azure_blob: set sas, or account and account_key, not both"}},
		{"    auth:\n      azure_event_hubs: {key_name: n, key: k, ttl: 10s}\n", []string{"routes[0].auth.azure_event_hubs.ttl: must be at least 1m"}},
		{"    auth:\n      aws_sigv4: {access_key_id: k}\n", []string{"routes[0].auth.aws_sigv4.region: required", "routes[0].auth.aws_sigv4.secret_access_key: required"}},
		{"    auth:\n      oauth2: {token_url: 'http://login.example.com/t', client_id: i, client_secret: s}\n",
			[]string{"routes[0].auth.oauth2.token_url: must be an https URL"}},
		{"    auth:\n      basic: {username: u, password: p}\n", nil},
	} {
		cfg, err := config.Parse([]byte("routes:\n  - name: r\n    url: https://example.com/in\n" + c.yaml))
		if err != nil {
			t.Fatalf("%q: %v; want the config valid, the route refused by Compile", c.yaml, err)
		}
		if got := problemsOf(t, cfg, 0); !matches(got, c.want) {
			t.Errorf("%q: Compile problems %q, want %q", c.yaml, got, c.want)
		}
	}
}

// The values the IoT Hub scheme refuses, once the file's checks pass (the URL names the device).
func TestCompileAzureIoTHubValues(t *testing.T) {
	f := func(section string, want ...string) {
		t.Helper()
		cfg, err := config.Parse([]byte("routes:\n  - name: r\n    url: https://myhub.azure-devices.net/devices/[SERIAL]/messages/events\n" +
			"    auth:\n      azure_iot_hub: " + section + "\n"))
		if err != nil {
			t.Fatalf("%q: %v; want the config valid, the route refused by Compile", section, err)
		}
		if got := problemsOf(t, cfg, 0); !matches(got, want) {
			t.Errorf("%q: Compile problems %q, want %q", section, got, want)
		}
	}
	f("{host: myhub.azure-devices.net, key_field: custom1}")
	f("{host: 'https://myhub.azure-devices.net', key_field: serial, ttl: 10ms}",
		"routes[0].auth.azure_iot_hub.host: must be the hub's host name",
		"routes[0].auth.azure_iot_hub.key_field: must be custom1, custom2 or custom3",
		"routes[0].auth.azure_iot_hub.ttl: must be at least 1s")
	f("{}", "routes[0].auth.azure_iot_hub.host: required", "routes[0].auth.azure_iot_hub.key_field: required")
}

// A section the file check faults is reported by it alone, not again by the scheme's or the TLS
// settings' constructor, which check the same fields their own way.
func TestCompileReportsOnce(t *testing.T) {
	cfg := config.Default()
	r := config.DefaultRoute()
	r.Name, r.URL = "r", "https://example.com/in"
	r.Auth.OAuth2 = &config.OAuth2{TokenURL: "ftp://a/t", ClientID: "i", ClientSecret: config.SecretValue("s"), AuthStyle: "cookie"}
	r.TLS.MinVersion = "1.1"
	cfg.Routes = []config.Route{r}
	want := []string{
		"routes[0].auth.oauth2.token_url: must be an http:// or https:// URL",
		"routes[0].auth.oauth2.auth_style: must be header or body",
		"routes[0].tls.min_version: must be 1.2 or 1.3",
	}
	if got := problemsOf(t, cfg, 0); !matches(got, want) {
		t.Errorf("problems %q, want %q", got, want)
	}
	// The same problems as the config's validation (the one check of what the file shows).
	var ve *config.ValidationError
	if err := cfg.Validate(); !errors.As(err, &ve) || !matches(ve.Problems, want) {
		t.Errorf("Validate = %v, want %q", err, want)
	}
}

// matches reports whether got has one problem starting with each of want, in order, and no other.
func matches(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

// One bad route reports all its problems at once, each once: what the file shows, its TLS files,
// its unreadable secrets, and (with the secrets read) the values its schemes refuse.
func TestCompileReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FLEETRELAY_ROUTE_UNSET", "")
	if err := os.Unsetenv("FLEETRELAY_ROUTE_UNSET"); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	r := config.DefaultRoute()
	r.Name, r.URL = "r", "https://10.0.0.1/[SERIAL]"
	r.Headers = map[string]string{"X-Id": "[NOPE]"}
	r.Batch.MaxBytes = 0
	r.Concurrency = 0
	r.TLS.CAFile = filepath.Join(dir, "missing-ca.pem")
	r.Auth.AWSSigV4 = &config.AWSSigV4{Region: "eu west", AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: config.SecretValue("s3cret-value")}
	r.Sign.HMAC = &config.HMACSign{Key: config.SecretEnv("FLEETRELAY_ROUTE_UNSET"), Algorithm: "md5", Encoding: "hex", Header: "hash-key"}
	cfg.Routes = []config.Route{r}
	cfg.Resolve()
	_, err := route.Compile(cfg.Routes[0], "routes[2]", route.Deps{Delivery: cfg.Delivery})
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Compile = %v, want a *config.ValidationError", err)
	}
	want := []string{
		"routes[2].url: host 10.0.0.1 is a private address",
		"routes[2].headers.X-Id: unknown dynamic field [NOPE]",
		"routes[2].batch.max_bytes: must be > 0",
		"routes[2].concurrency: must be between 1 and 1024",
		"routes[2].sign.hmac.algorithm: must be sha512 or sha256",
		"routes[2].tls.ca_file: open " + r.TLS.CAFile,
		"routes[2].sign.hmac.key: environment variable FLEETRELAY_ROUTE_UNSET is not set",
	}
	if !matches(ve.Problems, want) {
		t.Fatalf("problems:\n  %s\nwant:\n  %s", strings.Join(ve.Problems, "\n  "), strings.Join(want, "\n  "))
	}
	// With every secret readable, the scheme's own checks are reported beside the rest.
	t.Setenv("FLEETRELAY_ROUTE_UNSET", "k")
	_, err = route.Compile(cfg.Routes[0], "routes[2]", route.Deps{Delivery: cfg.Delivery})
	if !errors.As(err, &ve) {
		t.Fatalf("Compile = %v, want a *config.ValidationError", err)
	}
	want = append(want[:len(want)-1], `routes[2].auth.aws_sigv4.region: "eu west" is not a region name`)
	if !matches(ve.Problems, want) {
		t.Fatalf("problems:\n  %s\nwant:\n  %s", strings.Join(ve.Problems, "\n  "), strings.Join(want, "\n  "))
	}
	if strings.Contains(err.Error(), "s3cret-value") {
		t.Fatalf("the problems show a secret's value:\n%v", err)
	}
}

// A good route compiles into what the actors run: its delivery pipeline, headers in name order,
// one message per request for an object body; checking alone builds no pipeline.
func TestCompileBuildsRoute(t *testing.T) {
	cfg := config.Default()
	cfg.Delivery.AllowPrivateNetworks = true
	r := config.DefaultRoute()
	r.Name, r.URL, r.Body = "r", "http://127.0.0.1:1/in/[SERIAL]", config.BodyObject
	r.Headers = map[string]string{"X-B": "b", "X-A": "[IMEI]"}
	r.TLS.InsecureSkipVerify = true
	cfg.Routes = []config.Route{r}
	cfg.Resolve()
	clients := route.NewClients(deliver.Options{AllowPrivateNetworks: true})
	defer clients.Close()
	c, err := route.Compile(cfg.Routes[0], "routes[0]", route.Deps{Delivery: cfg.Delivery, Clients: clients})
	if err != nil {
		t.Fatal(err)
	}
	rt := c.Route
	var names []string
	for _, h := range rt.Headers {
		names = append(names, h.Name)
	}
	if rt.Name != "r" || rt.Deliver == nil || rt.MaxMessages != 1 || !slices.Equal(names, []string{"X-A", "X-B"}) || rt.URL.Static() {
		t.Errorf("compiled %+v (headers %q), want its pipeline, 1 message per request, headers X-A X-B, a per-device URL", rt, names)
	}
	if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "routes[0].tls: ") {
		t.Errorf("warnings %q, want the unverified certificates", c.Warnings)
	}
	c, err = route.Compile(cfg.Routes[0], "routes[0]", route.Deps{Delivery: cfg.Delivery})
	if err != nil || c.Route.Deliver != nil {
		t.Errorf("check only: %v, pipeline %v; want no error and no pipeline", err, c.Route.Deliver)
	}
}

// The account and the enabled flag reach the route actor: a disabled route runs paused.
func TestCompileAccountAndEnabled(t *testing.T) {
	f := func(yaml, account string, paused bool) {
		t.Helper()
		cfg, err := config.Parse([]byte("routes:\n  - name: r\n    url: https://example.com/in\n" + yaml))
		if err != nil {
			t.Fatal(err)
		}
		c, err := route.Compile(cfg.Routes[0], "routes[0]", route.Deps{Delivery: cfg.Delivery})
		if err != nil {
			t.Fatal(err)
		}
		if c.Route.Account != account || c.Route.Paused != paused {
			t.Errorf("%q: Account %q, Paused %v; want %q, %v", yaml, c.Route.Account, c.Route.Paused, account, paused)
		}
	}
	f("", "", false)
	f("    account: acme\n", "acme", false)
	f("    enabled: false\n", "", true)
	f("    enabled: true\n    account: b\n", "b", false)
}
