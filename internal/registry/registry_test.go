package registry_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// env is a registry over a real store in a directory that outlives reopening.
type env struct {
	t   testing.TB
	dir string
	st  *store.Store
	reg *registry.Registry
}

func newEnv(t testing.TB) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.open(nil)
	t.Cleanup(e.close)
	return e
}

// open opens the store (not started, as the relay opens the registry) and the registry over
// it, through wrap when it is set.
func (e *env) open(wrap func(registry.Backend) registry.Backend) {
	e.t.Helper()
	st, err := store.Open(ctx, store.Options{Dir: e.dir})
	if err != nil {
		e.t.Fatalf("store.Open(%q) = %v", e.dir, err)
	}
	b := registry.NewStoreBackend(st)
	if wrap != nil {
		b = wrap(b)
	}
	reg, err := registry.Open(ctx, b)
	if err != nil {
		_ = st.Close()
		e.t.Fatalf("registry.Open() = %v", err)
	}
	var tick atomic.Int64 // a clock that moves a second per reading
	reg.Now = func() time.Time { return time.Unix(1_700_000_000+tick.Add(1), 0) }
	e.st, e.reg = st, reg
}

func (e *env) close() {
	if e.st != nil {
		if err := e.st.Close(); err != nil {
			e.t.Errorf("store Close() = %v", err)
		}
		e.st, e.reg = nil, nil
	}
}

func (e *env) reopen(wrap func(registry.Backend) registry.Backend) {
	e.t.Helper()
	e.close()
	e.open(wrap)
}

func (e *env) create(v any) {
	e.t.Helper()
	if err := e.reg.Create(ctx, v); err != nil {
		e.t.Fatalf("Create(%+v) = %v", v, err)
	}
}

func hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// fullRoute sets every kind of field a route spec has: pointers, maps, slices, secrets.
func fullRoute(name string) *registry.Route {
	off := false
	r := config.DefaultRoute()
	r.Name = name
	r.Enabled = &off
	r.URL = "https://example.com/ingest/[SERIAL]"
	r.Headers = map[string]string{"X-A": "1", "X-B": "[IMEI]"}
	r.Retry = &config.Retry{MaxAttempts: 7, Retention: config.Duration(time.Hour)}
	r.SuccessCodes = []int{200, 202}
	r.Filter = config.Filter{Tags: []string{"t1"}, Groups: []string{"g1", "g2"}}
	r.Auth.OAuth2 = &config.OAuth2{TokenURL: "https://idp.example.com/token", ClientID: "c",
		ClientSecret: config.SecretValue("s3cret"), Scopes: []string{"a", "b"}, AuthStyle: config.AuthStyleHeader}
	r.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue("whsec_1"), config.SecretEnv("WH2")}}
	r.Sign.HMAC = &config.HMACSign{Header: "hash-key", Key: config.SecretFile("/run/key"), Algorithm: "sha256", Encoding: "hex"}
	return &registry.Route{Spec: r}
}

func errIs(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", what, err, want)
	}
}

