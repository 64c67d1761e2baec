package registry_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// A reloaded config replaces the config file's resources: the changed and new ones are put,
// the unchanged ones left as they are, the dropped ones removed — or the stored resource they
// shadowed comes back. The watchers and the outbox get the changes (routes, devices, then the
// removals), each with what it was before; the store never holds a config resource.
func TestReplaceStatic(t *testing.T) {
	e := newEnv(t)
	e.create(&registry.Device{ID: "B", Custom1: "stored"})
	rt := func(url string) config.Route {
		r := config.DefaultRoute()
		r.Name, r.URL = "cfg", url
		return r
	}
	e.reg.SetStatic([]registry.Route{{Spec: rt("https://a.example.com/")}},
		[]registry.Device{{ID: "a"}, {ID: "b", Custom1: "config"}, {ID: "gone"}})
	var seen []string
	e.reg.Watch(func(c registry.Change) {
		what := "put"
		switch {
		case c.Deleted:
			what = "delete"
		case c.Device != nil && c.Device.Source == registry.SourceAPI:
			what = "back"
		}
		if c.Kind == registry.Devices && !c.Deleted && c.Before != nil {
			what += "(was " + c.Before.Custom1 + ")"
		}
		seen = append(seen, fmt.Sprintf("%s %s %s", c.Kind, c.ID, what))
	})
	o := &noteOutbox{}
	e.reg.SetOutbox(o)

	err := e.reg.ReplaceStatic(ctx, []registry.Route{{Spec: rt("https://b.example.com/")}},
		[]registry.Device{{ID: "A"}, {ID: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "routes cfg put; devices C put; devices B back(was config); devices GONE delete"
	if got := strings.Join(seen, "; "); got != want {
		t.Errorf("changes:\n got %s\nwant %s", got, want)
	}
	if len(o.committed) != 1 || string(o.committed[0].Value) != "C,B,GONE" {
		t.Errorf("outbox entries %q, want one with C,B,GONE", o.committed)
	}
	if r, _ := e.reg.Route("cfg"); r.Spec.URL != "https://b.example.com/" || r.Revision != 2 || r.Source != registry.SourceConfig {
		t.Errorf("route cfg = %s revision %d source %s; want the new URL at revision 2 from the config", r.Spec.URL, r.Revision, r.Source)
	}
	if d, _ := e.reg.Device("A"); d.Revision != 1 {
		t.Errorf("device A (declared as it was) at revision %d, want 1", d.Revision)
	}
	if d, ok := e.reg.Device("B"); !ok || d.Custom1 != "stored" || d.Source != registry.SourceAPI {
		t.Errorf("device B = %+v, %v; want the stored one back", d, ok)
	}
	if _, ok := e.reg.Device("GONE"); ok {
		t.Error("device GONE still there")
	}
	// B is the API's again; GONE never was.
	if err := e.reg.Update(ctx, &registry.Device{ID: "B", Custom1: "api"}, 0); err != nil {
		t.Errorf("Update(B) after it came back: %v", err)
	}

	seen = nil
	if err := e.reg.ReplaceStatic(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(seen, "; "), "routes cfg delete; devices A delete; devices C delete"; got != want {
		t.Errorf("changes:\n got %s\nwant %s", got, want)
	}
	e.reopen(nil)
	if d, ok := e.reg.Device("B"); !ok || d.Custom1 != "api" {
		t.Errorf("after reopen: device B = %+v, %v; want the API's", d, ok)
	}
	for _, id := range []string{"A", "C", "GONE"} {
		if _, ok := e.reg.Device(id); ok {
			t.Errorf("after reopen: config device %s was stored", id)
		}
	}
}
