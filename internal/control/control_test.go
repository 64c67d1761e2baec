package control_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/route"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// parts is a real store, registry, actor system and control over a data directory.
type parts struct {
	st  *store.Store
	reg *registry.Registry
	sys *actors.System
	c   *control.Control

	stopped bool
}

func start(t *testing.T, dir string, static ...config.Route) *parts {
	t.Helper()
	p := build(t, dir, static...)
	p.startStore(t)
	return p
}

// build is start without starting the store (the journal refuses frames until startStore).
func build(t *testing.T, dir string, static ...config.Route) *parts {
	t.Helper()
	return buildWith(t, dir, nil, static...)
}

// buildWith is build with the control's options set by opt (nil: none).
func buildWith(t *testing.T, dir string, opt func(*control.Options), static ...config.Route) *parts {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(ctx, registry.NewStoreBackend(st))
	if err != nil {
		t.Fatal(err)
	}
	d := config.Default().Delivery
	d.AllowPrivateNetworks = true
	clients := route.NewClients(deliver.Options{AllowPrivateNetworks: true})
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, Journal: st})
	o := control.Options{Registry: reg, System: sys, Store: st, Routes: static,
		Deps: route.Deps{Delivery: d, Clients: clients}}
	if opt != nil {
		opt(&o)
	}
	c, err := control.New(o)
	if err != nil {
		t.Fatal(err)
	}
	p := &parts{st: st, reg: reg, sys: sys, c: c}
	t.Cleanup(func() {
		p.stop(t)
		clients.Close()
	})
	return p
}

func (p *parts) startStore(t *testing.T) {
	t.Helper()
	if err := p.st.Start(store.Hooks{OnCommit: p.sys.OnCommit, OnDelivered: p.sys.OnDelivered, OnWindowDelivered: p.sys.OnWindowDelivered}); err != nil {
		t.Fatal(err)
	}
	p.c.Start()
}

func (p *parts) stop(t *testing.T) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.sys.Stop(ctx); err != nil {
		t.Error(err)
	}
	p.c.Close()
	if err := p.st.Close(); err != nil {
		t.Fatal(err)
	}
}