// Every kind persists: what Create and Update wrote back is what the registry holds, before
// and after the store is closed and opened again; a deleted resource stays deleted.
func TestPersistence(t *testing.T) {
	e := newEnv(t)
	acc := &registry.Account{ID: "acme", Name: "Acme Corp"}
	key := &registry.Key{ID: "k1", Name: "ci", Account: "acme", Rights: []string{"routes:*", "devices:read"},
		Preset: "dealer", Hash: hash("fr_one"), ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)}
	rt := fullRoute("orders")
	dev := &registry.Device{ID: "dev-1", IMEI: "350000000000001", ICCID: "8900", Custom1: "c1", Custom2: "c2",
		Custom3: "c3", Tags: []string{"cold"}, Groups: []string{"north"}, Account: "acme"}
	gone := &registry.Device{ID: "gone"}
	for _, v := range []any{acc, key, rt, dev, gone} {
		e.create(v)
	}
	dev.Tags = append(dev.Tags, "frozen")
	if err := e.reg.Update(ctx, dev, dev.Revision); err != nil {
		t.Fatalf("Update(device) = %v", err)
	}
	if dev.ID != "DEV-1" || dev.Revision != 2 || dev.Source != registry.SourceAPI || !dev.UpdatedAt.After(dev.CreatedAt) {
		t.Errorf("Update wrote back ID %q, meta %+v; want DEV-1, revision 2, source api, updated after created", dev.ID, dev.Meta)
	}
	if err := e.reg.Delete(ctx, registry.Devices, "GONE"); err != nil {
		t.Fatalf("Delete(GONE) = %v", err)
	}

	check := func(when string) {
		t.Helper()
		if got, ok := e.reg.Account("acme"); !ok || !reflect.DeepEqual(got, *acc) {
			t.Errorf("%s: Account(acme) = %+v, %v; want %+v", when, got, ok, *acc)
		}
		if got, ok := e.reg.Key("k1"); !ok || !reflect.DeepEqual(got, *key) {
			t.Errorf("%s: Key(k1) = %+v, %v; want %+v", when, got, ok, *key)
		}
		if got, ok := e.reg.Route("orders"); !ok || !reflect.DeepEqual(got, *rt) {
			t.Errorf("%s: Route(orders) = %+v, %v; want %+v", when, got, ok, *rt)
		}
		if got, ok := e.reg.Device("dev-1"); !ok || !reflect.DeepEqual(got, *dev) {
			t.Errorf("%s: Device(dev-1) = %+v, %v; want %+v", when, got, ok, *dev)
		}
		if got, ok := e.reg.Device("gone"); ok {
			t.Errorf("%s: Device(gone) = %+v, want none", when, got)
		}
		if got, ok := e.reg.KeyByHash(hash("fr_one")); !ok || got.ID != "k1" {
			t.Errorf("%s: KeyByHash(fr_one) = %q, %v; want k1", when, got.ID, ok)
		}
	}
	check("before reopen")
	e.reopen(nil)
	check("after reopen")
	// The secrets came back as they were written: a route keeps them across restarts.
	got, _ := e.reg.Route("orders")
	if s := got.Spec.Auth.OAuth2.ClientSecret; s != config.SecretValue("s3cret") {
		t.Errorf("route's oauth2 client secret after reopen = %q, want the value", string(s))
	}
}

// Pages of 250 devices: by ID, After exclusive, Limit (default 100), more on every page but the
// last, with the account and Match filters.
func TestListDevicesPages(t *testing.T) {
	e := newEnv(t)
	want := map[string][]string{} // account → IDs in order
	// Created in reverse: the order comes from the index, not from creation.
	for i := 249; i >= 0; i-- {
		acc := []string{"a", "b", "c"}[i%3]
		d := &registry.Device{ID: fmt.Sprintf("d%03d", i), Account: acc}
		if i%2 == 0 {
			d.Tags = []string{"even"}
		}
		e.create(d)
	}
	for i := range 250 {
		acc := []string{"a", "b", "c"}[i%3]
		want[acc] = append(want[acc], fmt.Sprintf("D%03d", i))
		want[""] = append(want[""], fmt.Sprintf("D%03d", i))
	}
	walk := func(o registry.ListOptions) (ids []string, sizes []int) {
		t.Helper()
		for {
			page, more := e.reg.ListDevices(o)
			sizes = append(sizes, len(page))
			for _, d := range page {
				ids = append(ids, d.ID)
			}
			if !more {
				return ids, sizes
			}
			if len(page) == 0 {
				t.Fatalf("ListDevices(%+v) = empty page with more", o)
			}
			o.After = page[len(page)-1].ID
		}
	}
	ids, sizes := walk(registry.ListOptions{})
	if !slices.Equal(ids, want[""]) || !slices.Equal(sizes, []int{100, 100, 50}) {
		t.Errorf("all devices: pages of %v, %d IDs (first %v); want pages of [100 100 50], D000..D249", sizes, len(ids), ids[:min(3, len(ids))])
	}
	ids, sizes = walk(registry.ListOptions{Account: "b", Limit: 30})
	if !slices.Equal(ids, want["b"]) || !slices.Equal(sizes, []int{30, 30, 23}) {
		t.Errorf("account b by 30: pages of %v, IDs %v; want pages of [30 30 23], %v", sizes, ids, want["b"])
	}
	// Exactly a page's worth: the last full page says there is no more.
	ids, sizes = walk(registry.ListOptions{Account: "b", Limit: 83})
	if !slices.Equal(ids, want["b"]) || !slices.Equal(sizes, []int{83}) {
		t.Errorf("account b by 83: pages of %v; want one page of 83", sizes)
	}
	even := func(v any) bool { return slices.Contains(v.(*registry.Device).Tags, "even") }
	ids, _ = walk(registry.ListOptions{Account: "a", Match: even, Limit: 7})
	var wantEven []string
	for i := 0; i < 250; i += 6 { // account a (i%3 == 0) and even
		wantEven = append(wantEven, fmt.Sprintf("D%03d", i))
	}
	if !slices.Equal(ids, wantEven) {
		t.Errorf("account a, tag even: %v, want %v", ids, wantEven)
	}
	// After is exclusive and case-insensitive for devices; an After between IDs works too.
	page, more := e.reg.ListDevices(registry.ListOptions{After: "d247"})
	if got := idsOf(page); !slices.Equal(got, []string{"D248", "D249"}) || more {
		t.Errorf("ListDevices(After d247) = %v, %v; want [D248 D249], false", got, more)
	}
	page, _ = e.reg.ListDevices(registry.ListOptions{After: "D0995", Limit: 2})
	if got := idsOf(page); !slices.Equal(got, []string{"D100", "D101"}) {
		t.Errorf("ListDevices(After D0995) = %v, want [D100 D101]", got)
	}
}

