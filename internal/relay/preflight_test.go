package relay_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// secretsConfig is a relay config whose routes hold every kind of unreadable secret and TLS file
// next to readable ones, and the problems relay.Preflight must report for it, in order. The
// values that must never be shown are returned too. It sets environment variables (the caller
// must not be parallel).
func secretsConfig(t *testing.T) (cfg *config.Config, want, values []string) {
	dir := t.TempDir()
	missing := func(name string) string { return filepath.Join(dir, name) }
	const literal, fromEnv, fromFile = "literal-s3cret-value", "env-s3cret-value", "file-s3cret-value"
	t.Setenv("FLEETRELAY_PF_SET", fromEnv)
	t.Setenv("FLEETRELAY_PF_EMPTY", "")
	for _, name := range []string{"FLEETRELAY_PF_UNSET1", "FLEETRELAY_PF_UNSET2"} {
		t.Setenv(name, "")
		if err := os.Unsetenv(name); err != nil { // restored by Setenv's cleanup
			t.Fatal(err)
		}
	}
	okFile := filepath.Join(dir, "ok.key")
	if err := os.WriteFile(okFile, []byte(fromFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	cfg = testConfig(t, nil)
	route := func(name string) config.Route {
		r := config.DefaultRoute()
		r.Name, r.URL = name, "https://example.com/"+name
		return r
	}
	// routes[0]: three unreadable secrets of four, and a missing CA file.
	a := route("a")
	a.Auth.Basic = &config.BasicAuth{Username: "u", Password: config.SecretEnv("FLEETRELAY_PF_UNSET1")}
	a.Sign.HMAC = &config.HMACSign{Key: config.SecretFile(missing("hmac.key")), Algorithm: "sha256", Encoding: "hex", Header: "hash-key"}
	a.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue(literal), config.SecretEnv("FLEETRELAY_PF_EMPTY")}}
	a.TLS.CAFile = missing("ca.pem")
	// routes[1]: every secret readable.
	b := route("b")
	b.Auth.Basic = &config.BasicAuth{Username: "u", Password: config.SecretEnv("FLEETRELAY_PF_SET")}
	b.Sign.HMAC = &config.HMACSign{Key: config.SecretFile(okFile), Algorithm: "sha256", Encoding: "hex", Header: "hash-key"}
	// routes[2]: two unreadable secrets, a missing client certificate.
	c := route("c")
	c.Method = "PUT"
	c.Auth.AWSSigV4 = &config.AWSSigV4{Region: "eu-west-1", Service: "s3", AccessKeyID: "AKIAEXAMPLE",
		SecretAccessKey: config.SecretFile(empty), SessionToken: config.SecretEnv("FLEETRELAY_PF_UNSET2"), S3: true}
	c.TLS.CertFile, c.TLS.KeyFile = missing("client.pem"), missing("client.key")
	// routes[3]: readable secrets that the schemes refuse, each reported.
	d := route("d")
	d.Auth.AWSSigV4 = &config.AWSSigV4{Region: "eu west", AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: config.SecretValue(literal)}
	d.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretEnv("FLEETRELAY_PF_SET")}}
	// routes[4]: disabled, so its unreadable secret is not needed.
	e := route("e")
	e.Enabled = new(bool)
	e.Auth.Basic = &config.BasicAuth{Username: "u", Password: config.SecretEnv("FLEETRELAY_PF_UNSET1")}
	cfg.Routes = append(cfg.Routes, a, b, c, d, e)
	cfg.Resolve()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	want = []string{
		"routes[0].tls.ca_file: open " + missing("ca.pem"),
		"routes[0].auth.basic.password: environment variable FLEETRELAY_PF_UNSET1 is not set",
		"routes[0].sign.hmac.key: secret file " + missing("hmac.key") + ": no such file or directory",
		"routes[0].sign.webhooks.secrets[1]: environment variable FLEETRELAY_PF_EMPTY is not set",
		"routes[2].tls.cert_file " + missing("client.pem"),
		"routes[2].auth.aws_sigv4.secret_access_key: secret file " + empty + " is empty",
		"routes[2].auth.aws_sigv4.session_token: environment variable FLEETRELAY_PF_UNSET2 is not set",
		`routes[3].auth.aws_sigv4.region: "eu west" is not a region name`,
		"routes[3].sign.webhooks.secrets[0]: ",
	}
	return cfg, want, []string{literal, fromEnv, fromFile}
}