func spec(t *testing.T, body string) config.Route {
	t.Helper()
	r, err := config.ParseRoute([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Changes committed to the registry by anyone — not only through the control's own writes, as
// they will arrive from other nodes — are applied to the actors: a created route runs, a
// disabled one stops taking messages, a deleted one is gone.
func TestApplyFromWatch(t *testing.T) {
	ep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer ep.Close()
	p := start(t, t.TempDir())
	ctx := context.Background()

	rt := &registry.Route{Spec: spec(t, `{"name":"w","url":"`+ep.URL+`/x"}`)}
	if err := p.reg.Create(ctx, rt); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.sys.Holdings("w"); !ok || !p.c.Status("w").Running {
		t.Fatalf("created route: held %v, status %+v; want it running", ok, p.c.Status("w"))
	}
	off := false
	rt.Spec.Enabled = &off
	if err := p.reg.Update(ctx, rt, 0); err != nil {
		t.Fatal(err)
	}
	if st := p.c.Status("w"); st.Running || st.Error != "" {
		t.Errorf("disabled route's status = %+v, want not running, no error", st)
	}
	if got := p.c.Applied(); !slices.Equal(got, []string{"w"}) {
		t.Errorf("Applied = %q, want [w] (a paused route stays in the actor system)", got)
	}
	if err := p.reg.Delete(ctx, registry.Routes, "w"); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.sys.Holdings("w"); ok {
		t.Errorf("deleted route still runs")
	}
	if got := p.c.Applied(); len(got) != 0 {
		t.Errorf("Applied after the delete = %q, want none", got)
	}
}

// At start, the stored routes run again, and the config file's routes shadow a stored route of
// the same name; one that no longer compiles is reported, not fatal.
func TestStartRunsStoredRoutes(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	ctx := context.Background()
	for _, body := range []string{
		`{"name":"a","url":"https://example.com/a"}`,
		`{"name":"shadowed","url":"https://example.com/s"}`,
		`{"name":"broken","url":"https://example.com/b","sign":{"hmac":{"key":{"env":"FLEETRELAY_CONTROL_TEST_UNSET"}}}}`,
	} {
		if err := p.reg.Create(ctx, &registry.Route{Spec: spec(t, body)}); err != nil {
			t.Fatal(err)
		}
	}
	p.stop(t)

	static := spec(t, `{"name":"shadowed","url":"https://example.com/config"}`)
	static.Resolve(&config.Default().Delivery)
	p = start(t, dir, static)
	if got := p.c.Applied(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Applied = %q, want [a]: the config file runs its own route, the broken one does not run", got)
	}
	if st := p.c.Status("broken"); st.Running || st.Error == "" {
		t.Errorf("broken route's status = %+v, want not running with the reason", st)
	}
	if v, _ := p.c.Route("shadowed"); v.Meta.Source != registry.SourceConfig {
		t.Errorf("shadowed route's source = %q, want config", v.Meta.Source)
	}
}

// The write rules that need no HTTP: an account's key writes its own account's routes only, a
// host secret needs HostSecrets, the name cannot change, and config-owned routes are refused.
func TestWriteRouteRules(t *testing.T) {
	t.Setenv("FLEETRELAY_CONTROL_TEST", "v")
	p := start(t, t.TempDir(), func() config.Route {
		r := spec(t, `{"name":"cfg","url":"https://example.com"}`)
		r.Resolve(&config.Default().Delivery)
		return r
	}())
	ctx := context.Background()
	if err := p.reg.Create(ctx, &registry.Account{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	write := func(w control.RouteWrite) error {
		_, _, err := p.c.WriteRoute(ctx, w)
		return err
	}
	invalidAt := func(err error, want ...string) {
		t.Helper()
		var inv *control.InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("err = %v, want *InvalidError", err)
		}
		var got []string
		for _, f := range inv.Fields {
			got = append(got, f.Pointer)
		}
		if !slices.Equal(got, want) {
			t.Errorf("pointers = %q (%v), want %q", got, inv, want)
		}
	}

	invalidAt(write(control.RouteWrite{Body: []byte(`{"name":"r","url":"https://example.com","account":"other"}`), Account: "acme"}), "/account")
	invalidAt(write(control.RouteWrite{Body: []byte(`{"name":"r","url":"https://example.com","account":"nobody"}`)}), "/account")
	v, created, err := p.c.WriteRoute(ctx, control.RouteWrite{Body: []byte(`{"name":"r","url":"https://example.com"}`), Account: "acme", Create: true})
	if err != nil || !created || v.Account != "acme" {
		t.Fatalf("create = %+v, %v, %v; want created in acme", v, created, err)
	}
	if err := write(control.RouteWrite{Body: []byte(`{"name":"r","url":"https://example.com"}`), Create: true}); !errors.Is(err, registry.ErrExists) {
		t.Errorf("second create = %v, want ErrExists", err)
	}
	if err := write(control.RouteWrite{Name: "r", Body: []byte(`{"url":"https://example.com/2"}`), Account: "other"}); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("another account's write = %v, want ErrNotFound", err)
	}
	invalidAt(write(control.RouteWrite{Name: "r", Body: []byte(`{"name":"q","url":"https://example.com/2"}`)}), "/name")
	host := []byte(`{"url":"https://example.com","sign":{"hmac":{"key":{"env":"FLEETRELAY_CONTROL_TEST"}}}}`)
	var forb *control.ForbiddenError
	if err := write(control.RouteWrite{Name: "r", Body: host, Account: "acme"}); !errors.As(err, &forb) || forb.Fields[0].Pointer != "/sign/hmac/key" {
		t.Errorf("host secret without HostSecrets = %v, want *ForbiddenError at /sign/hmac/key", err)
	}
	if err := write(control.RouteWrite{Name: "r", Body: host, HostSecrets: true}); err != nil {
		t.Errorf("host secret with HostSecrets = %v", err)
	}
	for _, w := range []control.RouteWrite{{Name: "cfg", Body: []byte(`{}`)}, {Name: "cfg", Body: []byte(`{}`), Patch: true}} {
		if err := write(w); !errors.Is(err, control.ErrConfigOwned) {
			t.Errorf("write of a config route = %v, want ErrConfigOwned", err)
		}
	}
	if _, err := p.c.DeleteRoute(ctx, "cfg", "", true); !errors.Is(err, control.ErrConfigOwned) {
		t.Errorf("delete of a config route = %v, want ErrConfigOwned", err)
	}
	if _, err := p.c.DeleteRoute(ctx, "r", "", false); err != nil {
		t.Errorf("delete of an empty route = %v", err)
	}
}