func idsOf(ds []registry.Device) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

// Device identities are case-insensitive: stored upper case, found in any case, one device
// whatever the case it is written in.
func TestDeviceIDCase(t *testing.T) {
	e := newEnv(t)
	d := &registry.Device{ID: "abc-ß1", Tags: []string{"x"}}
	e.create(d)
	if d.ID != "ABC-SS1" && d.ID != "ABC-ß1" { // strings.ToUpper keeps ß
		t.Errorf("Create wrote back ID %q, want it upper case", d.ID)
	}
	stored := d.ID
	for _, id := range []string{"abc-ß1", "ABC-ß1", "aBc-ß1", stored} {
		if got, ok := e.reg.Device(id); !ok || got.ID != stored {
			t.Errorf("Device(%q) = %q, %v; want %q", id, got.ID, ok, stored)
		}
	}
	errIs(t, "Create(ABC-ß1) again", e.reg.Create(ctx, &registry.Device{ID: "ABC-ß1"}), registry.ErrExists)
	if err := e.reg.Update(ctx, &registry.Device{ID: "Abc-ß1", Tags: []string{"y"}}, 1); err != nil {
		t.Errorf("Update(Abc-ß1, 1) = %v", err)
	}
	if got, _ := e.reg.Device("ABC-ß1"); !slices.Equal(got.Tags, []string{"y"}) || got.Revision != 2 {
		t.Errorf("after Update: tags %v revision %d, want [y] 2", got.Tags, got.Revision)
	}
	e.reopen(nil)
	if got, ok := e.reg.Device("abc-ß1"); !ok || got.ID != stored {
		t.Errorf("after reopen: Device(abc-ß1) = %q, %v; want %q", got.ID, ok, stored)
	}
	if err := e.reg.Delete(ctx, registry.Devices, "abc-ß1"); err != nil {
		t.Errorf("Delete(abc-ß1) = %v", err)
	}
	if _, ok := e.reg.Device(stored); ok {
		t.Errorf("Device(%q) after Delete: still there", stored)
	}
}

