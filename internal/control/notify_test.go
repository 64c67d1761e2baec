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
	"github.com/fleetrelay/fleetrelay/internal/config"
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

// One Apply of many devices is one notification event: a message per account with an
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

	decode := func(path string) []notificationMsg { return decodeAll(t, ep, path) }
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
	// One write is one event: its messages of both accounts carry the event's hashId, and
	// their observations' hashIds are unique across them.
	for _, o := range append(apply.Observations[:1:1], byEnv["other"][0].Observations...) {
		seen[o.HashID] = true
	}
	if len(seen) != 301 || apply.HashID != byEnv["other"][0].HashID {
		t.Errorf("observation hashIds not unique (%d of 301), or the event's two messages have hashIds %q and %q",
			len(seen), apply.HashID, byEnv["other"][0].HashID)
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

// decodeAll returns every notification message the endpoint got at path.
func decodeAll(t *testing.T, ep *bodies, path string) []notificationMsg {
	t.Helper()
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

// A whole import is one notification event, although it is written in many store
// transactions: one message per account, both with the import's hashId, observations in row
// order with hashIds unique across the event; an account with more than 2,000 changes gets
// messages of 2,000 under the same hashId. The entries are gone from the outbox once stored.
func TestNotifyImportOneEvent(t *testing.T) {
	ep := newBodies(t)
	dir := t.TempDir()
	p := start(t, dir)
	if err := p.reg.Create(t.Context(), &registry.Route{Spec: spec(t,
		`{"name":"all","url":"`+ep.URL+`/all","notifications":true,"batch":{"linger":"5ms","max_bytes":"4MiB"}}`)}); err != nil {
		t.Fatal(err)
	}
	createAccounts(t, p, "acme", "other")
	im := p.c.NewImport("")
	const n = 4500 // acme: lines 1..3000 (two messages), other: 3001..4500 (one)
	for line := 1; line <= n; line++ {
		acct := "acme"
		if line > 3000 {
			acct = "other"
		}
		if err := im.Add(t.Context(), line, config.Device{ID: fmt.Sprintf("dev%04d", line), Account: acct, Custom1: "x"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if up, rej, err := im.Finish(t.Context()); err != nil || up != n || len(rej) != 0 {
		t.Fatalf("import: %d upserted, %d rejected (first %v), %v", up, len(rej), rej[:min(1, len(rej))], err)
	}
	var msgs []notificationMsg
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if msgs = decodeAll(t, ep, "/all"); len(msgs) != 3 {
			return fmt.Errorf("%d messages, want 3", len(msgs))
		}
		return nil
	})
	byEnv := map[string][]notificationMsg{}
	for _, m := range msgs {
		byEnv[deref(m.Environment)] = append(byEnv[deref(m.Environment)], m)
	}
	if len(byEnv["acme"]) != 2 || len(byEnv["other"]) != 1 {
		t.Fatalf("messages by account: %d acme, %d other; want 2 and 1", len(byEnv["acme"]), len(byEnv["other"]))
	}
	seen := map[string]bool{}
	line := 1
	for _, m := range append(byEnv["acme"], byEnv["other"]...) {
		if m.HashID != msgs[0].HashID {
			t.Errorf("message hashIds %q and %q: one import is one event", m.HashID, msgs[0].HashID)
		}
		for _, o := range m.Observations {
			if want := fmt.Sprintf("DEV%04d", line); o.Device.Identifier != want || o.Action != "add" {
				t.Fatalf("observation %d: %s %s, want %s add", line, o.Device.Identifier, o.Action, want)
			}
			seen[o.HashID] = true
			line++
		}
	}
	if a, b := len(byEnv["acme"][0].Observations), len(byEnv["acme"][1].Observations); a != 2000 || b != 1000 {
		t.Errorf("acme's messages hold %d and %d observations, want 2000 and 1000", a, b)
	}
	if line != n+1 || len(seen) != n {
		t.Errorf("%d observations, %d distinct hashIds; want %d of each", line-1, len(seen), n)
	}
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		p.stop(t) // the remover's last pass runs in Close
		q := build(t, dir)
		if left := q.reg.PendingOutbox(); len(left) != 0 {
			return fmt.Errorf("%d outbox entries left after the messages were stored", len(left))
		}
		return nil
	})
}

// A device change whose notification could not be stored (here the journal is not running: as
// after a crash between the registry's commit and the journal's) is notified at the next
// start, from the outbox entry stored with the change — one import still one event — and the
// entry is removed then.
func TestNotifyAfterCrash(t *testing.T) {
	ep := newBodies(t)
	dir := t.TempDir()
	p := build(t, dir) // the store is not started: the journal refuses every frame
	if err := p.reg.Create(t.Context(), &registry.Route{Spec: spec(t,
		`{"name":"all","url":"`+ep.URL+`/all","notifications":true,"batch":{"linger":"5ms"}}`)}); err != nil {
		t.Fatal(err)
	}
	createAccounts(t, p, "acme")
	if err := p.reg.Create(t.Context(), &registry.Device{ID: "ONE", Account: "acme"}); err != nil {
		t.Fatal(err)
	}
	im := p.c.NewImport("")
	for line := 1; line <= 1200; line++ {
		if err := im.Add(t.Context(), line, config.Device{ID: fmt.Sprintf("imp%04d", line), Account: "acme"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if up, rej, err := im.Finish(t.Context()); err != nil || up != 1200 {
		t.Fatalf("import: %d upserted, %d rejected (first %v), %v", up, len(rej), rej[:min(1, len(rej))], err)
	}
	if err := p.reg.Delete(t.Context(), registry.Devices, "one"); err != nil {
		t.Fatal(err)
	}
	p.stop(t)
	if got := ep.at("/all"); len(got) != 0 {
		t.Fatalf("%d bodies delivered with the journal down", len(got))
	}

	q := start(t, dir) // the next start sends what the outbox holds
	var msgs []notificationMsg
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if msgs = decodeAll(t, ep, "/all"); len(msgs) != 3 {
			return fmt.Errorf("%d messages, want 3 (ONE added, the import, ONE deleted)", len(msgs))
		}
		return nil
	})
	if o := msgs[0].Observations; len(o) != 1 || o[0].Action != "add" || o[0].Device.Identifier != "ONE" {
		t.Errorf("first message %+v, want ONE added", o)
	}
	if o := msgs[1].Observations; len(o) != 1200 || o[0].Device.Identifier != "IMP0001" || o[1199].Device.Identifier != "IMP1200" {
		t.Errorf("second message has %d observations, want the import's 1,200 in order", len(o))
	}
	if o := msgs[2].Observations; len(o) != 1 || o[0].Action != "delete" || o[0].DeletedAt == nil {
		t.Errorf("third message %+v, want ONE deleted", o)
	}
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		q.stop(t)
		r := build(t, dir)
		if left := r.reg.PendingOutbox(); len(left) != 0 {
			return fmt.Errorf("%d outbox entries left after the messages were stored", len(left))
		}
		return nil
	})
}

func createAccounts(t *testing.T, p *parts, ids ...string) {
	t.Helper()
	for _, a := range ids {
		if err := p.reg.Create(t.Context(), &registry.Account{ID: a, Name: a}); err != nil {
			t.Fatal(err)
		}
	}
}
