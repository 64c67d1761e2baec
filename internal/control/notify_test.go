package control_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// bodies is an HTTP endpoint that keeps every request body.
type bodies struct {
	*httptest.Server
	mu  sync.Mutex
	got map[string][][]byte // by path
}

func newBodies(t *testing.T) *bodies {
	b := &bodies{got: map[string][][]byte{}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.got[r.URL.Path] = append(b.got[r.URL.Path], body)
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *bodies) at(path string) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.got[path]...)
}

// notificationMsg is a notification message as a receiver decodes it.
type notificationMsg struct {
	HashID       string  `json:"hashId"`
	Environment  *string `json:"environmentHashId"`
	Observations []struct {
		HashID string `json:"hashId"`
		Object string `json:"object"`
		Action string `json:"action"`
		Device struct {
			Identifier string `json:"identifier"`
		} `json:"device"`
		CreatedAt string  `json:"createdAt"`
		UpdatedAt string  `json:"updatedAt"`
		DeletedAt *string `json:"deletedAt"`
	} `json:"observations"`
	GeneratedAt string `json:"generatedAt"`
	Attempt     int    `json:"attempt"`
}

// One Apply of many devices (an import chunk) is one notification message per account with an
// observation per device, in the Apply's order, at every notification route of that account or
// of none; a data route gets none of it, and a write that fails notifies nothing.
func TestNotifyApply(t *testing.T) {
	ep := newBodies(t)
	p := start(t, t.TempDir())
	ctx := context.Background()
	for _, body := range []string{
		`{"name":"all","url":"` + ep.URL + `/all","notifications":true,"batch":{"linger":"5ms"}}`,
		`{"name":"acme","url":"` + ep.URL + `/acme","notifications":true,"account":"acme","batch":{"linger":"5ms"}}`,
		`{"name":"data","url":"` + ep.URL + `/data","batch":{"linger":"5ms"}}`,
	} {
		if err := p.reg.Create(ctx, &registry.Route{Spec: spec(t, body)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.reg.Create(ctx, &registry.Device{ID: "OLD", Account: "acme"}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	changes := []any{registry.Deletion{Kind: registry.Devices, ID: "old"}}
	for i := range n {
		acct := "acme"
		if i%3 == 0 {
			acct = "other"
		}
		changes = append(changes, &registry.Device{ID: fmt.Sprintf("D%03d", i), Account: acct})
	}
	if err := p.reg.Apply(ctx, changes...); err != nil {
		t.Fatal(err)
	}
	if err := p.reg.Apply(ctx, &registry.Device{ID: "X"}, registry.Deletion{Kind: registry.Devices, ID: "missing"}); err == nil {
		t.Fatal("Apply deleting a missing device succeeded")
	}
	if err := p.reg.Update(ctx, &registry.Device{ID: "D001", Account: "acme", Custom1: "c"}, 0); err != nil {
		t.Fatal(err)
	}

	decode := func(path string) []notificationMsg {
		var out []notificationMsg
		for _, b := range ep.at(path) {
			var msgs []notificationMsg
			if err := json.Unmarshal(b, &msgs); err != nil {
				t.Fatalf("%s body %s: %v", path, b, err)
			}
			out = append(out, msgs...)
		}
		return out
	}
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		if a, b := len(decode("/all")), len(decode("/acme")); a != 4 || b != 3 {
			return fmt.Errorf("%d messages at /all, %d at /acme; want 4 and 3", a, b)
		}
		return nil
	})
	all, acme := decode("/all"), decode("/acme")
	// Per account in order (one account's messages keep their order; accounts do not wait for
	// each other): acme has OLD's add, the Apply's acme part (OLD's delete first), D001's
	// update; other has the Apply's other part.
	byEnv := map[string][]notificationMsg{}
	for _, m := range all {
		byEnv[deref(m.Environment)] = append(byEnv[deref(m.Environment)], m)
	}
	want := []struct {
		env     string
		i       int
		obs     int
		first   string
		firstID string
	}{{"acme", 0, 1, "add", "OLD"}, {"acme", 1, 1 + 200, "delete", "OLD"}, {"acme", 2, 1, "update", "D001"}, {"other", 0, 100, "add", "D000"}}
	for _, w := range want {
		if len(byEnv[w.env]) <= w.i {
			t.Fatalf("/all: %d messages of %s", len(byEnv[w.env]), w.env)
		}
		m := byEnv[w.env][w.i]
		if len(m.Observations) != w.obs || m.Observations[0].Action != w.first || m.Observations[0].Device.Identifier != w.firstID {
			t.Fatalf("/all message %d of %s: %d observations, first %+v; want %d, %s %s", w.i, w.env,
				len(m.Observations), m.Observations[0], w.obs, w.first, w.firstID)
		}
		if m.Attempt != 0 || m.HashID == "" || m.GeneratedAt == "" {
			t.Errorf("/all message %d of %s: hashId %q, generatedAt %q, attempt %d", w.i, w.env, m.HashID, m.GeneratedAt, m.Attempt)
		}
	}
	apply := byEnv["acme"][1]
	seen := map[string]bool{}
	for j, o := range apply.Observations[1:] {
		if want := fmt.Sprintf("D%03d", 3*(j/2)+1+j%2); o.Device.Identifier != want || o.Action != "add" ||
			o.Object != "device" || o.DeletedAt != nil || o.CreatedAt != o.UpdatedAt {
			t.Fatalf("observation %d = %+v, want %s added", j+1, o, want)
		}
		seen[o.HashID] = true
	}
	if d := apply.Observations[0]; d.DeletedAt == nil || *d.DeletedAt != d.UpdatedAt {
		t.Errorf("delete observation %+v: want deletedAt = updatedAt", d)
	}
	if len(seen) != 200 || apply.HashID == byEnv["other"][0].HashID {
		t.Errorf("observation hashIds not unique (%d of 200), or the two messages share hashId %q", len(seen), apply.HashID)
	}
	for i, m := range acme {
		if a, b := m.HashID, byEnv["acme"][i].HashID; a != b {
			t.Errorf("/acme message %d is %s, want /all's %s (the same message)", i, a, b)
		}
	}
	if got := ep.at("/data"); len(got) != 0 {
		t.Errorf("the data route got %d bodies: %s", len(got), got[0])
	}
}

func deref(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}