// Revisions: Update with a stale revision fails and changes nothing; with 0 it always applies.
// CreatedAt and Source stay, UpdatedAt moves.
func TestRevisions(t *testing.T) {
	e := newEnv(t)
	a := &registry.Account{ID: "acme", Name: "v1"}
	e.create(a)
	created := a.CreatedAt
	if a.Revision != 1 || a.Source != registry.SourceAPI || created.IsZero() || !a.UpdatedAt.Equal(created) {
		t.Fatalf("Create wrote back %+v; want revision 1, source api, updated = created", a.Meta)
	}
	if err := e.reg.Update(ctx, &registry.Account{ID: "acme", Name: "v2"}, 1); err != nil {
		t.Fatalf("Update(rev 1) = %v", err)
	}
	stale := &registry.Account{ID: "acme", Name: "stale"}
	errIs(t, "Update(rev 1 again)", e.reg.Update(ctx, stale, 1), registry.ErrConflict)
	if stale.Revision != 0 {
		t.Errorf("a failed Update wrote back revision %d", stale.Revision)
	}
	errIs(t, "Update(rev 9)", e.reg.Update(ctx, stale, 9), registry.ErrConflict)
	stale.Revision = 1 // Apply takes the expected revision from the value
	errIs(t, "Apply(rev 1)", e.reg.Apply(ctx, stale), registry.ErrConflict)
	if got, _ := e.reg.Account("acme"); got.Name != "v2" || got.Revision != 2 {
		t.Errorf("after refused writes: %q at revision %d, want v2 at 2", got.Name, got.Revision)
	}
	// The caller's own Meta does not count in Update: only rev does.
	v3 := &registry.Account{ID: "acme", Name: "v3", Meta: registry.Meta{Revision: 77, Source: registry.SourceConfig}}
	if err := e.reg.Update(ctx, v3, 0); err != nil {
		t.Fatalf("Update(rev 0) = %v", err)
	}
	if v3.Revision != 3 || !v3.CreatedAt.Equal(created) || v3.Source != registry.SourceAPI || !v3.UpdatedAt.After(created) {
		t.Errorf("Update(rev 0) wrote back %+v; want revision 3, created %v, source api, updated later", v3.Meta, created)
	}
	errIs(t, "Update(missing)", e.reg.Update(ctx, &registry.Account{ID: "nope"}, 0), registry.ErrNotFound)
	errIs(t, "Delete(missing)", e.reg.Delete(ctx, registry.Accounts, "nope"), registry.ErrNotFound)
	errIs(t, "Create(acme again)", e.reg.Create(ctx, &registry.Account{ID: "acme"}), registry.ErrExists)
	errIs(t, "Create(no ID)", e.reg.Create(ctx, &registry.Account{}), registry.ErrInvalid)
	errIs(t, "Create(not a resource)", e.reg.Create(ctx, registry.Account{ID: "x"}), registry.ErrInvalid)
	errIs(t, "Apply(missing at revision 4)", e.reg.Apply(ctx, &registry.Account{ID: "nope", Meta: registry.Meta{Revision: 4}}), registry.ErrNotFound)
	errIs(t, "Delete(unknown kind)", e.reg.Delete(ctx, "widgets", "x"), registry.ErrInvalid)
	e.reopen(nil)
	if got, _ := e.reg.Account("acme"); got.Name != "v3" || got.Revision != 3 || !got.CreatedAt.Equal(created) {
		t.Errorf("after reopen: %q at revision %d created %v, want v3 at 3 created %v", got.Name, got.Revision, got.CreatedAt, created)
	}
}

// failing wraps a backend and fails its writes while armed; it counts the writes it is asked for.
type failing struct {
	registry.Backend
	armed  atomic.Bool
	writes atomic.Int64
}

var errDisk = errors.New("disk on fire")

func (f *failing) Write(ctx context.Context, ops []registry.Op) error {
	f.writes.Add(1)
	if f.armed.Load() {
		return errDisk
	}
	return f.Backend.Write(ctx, ops)
}

