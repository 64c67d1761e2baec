package config_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

func parseRoute(t *testing.T, extra string) (*config.Route, error) {
	t.Helper()
	c, err := config.Parse([]byte("routes:\n  - name: r\n    url: https://example.com/in\n" + extra))
	if err != nil {
		return nil, err
	}
	return &c.Routes[0], nil
}

// The problems the file shows; the values the schemes check (internal/auth) are reported when
// internal/route compiles the route (see its TestCompileAuthValues).
func TestAuthValidation(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want []string // problems; none: valid
	}{
		{"    auth:\n      basic: {username: u, password: p}\n", nil},
		{"    auth:\n      basic: {username: u}\n", []string{"routes[0].auth.basic.password: required"}},
		{"    auth:\n      basic: {username: u, password: p}\n      oauth2: {token_url: 'https://a/t', client_id: i, client_secret: s}\n",
			[]string{"routes[0].auth: set at most one of"}},
		{"    auth:\n      oauth2: {token_url: 'ftp://a/t', client_id: i, client_secret: s, auth_style: cookie}\n",
			[]string{"routes[0].auth.oauth2.token_url: must be an http:// or https:// URL", "routes[0].auth.oauth2.auth_style: must be header or body"}},
		{"    auth:\n      aws_sigv4: {region: r, access_key_id: k, secret_access_key: s, s3: true}\n",
			[]string{"routes[0].method: must be PUT with auth.aws_sigv4.s3"}},
		{"    method: PUT\n    auth:\n      aws_sigv4: {region: r, access_key_id: k, secret_access_key: s, s3: true}\n", nil},
		{"    method: PUT\n    auth:\n      azure_blob: {account: a}\n", []string{"routes[0].auth.azure_blob: set sas, or account and account_key"}},
		{"    sign:\n      hmac: {key: k, algorithm: md5, encoding: base32, header: 'bad header'}\n",
			[]string{"sign.hmac.algorithm: must be sha512 or sha256", "sign.hmac.encoding: must be hex or base64", "sign.hmac.header: must be an HTTP header name"}},
		{"    sign:\n      sensoro: {app_secret: s, safe_mode: true}\n", []string{"routes[0].app_id: required", "routes[0].sign.sensoro.app_key: required"}},
		{"    app_id: a\n    compression: gzip\n    sign:\n      sensoro: {app_secret: s, safe_mode: true, app_key: k}\n", []string{"routes[0].compression: must be none with sign.sensoro"}},
		{"    app_id: a\n    compression: zstd\n    sign:\n      sensoro: {app_secret: s}\n", []string{"routes[0].compression: must be none with sign.sensoro"}},
		{"    sign:\n      webhooks: {secrets: []}\n", []string{"routes[0].sign.webhooks.secrets: required"}},
		{"    auth:\n      azure_iot_hub: {host: h.azure-devices.net, key_field: custom1}\n",
			[]string{"routes[0].url: must name the device with auth.azure_iot_hub"}},
		{"    method: PUT\n    auth:\n      azure_iot_hub: {host: h.azure-devices.net, key_field: custom1}\n      basic: {username: u, password: p}\n",
			[]string{"routes[0].auth: set at most one of", "routes[0].method: must be POST with auth.azure_iot_hub", "routes[0].url: must name the device"}},
		{"    tls: {cert_file: c.pem}\n", []string{"routes[0].tls: set cert_file and key_file together"}},
		{"    tls: {min_version: '1.1'}\n", []string{"routes[0].tls.min_version: must be 1.2 or 1.3"}},
		{"    auth:\n      basic: {username: u, password: {vault: x}}\n", []string{`unknown source "vault"`}},
		{"    auth:\n      basic: {username: u, password: [a]}\n", []string{"invalid secret"}},
	} {
		_, err := parseRoute(t, c.yaml)
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("%q: %v, want valid", c.yaml, err)
			}
			continue
		}
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%q: %v, want problems %q", c.yaml, err, c.want)
			continue
		}
		for _, w := range c.want {
			if !slices.ContainsFunc(ve.Problems, func(p string) bool { return strings.Contains(p, w) }) {
				t.Errorf("%q: problems %q, want one with %q", c.yaml, ve.Problems, w)
			}
		}
		if len(ve.Problems) != len(c.want) {
			t.Errorf("%q: problems %q, want only %q", c.yaml, ve.Problems, c.want)
		}
	}
}