// checkProblems checks that err is a *config.ValidationError whose problems start with want, in
// order, and shows none of values.
func checkProblems(t *testing.T, err error, want, values []string) {
	t.Helper()
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %T %v, want a *config.ValidationError", err, err)
	}
	if len(ve.Problems) != len(want) {
		t.Fatalf("%d problems:\n  %s\nwant %d:\n  %s", len(ve.Problems), strings.Join(ve.Problems, "\n  "), len(want), strings.Join(want, "\n  "))
	}
	for i, p := range ve.Problems {
		if !strings.HasPrefix(p, want[i]) {
			t.Errorf("problem %d = %q, want it to start with %q", i, p, want[i])
		}
	}
	for _, v := range values {
		if strings.Contains(err.Error(), v) {
			t.Fatalf("the problems show a secret's value %q:\n%v", v, err)
		}
	}
}

// Every unreadable secret and TLS file of every enabled route is reported at once, each with its
// dotted path, and no secret's value is shown; relay.New refuses the config with the same list
// before opening the store. (Not parallel: it sets environment variables.)
func TestPreflightReportsEverySecretProblem(t *testing.T) {
	cfg, want, values := secretsConfig(t)
	warnings, err := relay.Preflight(cfg)
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	checkProblems(t, err, want, values)

	r, err := relay.New(cfg, testLogger(t))
	if err == nil {
		_ = r.Shutdown(context.Background())
		t.Fatal("relay.New accepted unreadable secrets")
	}
	checkProblems(t, err, want, values)
	if entries, _ := os.ReadDir(cfg.DataDir); len(entries) != 0 {
		t.Errorf("relay.New refused the config but wrote to the data directory first")
	}
}

// Event loops beyond 4 per CPU, and max_connections the open-file limit can never allow, are
// refused at start with the key and both numbers (event_loops: 100000 used to hang the start);
// max_connections that leaves the relay too few files of its own starts with a warning naming
// both numbers.
func TestPreflightMachineLimits(t *testing.T) {
	m := relay.ThisMachine()
	if m.OpenFiles == 0 {
		t.Skip("no open-file limit")
	}
	cfg := testConfig(t, nil)
	cfg.Devices.EventLoops = 100000
	cfg.Devices.MaxConnections = int(m.OpenFiles)
	r, err := relay.New(cfg, testLogger(t))
	if err == nil {
		_ = r.Shutdown(context.Background())
		t.Fatal("relay.New accepted 100000 event loops")
	}
	maxLoops := config.MaxEventLoopsPerCPU * m.CPUs
	checkProblems(t, err, []string{
		fmt.Sprintf("devices.event_loops: 100000 is more than 4 per CPU: at most %d on this machine's %d CPUs", maxLoops, m.CPUs),
		fmt.Sprintf("devices.max_connections: %d can never be reached: the process's open-file limit (RLIMIT_NOFILE) is %d", m.OpenFiles, m.OpenFiles),
	}, nil)

	cfg = testConfig(t, nil)
	cfg.Devices.MaxConnections = int(m.OpenFiles) - 10
	r, logs := startLoggedRelay(t, cfg)
	want := fmt.Sprintf("devices.max_connections: %d leaves 10 of the open-file limit %d (RLIMIT_NOFILE) for the relay's own files, which need about %d",
		m.OpenFiles-10, m.OpenFiles, cfg.OwnFiles(m))
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, want) {
		t.Fatalf("relay log:\n%s\nwant a warning containing %q", l, want)
	}
	if r.DeviceTCPAddr() == nil {
		t.Fatal("the relay did not start")
	}
}

// The problems come in the order of the file, the same every time (a route's secrets are held in a
// map). (Not parallel: it sets environment variables.)
func TestPreflightOrderIsStable(t *testing.T) {
	cfg, want, values := secretsConfig(t)
	var first []string
	for range 5 {
		_, err := relay.Preflight(cfg)
		checkProblems(t, err, want, values)
		var ve *config.ValidationError
		errors.As(err, &ve)
		if first == nil {
			first = ve.Problems
		} else if !slices.Equal(first, ve.Problems) {
			t.Fatalf("problems changed order:\n%q\n%q", first, ve.Problems)
		}
	}
	if testing.Verbose() {
		t.Logf("problems:\n  %s", strings.Join(first, "\n  "))
	}
}
