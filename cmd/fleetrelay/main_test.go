package main

import (
	"os"
	"path/filepath"
	"testing"
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
