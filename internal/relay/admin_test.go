package relay_test

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// adminGet sends GET path to the relay's admin server with key (none if "") and host (the
// server's address if "").
func adminGet(t *testing.T, addr, path, key, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The relay's admin server: the first start makes the bootstrap key in <data_dir>/admin.key
// (mode 0600) and logs the file's path, never the key; a restart reuses it; pprof needs it (a
// super key); the dead letters need a key; a foreign Host is refused; /metrics is open on
// loopback. With admin.bootstrap_key, that key is the super key and no file is made.
func TestAdminBootstrapAndSecurity(t *testing.T) {
	cfg := testConfig(t, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL = "test", "http://127.0.0.1:9/in"
	cfg.Routes = append(cfg.Routes, rt)
	logs := &relaytest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	r := relaytest.StartLogged(t, cfg, log)

	path := filepath.Join(cfg.DataDir, "admin.key")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	if !strings.Contains(logs.String(), path) {
		t.Errorf("the log does not name %s:\n%s", path, logs)
	}

	addr := r.AdminAddr().String()
	f := func(path, key, host string, want int) {
		t.Helper()
		if got, body := adminGet(t, addr, path, key, host); got != want {
			t.Errorf("GET %s (key %v, host %q) = %d %s, want %d", path, key != "", host, got, body, want)
		}
	}
	f("/healthz", "", "", 200)
	f("/metrics", "", "", 200)
	f("/debug/pprof/", "", "", 401)
	f("/debug/pprof/", "fr_wrong", "", 401)
	f("/debug/pprof/", key, "", 200)
	f("/debug/pprof/goroutine?debug=1", key, "", 200)
	f("/api/v1/routes/test/dead-letters", "", "", 401)
	f("/api/v1/routes/test/dead-letters", key, "", 200)
	f("/api/v1/routes/nope/dead-letters", key, "", 404)
	f("/api/v1/routes/test/dead-letters", key, "rebound.example.com", 421)
	f("/metrics", "", "rebound.example.com:80", 421)
	f("/api/v1/openapi.json", key, "localhost", 200)

	// A restart reuses the file.
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	r = relaytest.StartLogged(t, cfg, log)
	addr = r.AdminAddr().String()
	f("/debug/pprof/", key, "", 200)
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}

	// With admin.bootstrap_key, that is the key.
	cfg2 := testConfig(t, nil)
	const configured = "fr_operator-chosen-key-0123456789"
	cfg2.Admin.BootstrapKey = config.SecretValue(configured)
	r = relaytest.StartLogged(t, cfg2, log)
	addr = r.AdminAddr().String()
	f("/debug/pprof/", configured, "", 200)
	f("/debug/pprof/", key, "", 401)
	if _, err := os.Stat(filepath.Join(cfg2.DataDir, "admin.key")); !os.IsNotExist(err) {
		t.Errorf("admin.key made although admin.bootstrap_key is set: %v", err)
	}
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}

	for _, secret := range []string{key, configured} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a bootstrap key appears in the log:\n%s", logs)
		}
	}
}