// Apply is all or nothing: a backend that fails the write leaves the index, the watchers and
// the store as they were; a change that cannot apply stops the whole Apply before the backend.
func TestApplyAtomic(t *testing.T) {
	e := newEnv(t)
	f := &failing{}
	e.reopen(func(b registry.Backend) registry.Backend { f.Backend = b; return f })
	old := &registry.Key{ID: "k1", Name: "svc", Rights: []string{"*:read"}, Hash: hash("fr_old")}
	e.create(old)
	e.create(&registry.Device{ID: "D1"})
	var changes atomic.Int64
	e.reg.Watch(func(registry.Change) { changes.Add(1) })

	rotated := *old
	rotated.Rights = slices.Clone(old.Rights)
	rotated.ExpiresAt = time.Unix(1_800_000_000, 0).UTC()
	fresh := &registry.Key{ID: "k2", Name: "svc", Rights: []string{"*:read"}, Hash: hash("fr_new")}
	f.armed.Store(true)
	err := e.reg.Apply(ctx, fresh, &rotated, registry.Deletion{Kind: registry.Devices, ID: "d1"})
	errIs(t, "Apply with a failing backend", err, errDisk)
	f.armed.Store(false)

	unchanged := func(when string) {
		t.Helper()
		if k, ok := e.reg.Key("k1"); !ok || !k.ExpiresAt.IsZero() || k.Revision != 1 {
			t.Errorf("%s: Key(k1) = %+v, %v; want it unexpired at revision 1", when, k, ok)
		}
		if _, ok := e.reg.Key("k2"); ok {
			t.Errorf("%s: Key(k2) exists", when)
		}
		if _, ok := e.reg.KeyByHash(hash("fr_new")); ok {
			t.Errorf("%s: KeyByHash(fr_new) found", when)
		}
		if _, ok := e.reg.Device("D1"); !ok {
			t.Errorf("%s: Device(D1) gone", when)
		}
	}
	unchanged("after the failed write")
	if fresh.Revision != 0 || rotated.Revision != 1 {
		t.Errorf("failed Apply wrote back revisions %d, %d; want 0, 1 (untouched)", fresh.Revision, rotated.Revision)
	}

	// A change that cannot apply (the last one: a device that does not exist) stops it all
	// before the backend is asked.
	before := f.writes.Load()
	err = e.reg.Apply(ctx, fresh, &rotated, registry.Deletion{Kind: registry.Devices, ID: "nope"})
	errIs(t, "Apply with a missing deletion", err, registry.ErrNotFound)
	if n := f.writes.Load() - before; n != 0 {
		t.Errorf("Apply that cannot apply made %d backend writes, want 0", n)
	}
	unchanged("after the refused Apply")
	if n := changes.Load(); n != 0 {
		t.Errorf("watchers saw %d changes of failed Applies, want 0", n)
	}
	e.reopen(nil)
	unchanged("after reopen")
}

// recorder wraps a backend and records what it committed, in order.
type recorder struct {
	registry.Backend
	mu  sync.Mutex
	ops []registry.Op
}

func (r *recorder) Write(ctx context.Context, ops []registry.Op) error {
	if err := r.Backend.Write(ctx, ops); err != nil {
		return err
	}
	r.mu.Lock()
	r.ops = append(r.ops, ops...)
	r.mu.Unlock()
	return nil
}

