package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// writeStore writes a small store with one route through the store's API.
func writeStore(t *testing.T, dir string) {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(store.Hooks{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 100)
	for seq := uint64(1); seq <= 100; seq++ {
		rec := fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, seq, strings.Repeat("x", 200))
		s.Append(&store.Frame{Device: "d", Seq: seq, Records: [][]byte{rec}, Routes: []uint16{r}}, func(err error) { done <- err })
	}
	for range 100 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// fleetrelay store verify and salvage: exit codes and what they print, on a
// healthy directory, a damaged one, one a running store holds, and bad
// arguments. The damage cases themselves are tested in internal/store
// (TestCorruption).
func TestStoreCommand(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "data")
	writeStore(t, dir)
	cfg := filepath.Join(tmp, "relay.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := func(want int, wantOut string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if got := storeCmd(args, &out, &errOut); got != want {
			t.Errorf("fleetrelay store %v exited %d, want %d; stdout %q stderr %q", args, got, want, out.String(), errOut.String())
		}
		if all := out.String() + errOut.String(); !strings.Contains(all, wantOut) {
			t.Errorf("fleetrelay store %v printed %q, want it to say %q", args, all, wantOut)
		}
	}
	f(exitUsage, "usage", "frobnicate")
	f(exitUsage, "usage", "salvage", "-from", dir)
	f(exitUsage, "usage", "salvage", "-from", dir, "-to", filepath.Join(tmp, "x"), "-route", "nameonly")
	f(exitOK, "no problems found", "verify", "-data-dir", dir)
	f(exitOK, "no problems found", "verify", "-config", cfg)
	f(exitCannotDo, "no such file", "verify", "-data-dir", filepath.Join(tmp, "missing"))

	// A running store holds the directory: verify refuses.
	s, err := store.Open(t.Context(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f(exitCannotDo, "stop the relay first", "verify", "-data-dir", dir)
	f(exitCannotDo, "stop the relay first", "salvage", "-from", dir, "-to", filepath.Join(tmp, "y"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Damaged: the MANIFEST is gone.
	if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatal(err)
	}
	f(exitDamage, "MANIFEST: missing", "verify", "-data-dir", dir)
	to := filepath.Join(tmp, "salvaged")
	f(exitOK, "pending per route: r 100", "salvage", "-from", dir, "-to", to)
	f(exitCannotDo, "not empty", "salvage", "-from", dir, "-to", to) // not empty now
	f(exitOK, "routes r=1", "verify", "-data-dir", to)
	f(exitOK, `"Segments":`, "verify", "-data-dir", to, "-json")
}
