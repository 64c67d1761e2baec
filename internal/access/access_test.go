package access_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/config"
)

func TestCan(t *testing.T) {
	f := func(rights []string, resource, action string, want bool) {
		t.Helper()
		p := &access.Principal{Rights: rights}
		if got := p.Can(resource, action); got != want {
			t.Errorf("%v.Can(%q, %q) = %v, want %v", rights, resource, action, got, want)
		}
	}
	f([]string{"routes:read"}, "routes", "read", true)
	f([]string{"routes:read"}, "routes", "update", false)
	f([]string{"routes:read"}, "devices", "read", false)
	f([]string{"routes:*"}, "routes", "delete", true)
	f([]string{"routes:*"}, "devices", "delete", false)
	f([]string{"*:read"}, "deadLetters", "read", true)
	f([]string{"*:read"}, "keys", "create", false)
	f([]string{"*:*"}, "accounts", "delete", true)
	f([]string{"devices:read", "routes:update"}, "routes", "update", true)
	// A wildcard asked for is held only by a wildcard.
	f([]string{"routes:create", "routes:read", "routes:update", "routes:delete"}, "routes", "*", false)
	f([]string{"routes:*"}, "routes", "*", true)
	f([]string{"*:read"}, "*", "read", true)
	f([]string{"routes:read"}, "*", "read", false)
	f([]string{"malformed"}, "routes", "read", false)
	f(nil, "routes", "read", false)
	var nobody *access.Principal
	if nobody.Can("routes", "read") || nobody.Super() || nobody.Sees("") {
		t.Error("a nil principal may do something")
	}
}

func TestSuperAndSees(t *testing.T) {
	super := &access.Principal{Rights: access.Presets["super"]}
	acmeAll := &access.Principal{Account: "acme", Rights: []string{"*:*"}}
	global := &access.Principal{Rights: []string{"*:read"}}
	if !super.Super() || acmeAll.Super() || global.Super() {
		t.Error("Super: want only the global key holding *:*")
	}
	if !super.Sees("acme") || !super.Sees("") || !acmeAll.Sees("acme") || acmeAll.Sees("other") || acmeAll.Sees("") {
		t.Error("Sees: a global key sees everything, an account's key its account only")
	}
}

func TestCheckRight(t *testing.T) {
	for _, ok := range []string{"routes:read", "*:*", "deviceLink:create", "deadLetters:*", "*:delete"} {
		if err := access.CheckRight(ok); err != nil {
			t.Errorf("CheckRight(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"routes", "routes:", ":read", "route:read", "routes:write", "Routes:read", "routes:read:x"} {
		if err := access.CheckRight(bad); err == nil {
			t.Errorf("CheckRight(%q) = nil, want an error", bad)
		}
	}
}

// Grant: what a principal may give a new key.
func TestGrant(t *testing.T) {
	super := &access.Principal{Rights: []string{"*:*"}}
	dealer := &access.Principal{Account: "acme", Rights: access.Presets["dealer"]}
	keyAdmin := &access.Principal{Account: "acme", Rights: []string{"keys:*", "routes:*", "devices:read"}}
	globalReader := &access.Principal{Rights: []string{"*:read", "keys:create"}}
	f := func(p *access.Principal, account string, rights []string, preset string, want []string, wantErr error) {
		t.Helper()
		got, err := p.Grant(account, rights, preset)
		if !errors.Is(err, wantErr) || !slices.Equal(got, want) {
			t.Errorf("%+v.Grant(%q, %v, %q) = %v, %v; want %v, %v", p, account, rights, preset, got, err, want, wantErr)
		}
	}
	f(super, "", nil, "super", []string{"*:*"}, nil)
	f(super, "acme", nil, "dealer", access.Presets["dealer"], nil)
	f(super, "acme", nil, "super", nil, access.ErrBadRights)
	f(super, "", []string{"routes:read"}, "dealer", nil, access.ErrBadRights)
	f(super, "", nil, "", nil, access.ErrBadRights)
	f(super, "", nil, "admin", nil, access.ErrBadRights)
	f(super, "", []string{"routes:write"}, "", nil, access.ErrBadRights)
	f(keyAdmin, "acme", []string{"routes:*", "devices:read"}, "", []string{"routes:*", "devices:read"}, nil)
	f(keyAdmin, "acme", []string{"devices:*"}, "", nil, access.ErrCannotGrant)
	f(keyAdmin, "acme", nil, "dealer", nil, access.ErrCannotGrant)
	f(keyAdmin, "other", []string{"routes:read"}, "", nil, access.ErrCannotGrant)
	f(keyAdmin, "", []string{"routes:read"}, "", nil, access.ErrCannotGrant)
	f(dealer, "acme", []string{"routes:read"}, "", []string{"routes:read"}, nil)
	f(dealer, "acme", nil, "dealer", access.Presets["dealer"], nil)
	f(dealer, "acme", []string{"accounts:read"}, "", nil, access.ErrCannotGrant)
	f(globalReader, "", []string{"*:read"}, "", []string{"*:read"}, nil)
	f(globalReader, "acme", []string{"routes:read"}, "", []string{"routes:read"}, nil)
	f(globalReader, "", []string{"*:*"}, "", nil, access.ErrCannotGrant)
	f(globalReader, "", nil, "super", nil, access.ErrCannotGrant)
}

func TestNewKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, h, err := access.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k, "fr_") || len(k) != 46 || strings.ContainsAny(k[3:], "+/=") {
			t.Fatalf("NewKey() = %q, want fr_ and 43 base64url characters", k)
		}
		if h != access.Hash(k) || !access.Equal(h, access.Hash(k)) || access.Equal(h, access.Hash(k+"x")) {
			t.Fatalf("NewKey()'s hash is not Hash(key)")
		}
		if seen[k] {
			t.Fatalf("NewKey() made %q twice", k)
		}
		seen[k] = true
	}
}