// Watchers see every committed change once, in the backend's order, under concurrent writers;
// each device's revisions count up one at a time.
func TestWatchOrder(t *testing.T) {
	e := newEnv(t)
	rec := &recorder{}
	e.reopen(func(b registry.Backend) registry.Backend { rec.Backend = b; return rec })
	type seen struct {
		id  string
		rev uint64
	}
	var mu sync.Mutex
	var got []seen
	e.reg.Watch(func(c registry.Change) {
		mu.Lock()
		defer mu.Unlock()
		if c.Device == nil || c.Kind != registry.Devices || c.ID != c.Device.ID {
			t.Errorf("change %+v: want a device's", c)
			return
		}
		got = append(got, seen{c.ID, c.Device.Revision})
		// A watcher may read the registry, and sees its change there.
		if d, ok := e.reg.Device(c.ID); !ok || d.Revision < c.Device.Revision {
			t.Errorf("watcher of %s rev %d: registry has %+v, %v", c.ID, c.Device.Revision, d.Meta, ok)
		}
	})
	const writers, each, devices = 8, 40, 3
	for i := range devices {
		e.create(&registry.Device{ID: fmt.Sprintf("D%d", i)})
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				d := &registry.Device{ID: fmt.Sprintf("d%d", (w+i)%devices), Custom1: fmt.Sprint(w, i)}
				if err := e.reg.Update(ctx, d, 0); err != nil {
					t.Errorf("Update(%s) = %v", d.ID, err)
				}
			}
		})
	}
	wg.Wait()

	var committed []seen
	for _, op := range rec.ops {
		var d registry.Device
		if err := json.Unmarshal(op.Value, &d); err != nil {
			t.Fatalf("recorded op %s/%s: %v", op.Kind, op.ID, err)
		}
		committed = append(committed, seen{op.ID, d.Revision})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != devices+writers*each || !slices.Equal(got, committed) {
		t.Fatalf("watchers saw %d changes, the backend committed %d (want %d, the same sequence)", len(got), len(committed), devices+writers*each)
	}
	next := map[string]uint64{}
	for _, s := range got {
		next[s.id]++
		if s.rev != next[s.id] {
			t.Fatalf("device %s: revision %d after %d", s.id, s.rev, next[s.id]-1)
		}
	}
}

// Resources of the config file shadow stored ones in the index, are never stored, and refuse
// the registry's writes.
func TestStatic(t *testing.T) {
	e := newEnv(t)
	stored := fullRoute("orders")
	e.create(stored)
	e.create(&registry.Device{ID: "D1", Custom1: "stored"})
	errIs(t, "Create(route with Source config)", e.reg.Create(ctx, &registry.Route{Spec: config.Route{Name: "cfg"},
		Meta: registry.Meta{Source: registry.SourceConfig}}), registry.ErrStatic)

	e.reopen(nil)
	cfgRoute := config.DefaultRoute()
	cfgRoute.Name, cfgRoute.URL = "orders", "https://config.example.com/"
	onlyCfg := config.DefaultRoute()
	onlyCfg.Name, onlyCfg.URL = "alerts", "https://config.example.com/alerts"
	e.reg.SetStatic(
		[]registry.Route{{Spec: cfgRoute}, {Spec: onlyCfg}},
		[]registry.Device{{ID: "d1", Custom1: "config"}, {ID: "d2"}},
	)
	if r, ok := e.reg.Route("orders"); !ok || r.Spec.URL != cfgRoute.URL || r.Source != registry.SourceConfig || r.Revision != 1 {
		t.Errorf("Route(orders) = %q source %q rev %d, %v; want the config's", r.Spec.URL, r.Source, r.Revision, ok)
	}
	if d, ok := e.reg.Device("D1"); !ok || d.Custom1 != "config" || d.Source != registry.SourceConfig {
		t.Errorf("Device(D1) = %+v, %v; want the config's", d, ok)
	}
	page, _ := e.reg.ListRoutes(registry.ListOptions{})
	if len(page) != 2 || page[0].Name() != "alerts" || page[1].Name() != "orders" || page[1].Source != registry.SourceConfig {
		t.Errorf("ListRoutes() = %d routes %v, want alerts and orders (config)", len(page), page)
	}

	upd := fullRoute("orders")
	errIs(t, "Update(static route)", e.reg.Update(ctx, upd, 0), registry.ErrStatic)
	errIs(t, "Delete(static route)", e.reg.Delete(ctx, registry.Routes, "orders"), registry.ErrStatic)
	errIs(t, "Apply(static route)", e.reg.Apply(ctx, upd), registry.ErrStatic)
	errIs(t, "Create(static route's name)", e.reg.Create(ctx, fullRoute("alerts")), registry.ErrExists)
	errIs(t, "Update(static device)", e.reg.Update(ctx, &registry.Device{ID: "d2"}, 0), registry.ErrStatic)
	errIs(t, "Delete(static device)", e.reg.Delete(ctx, registry.Devices, "d1"), registry.ErrStatic)
	errIs(t, "Apply(deletion of a static device)", e.reg.Apply(ctx, registry.Deletion{Kind: registry.Devices, ID: "D2"}), registry.ErrStatic)

	// The store still has what was stored, and nothing of the config.
	e.reopen(nil)
	if r, ok := e.reg.Route("orders"); !ok || !reflect.DeepEqual(r, *stored) {
		t.Errorf("after reopen without the config: Route(orders) = %+v, %v; want the stored one", r, ok)
	}
	if _, ok := e.reg.Route("alerts"); ok {
		t.Errorf("after reopen: the config's route alerts was stored")
	}
	if d, ok := e.reg.Device("D1"); !ok || d.Custom1 != "stored" {
		t.Errorf("after reopen: Device(D1) = %+v, %v; want the stored one", d, ok)
	}
	if _, ok := e.reg.Device("D2"); ok {
		t.Errorf("after reopen: the config's device D2 was stored")
	}
}