func TestAuthDefaults(t *testing.T) {
	r, err := parseRoute(t, "    method: PUT\n    auth:\n      aws_sigv4: {region: r, access_key_id: k, secret_access_key: s, s3: true}\n    sign:\n      hmac: {key: k}\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintln(r.Auth.AWSSigV4.Service, r.Sign.HMAC.Header, r.Sign.HMAC.Algorithm, r.Sign.HMAC.Encoding, r.TLS.MinVersion); got != "s3 hash-key sha512 hex 1.2\n" {
		t.Errorf("defaults = %s", got)
	}
}

// Secrets come from the config, the environment or a file; they are read when revealed and never
// printed.
func TestSecrets(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLEETRELAY_TEST_SECRET", "from-env")
	r, err := parseRoute(t, "    sign:\n      webhooks:\n        secrets: [literal-value, {env: FLEETRELAY_TEST_SECRET}, {file: "+file+"}]\n")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range r.Sign.Webhooks.Secrets {
		v, err := s.Reveal()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
		if strings.Contains(s.String(), v) || strings.Contains(s.LogValue().String(), v) {
			t.Errorf("%q prints its value", s.String())
		}
	}
	if want := []string{"literal-value", "from-env", "from-file"}; !slices.Equal(got, want) {
		t.Fatalf("revealed %q, want %q", got, want)
	}
	out, err := yaml.Marshal(r.Sign.Webhooks)
	if err != nil || strings.Contains(string(out), "literal-value") || !strings.Contains(string(out), "FLEETRELAY_TEST_SECRET") {
		t.Errorf("marshalled as %s (%v): want the literal redacted and the sources kept", out, err)
	}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", r.Sign.Webhooks.Secrets[0])
	if strings.Contains(buf.String(), "literal-value") {
		t.Errorf("logged %s", buf.String())
	}
	for _, s := range []config.Secret{config.SecretEnv("FLEETRELAY_TEST_UNSET"), config.SecretFile(file + ".missing")} {
		if _, err := s.Reveal(); err == nil {
			t.Errorf("%s revealed without error", s)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	if _, err := config.SecretFile(empty).Reveal(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	if got := len(r.Secrets("routes[0]")); got != 3 {
		t.Errorf("Secrets() = %d entries, want 3", got)
	}
}

// With azure_iot_hub the URL must name the device (one dynamic field alone after /devices/),
// be https, and the method POST; the TTL defaults to 1h.
func TestAzureIoTHubURL(t *testing.T) {
	f := func(u string, want ...string) {
		t.Helper()
		c, err := config.Parse([]byte("routes:\n  - name: r\n    url: '" + u + "'\n    auth:\n      azure_iot_hub: {host: h.azure-devices.net, key_field: custom2}\n"))
		if len(want) == 0 {
			if err != nil {
				t.Errorf("url %q: %v, want valid", u, err)
			} else if ttl := c.Routes[0].Auth.AzureIoTHub.TTL; ttl != config.Duration(time.Hour) {
				t.Errorf("url %q: ttl %v, want 1h", u, ttl)
			}
			return
		}
		var ve *config.ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) != len(want) {
			t.Fatalf("url %q: %v, want problems %q", u, err, want)
		}
		for i, w := range want {
			if !strings.Contains(ve.Problems[i], w) {
				t.Errorf("url %q: problem %q, want %q", u, ve.Problems[i], w)
			}
		}
	}
	f("https://h.azure-devices.net/devices/[SERIAL]/messages/events?api-version=2021-04-12")
	f("https://hub.example.com:8443/devices/[IMEI]/messages/events")
	f("https://h/x/devices/[CUSTOM3]")
	f("https://h/devices/SN-1/messages/events", "routes[0].url: must name the device")
	f("https://h/devices/dev-[SERIAL]/messages/events", "routes[0].url: must name the device")
	f("https://h/messages/events?d=[SERIAL]", "routes[0].url: must name the device")
	f("https://devices/[SERIAL]", "routes[0].url: must name the device")
	f("http://h/devices/[SERIAL]/messages/events", "routes[0].url: must be https://")
}
