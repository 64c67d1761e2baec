package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/route"
)

// The dlq subcommand's argument and config errors; listing and replaying themselves are tested
// against a real relay in internal/relay (dlq_test.go).
func TestDLQCommandErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\nadmin:\n  listen: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"dlq"}, 2},
		{[]string{"dlq", "frobnicate", "-route", "x"}, 2},
		{[]string{"dlq", "list"}, 2},
		{[]string{"dlq", "list", "-route", "x", "-config", filepath.Join(dir, "missing.yaml")}, 1},
		// No relay answers on port 1 and the fresh data directory has no queue named x.
		{[]string{"dlq", "list", "-route", "x", "-config", cfg}, 1},
		{[]string{"dlq", "replay", "-route", "x", "-config", cfg}, 1},
	} {
		if got := run(c.args); got != c.want {
			t.Errorf("fleetrelay %v exited %d, want %d", c.args, got, c.want)
		}
	}
}

// -check-config reads the routes' secrets: an unset variable fails the check with its path.
func TestCheckConfigReadsSecrets(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	yaml := "routes:\n  - name: r\n    url: https://example.com/in\n    auth:\n      basic: {username: u, password: {env: FLEETRELAY_TEST_CHECK}}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := run([]string{"-config", cfg, "-check-config"}); got != 1 {
		t.Errorf("-check-config with the secret's variable unset exited %d, want 1", got)
	}
	t.Setenv("FLEETRELAY_TEST_CHECK", "s3cret")
	if got := run([]string{"-config", cfg, "-check-config"}); got != 0 {
		t.Errorf("-check-config with the variable set exited %d, want 0", got)
	}
}

// stderrOf runs fleetrelay with args and returns its exit code and what it wrote to stderr.
func stderrOf(t *testing.T, args ...string) (int, string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stderr
	os.Stderr = f
	code := run(args)
	os.Stderr = old
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(b)
}

// -check-config reports every problem at once, each with its dotted path: the machine limits and
// every unreadable secret of every route, never a secret's value; and warns, exiting 0, when
// max_connections leaves the relay too few files.
func TestCheckConfigReportsEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	t.Setenv("FLEETRELAY_TEST_SET", "set-s3cret")
	yaml := `devices:
  event_loops: 100000
routes:
  - name: a
    url: https://example.com/a
    auth:
      basic: {username: u, password: {env: FLEETRELAY_TEST_UNSET_A}}
    sign:
      hmac: {key: {file: ` + filepath.Join(dir, "missing.key") + `}}
  - name: b
    url: https://example.com/b
    auth:
      basic: {username: u, password: {env: FLEETRELAY_TEST_SET}}
    sign:
      webhooks:
        secrets: [literal-s3cret, {env: FLEETRELAY_TEST_UNSET_B}]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := stderrOf(t, "-config", cfg, "-check-config")
	if code != 1 {
		t.Errorf("-check-config exited %d, want 1", code)
	}
	for _, want := range []string{
		"devices.event_loops: 100000 is more than 4 per CPU",
		"routes[0].auth.basic.password: environment variable FLEETRELAY_TEST_UNSET_A is not set",
		"routes[0].sign.hmac.key: secret file " + filepath.Join(dir, "missing.key"),
		"routes[1].sign.webhooks.secrets[1]: environment variable FLEETRELAY_TEST_UNSET_B is not set",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("-check-config printed:\n%s\nwant it to contain %q", out, want)
		}
	}
	for _, secret := range []string{"set-s3cret", "literal-s3cret"} {
		if strings.Contains(out, secret) {
			t.Errorf("-check-config printed a secret's value:\n%s", out)
		}
	}

	m := relay.ThisMachine()
	if m.OpenFiles == 0 {
		return
	}
	yaml = fmt.Sprintf("devices:\n  max_connections: %d\n", m.OpenFiles-1)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = stderrOf(t, "-config", cfg, "-check-config")
	want := fmt.Sprintf("warning: devices.max_connections: %d leaves 1 of the open-file limit %d", m.OpenFiles-1, m.OpenFiles)
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("-check-config exited %d and printed:\n%s\nwant 0 and %q", code, out, want)
	}
}

// -check-config compiles every route with route.Compile, the function the relay starts them
// with: a config the file check accepts, whose routes the auth schemes refuse, prints exactly
// the problems Compile returns for each route, every one at once.
func TestCheckConfigCompilesRoutes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	yaml := `routes:
  - name: ok
    url: https://example.com/ok
  - name: a
    url: https://example.com/a
    method: PUT
    auth:
      aws_sigv4: {region: eu west, access_key_id: AKIAEXAMPLE, secret_access_key: s3cret-value}
    sign:
      webhooks:
        secrets: [not-a-whsec-secret]
  - name: b
    url: https://example.com/b
    auth:
      oauth2: {token_url: 'http://login.example.com/token', client_id: i, client_secret: s}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := relay.LoadConfig(path)
	if err != nil {
		t.Fatalf("the file check refused the config: %v", err)
	}
	var want []string
	for i, rc := range cfg.Routes {
		_, err := route.Compile(rc, fmt.Sprintf("routes[%d]", i), route.Deps{Delivery: cfg.Delivery})
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			want = append(want, ve.Problems...)
		}
	}
	if len(want) != 3 || !strings.HasPrefix(want[0], "routes[1].auth.aws_sigv4.region:") ||
		!strings.HasPrefix(want[1], "routes[1].sign.webhooks.secrets[0]:") || !strings.HasPrefix(want[2], "routes[2].auth.oauth2.token_url: must be an https URL") {
		t.Fatalf("Compile problems %q, want the region, the webhook secret and the token URL", want)
	}
	code, out := stderrOf(t, "-config", path, "-check-config")
	if code != 1 {
		t.Errorf("-check-config exited %d, want 1", code)
	}
	var got []string
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "routes[") {
			got = append(got, l)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("-check-config printed:\n%s\nwant the problems of route.Compile:\n  %s", out, strings.Join(want, "\n  "))
	}
	if strings.Contains(out, "s3cret-value") {
		t.Errorf("-check-config printed a secret's value:\n%s", out)
	}
}