// KeyByHash follows keys through a rotation-like Apply (a new key, the old one given an
// expiry), a change of hash and a deletion; two keys never share a hash.
func TestKeyByHash(t *testing.T) {
	e := newEnv(t)
	old := &registry.Key{ID: "k1", Name: "svc", Account: "acme", Rights: []string{"routes:*"}, Hash: hash("fr_old")}
	e.create(old)
	fresh := &registry.Key{ID: "k2", Name: "svc", Account: "acme", Rights: []string{"routes:*"}, Hash: hash("fr_new")}
	expiring := *old
	expiring.ExpiresAt = time.Unix(1_800_000_000, 0).UTC()
	if err := e.reg.Apply(ctx, fresh, &expiring); err != nil {
		t.Fatalf("Apply(rotation) = %v", err)
	}
	if fresh.Revision != 1 || expiring.Revision != 2 {
		t.Errorf("Apply wrote back revisions %d and %d, want 1 and 2", fresh.Revision, expiring.Revision)
	}
	check := func(when, secret, wantID string, wantExpiry time.Time) {
		t.Helper()
		k, ok := e.reg.KeyByHash(hash(secret))
		switch {
		case wantID == "" && ok:
			t.Errorf("%s: KeyByHash(%s) = %q, want none", when, secret, k.ID)
		case wantID != "" && (!ok || k.ID != wantID || !k.ExpiresAt.Equal(wantExpiry)):
			t.Errorf("%s: KeyByHash(%s) = %q expiring %v, %v; want %q expiring %v", when, secret, k.ID, k.ExpiresAt, ok, wantID, wantExpiry)
		}
	}
	for _, when := range []string{"after rotation", "after reopen"} {
		check(when, "fr_old", "k1", expiring.ExpiresAt)
		check(when, "fr_new", "k2", time.Time{})
		if when == "after rotation" {
			e.reopen(nil)
		}
	}
	if _, ok := e.reg.KeyByHash([32]byte{}); ok {
		t.Errorf("KeyByHash(zero) found a key")
	}
	errIs(t, "Create(key with k2's hash)", e.reg.Create(ctx, &registry.Key{ID: "k3", Hash: hash("fr_new")}), registry.ErrExists)
	errIs(t, "Update(k1 to k2's hash)", e.reg.Update(ctx, &registry.Key{ID: "k1", Hash: hash("fr_new")}, 0), registry.ErrExists)
	// A hash freed in a transaction may be taken in the same one.
	swap := &registry.Key{ID: "k3", Hash: hash("fr_old")}
	if err := e.reg.Apply(ctx, registry.Deletion{Kind: registry.Keys, ID: "k1"}, swap); err != nil {
		t.Fatalf("Apply(delete k1, create k3 with its hash) = %v", err)
	}
	check("after the swap", "fr_old", "k3", time.Time{})
	if err := e.reg.Update(ctx, &registry.Key{ID: "k2", Hash: hash("fr_newer")}, 0); err != nil {
		t.Fatalf("Update(k2 with a new hash) = %v", err)
	}
	check("after k2's new hash", "fr_new", "", time.Time{})
	check("after k2's new hash", "fr_newer", "k2", time.Time{})
	if err := e.reg.Delete(ctx, registry.Keys, "k2"); err != nil {
		t.Fatalf("Delete(k2) = %v", err)
	}
	check("after Delete(k2)", "fr_newer", "", time.Time{})
	e.reopen(nil)
	check("after the last reopen", "fr_old", "k3", time.Time{})
	check("after the last reopen", "fr_newer", "", time.Time{})
}

