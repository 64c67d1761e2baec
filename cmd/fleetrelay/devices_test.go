package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// fleetrelay devices import against a real relay: a CSV file with the relay's own key (read
// from its data directory), an Azure export with -key and -key-field, NDJSON with
// $FLEETRELAY_KEY; rejected rows printed as JSON lines with exit 3; a wrong key exits 1.
func TestDevicesImportCommand(t *testing.T) {
	cfg := relaytest.Config(t, "")
	r := relaytest.Start(t, cfg)
	dir := t.TempDir()
	conf := filepath.Join(dir, "relay.yaml")
	yaml := "data_dir: " + cfg.DataDir + "\nadmin:\n  listen: " + r.AdminAddr().String() + "\n"
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("relay.yaml", yaml)
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	get := func(id string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+r.AdminAddr().String()+"/api/v1/devices/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil
		}
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	cmd := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := devicesCmd(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	csv := write("fleet.csv", "id,tags,custom1\ncli-1,cold;north,x\ncli-2,,y\ncli-3\n")
	code, out, errs := cmd("import", csv, "-config", conf)
	if code != 3 || !strings.Contains(errs, "2 devices written, 1 rows rejected") {
		t.Errorf("CSV import exited %d: %s", code, errs)
	}
	var rj struct {
		Line  int    `json:"line"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &rj); err != nil || rj.Line != 4 {
		t.Errorf("CSV import printed %q, want line 4 rejected", out)
	}
	if v := get("cli-1"); v == nil || v["custom1"] != "x" {
		t.Errorf("cli-1 after the CSV import: %v", v)
	}

	azure := write("devices.txt", `{"deviceId":"hub-cli","authentication":{"symmetricKey":{"primaryKey":"a2V5"},"type":"sas"}}`+"\n")
	if code, _, errs := cmd("import", azure, "-format", "azure", "-key-field", "custom2", "-config", conf, "-key", key); code != 0 {
		t.Errorf("Azure import exited %d: %s", code, errs)
	}
	if v := get("hub-cli"); v == nil || v["custom2"] != "a2V5" {
		t.Errorf("hub-cli after the Azure import: %v", v)
	}

	nd := write("fleet.ndjson", `{"id":"cli-9","account":""}`+"\n")
	t.Setenv("FLEETRELAY_KEY", key)
	if code, _, errs := cmd("import", nd, "-config", conf); code != 0 {
		t.Errorf("NDJSON import with $FLEETRELAY_KEY exited %d: %s", code, errs)
	}
	if get("cli-9") == nil {
		t.Error("cli-9 not imported")
	}

	if code, _, errs := cmd("import", nd, "-config", conf, "-key", "fr_wrong"); code != 1 || !strings.Contains(errs, "401") {
		t.Errorf("import with a wrong key exited %d: %s, want 1 and the 401", code, errs)
	}
	for _, args := range [][]string{{}, {"export"}, {"import"}, {"import", nd, "-format", "xml"}, {"import", nd, "extra"}} {
		if code, _, _ := cmd(args...); code != 2 {
			t.Errorf("fleetrelay devices %q exited %d, want 2", args, code)
		}
	}
	if code := run([]string{"devices"}); code != 2 {
		t.Errorf("fleetrelay devices exited %d, want 2 (usage)", code)
	}
}
