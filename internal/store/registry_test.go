package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// openOnly opens the store in dir without starting it, as the relay does while it builds the
// registry; it is closed at the end of the test.
func openOnly(t testing.TB, dir string, mod ...func(*store.Options)) *store.Store {
	t.Helper()
	opts := store.Options{Dir: dir}
	for _, m := range mod {
		m(&opts)
	}
	s, err := store.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open(%q) = %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// loadRegistry returns the registry keys of s as a map.
func loadRegistry(t testing.TB, s *store.Store) map[string]string {
	t.Helper()
	got := make(map[string]string)
	if err := s.LoadRegistry(func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatalf("LoadRegistry() = %v", err)
	}
	return got
}

func writeRegistry(t testing.TB, s *store.Store, ops ...store.RegistryOp) {
	t.Helper()
	if err := s.WriteRegistry(ops); err != nil {
		t.Fatalf("WriteRegistry(%d ops) = %v", len(ops), err)
	}
}

// Registry writes (sets, replacements, deletions) survive Close and Open, started or not, and
// leave the rest of the store as it was: its journal recovers, Verify finds nothing wrong.
func TestRegistryPersists(t *testing.T) {
	dir := t.TempDir()
	s := openOnly(t, dir)
	writeRegistry(t, s,
		store.RegistryOp{Kind: "accounts", ID: "acme", Value: []byte(`{"id":"acme"}`)},
		store.RegistryOp{Kind: "devices", ID: "D1", Value: []byte(`{"id":"D1"}`)},
		store.RegistryOp{Kind: "devices", ID: "D2", Value: []byte(`{"id":"D2"}`)},
		store.RegistryOp{Kind: "routes", ID: "a/b", Value: []byte(`{"spec":{}}`)}, // '/' in an id is the id's
		store.RegistryOp{Kind: "keys", ID: "k1", Value: []byte{}},                 // empty, not a deletion
	)
	if err := s.Start(store.Hooks{}); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	route, err := s.RouteID("r")
	if err != nil {
		t.Fatalf("RouteID(r) = %v", err)
	}
	appendWait(t, s, frame("D1", 1, 2, route)) // a journal beside the registry
	writeRegistry(t, s,
		store.RegistryOp{Kind: "devices", ID: "D1", Value: []byte(`{"id":"D1","tags":["x"]}`)},
		store.RegistryOp{Kind: "devices", ID: "D2"}, // deleted
	)
	mustClose(t, s)

	var rep *store.VerifyReport
	rep, err = store.Verify(dir)
	if err != nil {
		t.Fatalf("Verify(%q) = %v", dir, err)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("Verify(%q) problems = %v, want none", dir, rep.Problems)
	}

	s = openOnly(t, dir)
	want := map[string]string{
		"accounts/acme": `{"id":"acme"}`,
		"devices/D1":    `{"id":"D1","tags":["x"]}`,
		"routes/a/b":    `{"spec":{}}`,
		"keys/k1":       ``,
	}
	if got := loadRegistry(t, s); !maps.Equal(got, want) {
		t.Errorf("LoadRegistry() after reopen = %v, want %v", got, want)
	}
	if got := s.Backlog(route); got != 2 {
		t.Errorf("Backlog(%d) after reopen = %d, want the 2 records stored beside the registry", route, got)
	}
	if got := s.LastSeq("D1"); got != 1 {
		t.Errorf("LastSeq(D1) after reopen = %d, want 1", got)
	}
}

// A transaction too large for Badger fails whole: none of its keys is written, not even those
// that would have fitted, and what was there stays.
func TestRegistryTooLarge(t *testing.T) {
	dir := t.TempDir()
	s := openOnly(t, dir)
	writeRegistry(t, s, store.RegistryOp{Kind: "devices", ID: "D0", Value: []byte("old")})
	ops := []store.RegistryOp{{Kind: "devices", ID: "D0", Value: []byte("new")}}
	for i := range 20000 {
		ops = append(ops, store.RegistryOp{Kind: "devices", ID: fmt.Sprintf("D%05d", i+1), Value: []byte(`{"tags":["a","b"]}`)})
	}
	if err := s.WriteRegistry(ops); !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("WriteRegistry(%d ops) = %v, want %v", len(ops), err, badger.ErrTxnTooBig)
	}
	want := map[string]string{"devices/D0": "old"}
	if got := loadRegistry(t, s); !maps.Equal(got, want) {
		t.Errorf("LoadRegistry() after a failed write = %d keys (D0 %q), want only D0 \"old\"", len(got), got["devices/D0"])
	}
	mustClose(t, s)
	s = openOnly(t, dir)
	if got := loadRegistry(t, s); !maps.Equal(got, want) {
		t.Errorf("LoadRegistry() after reopen = %d keys (D0 %q), want only D0 \"old\"", len(got), got["devices/D0"])
	}
}

// Malformed keys are refused before anything is written; LoadRegistry stops at fn's error;
// both refuse a closed store.
func TestRegistryErrors(t *testing.T) {
	s := openOnly(t, t.TempDir())
	f := func(op store.RegistryOp) {
		t.Helper()
		good := store.RegistryOp{Kind: "devices", ID: "OK", Value: []byte("v")}
		if err := s.WriteRegistry([]store.RegistryOp{good, op}); err == nil {
			t.Errorf("WriteRegistry(%+v) = nil, want an error", op)
		}
	}
	f(store.RegistryOp{Kind: "", ID: "x", Value: []byte("v")})
	f(store.RegistryOp{Kind: "a/b", ID: "x", Value: []byte("v")})
	f(store.RegistryOp{Kind: "devices", ID: "", Value: []byte("v")})
	if got := loadRegistry(t, s); len(got) != 0 {
		t.Errorf("LoadRegistry() after refused writes = %v, want nothing", got)
	}

	writeRegistry(t, s, store.RegistryOp{Kind: "devices", ID: "A", Value: []byte("a")},
		store.RegistryOp{Kind: "devices", ID: "B", Value: []byte("b")})
	stop := errors.New("stop")
	calls := 0
	err := s.LoadRegistry(func(k, v []byte) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("LoadRegistry(fn failing) = %v after %d calls, want %v after 1", err, calls, stop)
	}

	mustClose(t, s)
	if err := s.WriteRegistry([]store.RegistryOp{{Kind: "devices", ID: "A"}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("WriteRegistry after Close = %v, want ErrClosed", err)
	}
	if err := s.LoadRegistry(func(k, v []byte) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("LoadRegistry after Close = %v, want ErrClosed", err)
	}
}