// Values in and out are copies: changing what a read returned, what was passed to Create, or
// what a watcher got changes nothing in the registry.
func TestCopies(t *testing.T) {
	e := newEnv(t)
	var watched *registry.Route
	e.reg.Watch(func(c registry.Change) {
		if c.Route != nil {
			watched = c.Route
		}
	})
	in := fullRoute("orders")
	e.create(in)
	want, _ := json.Marshal(in)
	mutate := func(r *registry.Route) {
		r.Spec.Headers["X-A"] = "changed"
		*r.Spec.Enabled = true
		r.Spec.Retry.MaxAttempts = 1
		r.Spec.SuccessCodes[0] = 500
		r.Spec.Filter.Groups[0] = "changed"
		r.Spec.Auth.OAuth2.Scopes[0] = "changed"
		r.Spec.Sign.Webhooks.Secrets[0] = "changed"
	}
	mutate(in)
	mutate(watched)
	out, _ := e.reg.Route("orders")
	mutate(&out)
	page, _ := e.reg.ListRoutes(registry.ListOptions{})
	mutate(&page[0])
	got, _ := e.reg.Route("orders")
	if js, _ := json.Marshal(&got); string(js) != string(want) {
		t.Errorf("route after changing copies:\n%s\nwant\n%s", js, want)
	}

	d := &registry.Device{ID: "D1", Tags: []string{"a"}, Groups: []string{"g"}}
	e.create(d)
	d.Tags[0] = "changed"
	dd, _ := e.reg.Device("D1")
	dd.Groups[0] = "changed"
	devs, _ := e.reg.ListDevices(registry.ListOptions{})
	devs[0].Tags[0] = "changed"
	if got, _ := e.reg.Device("D1"); got.Tags[0] != "a" || got.Groups[0] != "g" {
		t.Errorf("device after changing copies: tags %v groups %v, want [a] [g]", got.Tags, got.Groups)
	}
	k := &registry.Key{ID: "k", Rights: []string{"*:read"}}
	e.create(k)
	k.Rights[0] = "*:*"
	kk, _ := e.reg.Key("k")
	kk.Rights[0] = "*:*"
	if got, _ := e.reg.Key("k"); got.Rights[0] != "*:read" {
		t.Errorf("key after changing copies: rights %v, want [*:read]", got.Rights)
	}
}

// A cancelled context writes nothing.
func TestCancelled(t *testing.T) {
	e := newEnv(t)
	c, cancel := context.WithCancel(ctx)
	cancel()
	errIs(t, "Create(cancelled)", e.reg.Create(c, &registry.Device{ID: "D1"}), context.Canceled)
	if _, ok := e.reg.Device("D1"); ok {
		t.Errorf("Device(D1) created under a cancelled context")
	}
}

// Routes belong to the account their spec names (config.Route.Account): the account filter of
// ListRoutes follows it.
func TestListRoutesByAccount(t *testing.T) {
	e := newEnv(t)
	for i, acc := range []string{"a", "b", "", "a", "b", "a"} {
		r := config.DefaultRoute()
		r.Name = fmt.Sprintf("r%d", i)
		r.Account = acc
		e.create(&registry.Route{Spec: r})
	}
	f := func(acc string, want ...string) {
		t.Helper()
		page, more := e.reg.ListRoutes(registry.ListOptions{Account: acc})
		var got []string
		for _, r := range page {
			got = append(got, r.Name())
		}
		if !slices.Equal(got, want) || more {
			t.Errorf("ListRoutes(account %q) = %v, %v; want %v, false", acc, got, more, want)
		}
	}
	f("a", "r0", "r3", "r5")
	f("b", "r1", "r4")
	f("", "r0", "r1", "r2", "r3", "r4", "r5")
	f("c")
}