// Without admin.bootstrap_key the first start makes <data_dir>/admin.key (mode 0600), later
// starts reuse it; with it, its value is the key and no file is written.
func TestBootstrap(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	h1, path, created, err := access.Bootstrap(dir, "")
	if err != nil || !created || path != filepath.Join(dir, "admin.key") {
		t.Fatalf("first Bootstrap = %v, %q, created %v", err, path, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	if access.Hash(key) != h1 || !strings.HasPrefix(key, "fr_") {
		t.Fatalf("the file holds %q, whose hash is not the one returned", key)
	}
	h2, path2, created, err := access.Bootstrap(dir, "")
	if err != nil || created || path2 != path || h2 != h1 {
		t.Fatalf("second Bootstrap = %v, %q, created %v, same hash %v; want the file reused", err, path2, created, h2 == h1)
	}

	other := t.TempDir()
	h3, path3, created, err := access.Bootstrap(other, config.SecretValue("a-long-enough-operator-key"))
	if err != nil || created || path3 != "" || h3 != access.Hash("a-long-enough-operator-key") {
		t.Fatalf("Bootstrap with a key = %v, %q, created %v", err, path3, created)
	}
	if _, err := os.Stat(filepath.Join(other, "admin.key")); !os.IsNotExist(err) {
		t.Errorf("Bootstrap with a key wrote a file: %v", err)
	}
	if _, _, _, err := access.Bootstrap(other, config.SecretValue("short")); err == nil {
		t.Error("a short bootstrap key was accepted")
	}
	if _, _, _, err := access.Bootstrap(other, config.SecretEnv("FLEETRELAY_TEST_UNSET_KEY")); err == nil || !strings.Contains(err.Error(), "admin.bootstrap_key") {
		t.Errorf("an unset variable = %v, want an error naming admin.bootstrap_key", err)
	}
	if err := os.WriteFile(filepath.Join(other, "admin.key"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := access.Bootstrap(other, ""); err == nil {
		t.Error("an empty key file was accepted")
	}
}

// The limiter: a burst of failures per address, then one per interval; addresses are apart;
// entries are forgotten once refilled.
func TestLimiter(t *testing.T) {
	l := access.NewLimiter(time.Second, 3)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		if d := l.Fail("10.0.0.1", now); d != 0 {
			t.Fatalf("failure %d limited (%v) within the burst", i+1, d)
		}
	}
	if d := l.Fail("10.0.0.1", now); d <= 0 || d > time.Second {
		t.Fatalf("failure past the burst: wait %v, want (0, 1s]", d)
	}
	if d := l.Fail("10.0.0.2", now); d != 0 {
		t.Fatalf("another address limited: %v", d)
	}
	if d := l.Fail("10.0.0.1", now.Add(time.Second)); d != 0 {
		t.Fatalf("a failure a second later limited: %v", d)
	}
	if d := l.Fail("10.0.0.1", now.Add(time.Second)); d == 0 {
		t.Fatal("a second failure in that second not limited")
	}
	l.Fail("10.0.0.3", now.Add(time.Hour)) // sweeps the refilled entries
	if n := l.Len(); n != 1 {
		t.Errorf("the limiter remembers %d addresses an hour later, want 1", n)
	}
}

// Limited tells, without charging, whether an address is over its budget; Active says whether
// any address is remembered, and turns false once the entries have refilled and been swept.
func TestLimiterLimited(t *testing.T) {
	l := access.NewLimiter(time.Second, 2)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if l.Active() || l.Limited("10.0.0.1", now) {
		t.Fatal("a fresh limiter is active or limits an address")
	}
	l.Fail("10.0.0.1", now)
	if !l.Active() {
		t.Fatal("not active after a failure")
	}
	for range 3 { // asking charges nothing
		if l.Limited("10.0.0.1", now) {
			t.Fatal("limited after one failure of a burst of 2")
		}
	}
	l.Fail("10.0.0.1", now)
	if !l.Limited("10.0.0.1", now) {
		t.Fatal("not limited once its burst is spent")
	}
	if l.Limited("10.0.0.2", now) {
		t.Fatal("another address limited")
	}
	if !l.Limited("10.0.0.1", now.Add(999*time.Millisecond)) || l.Limited("10.0.0.1", now.Add(time.Second)) {
		t.Fatal("the address is not free again after one interval")
	}
	if l.Limited("10.0.0.1", now.Add(time.Hour)); l.Active() {
		t.Fatalf("still active an hour later, remembering %d addresses", l.Len())
	}
}
