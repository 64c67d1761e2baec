package registry_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// noteOutbox stages the IDs a write changed (devices only) and records what was committed.
type noteOutbox struct {
	staged    int
	committed []registry.OutboxEntry
	ctxs      []context.Context
}

func (o *noteOutbox) Stage(_ context.Context, changes []registry.Change) []byte {
	o.staged++
	var ids []string
	for _, c := range changes {
		if c.Kind == registry.Devices {
			ids = append(ids, c.ID)
		}
	}
	if ids == nil {
		return nil
	}
	return []byte(strings.Join(ids, ","))
}

func (o *noteOutbox) Committed(ctx context.Context, e registry.OutboxEntry) {
	o.committed = append(o.committed, e)
	o.ctxs = append(o.ctxs, ctx)
}

type ctxKey struct{}

// An outbox entry is written in the write's own transaction: committed with it, gone with a
// write the backend refuses; stored entries come back after a reopen, in write order, until
// removed; IDs keep growing across runs.
func TestOutbox(t *testing.T) {
	e := newEnv(t)
	f := &failing{}
	e.reopen(func(b registry.Backend) registry.Backend { f.Backend = b; return f })
	o := &noteOutbox{}
	e.reg.SetOutbox(o)

	e.create(&registry.Account{ID: "acme"}) // no device: no entry
	wctx := context.WithValue(ctx, ctxKey{}, "import-1")
	if err := e.reg.Apply(wctx, &registry.Device{ID: "a1"}, &registry.Device{ID: "b2"}); err != nil {
		t.Fatal(err)
	}
	f.armed.Store(true)
	if err := e.reg.Create(ctx, &registry.Device{ID: "lost"}); !errors.Is(err, errDisk) {
		t.Fatalf("Create on a failing disk = %v, want %v", err, errDisk)
	}
	f.armed.Store(false)
	if err := e.reg.Delete(ctx, registry.Devices, "a1"); err != nil {
		t.Fatal(err)
	}
	if o.staged != 4 {
		t.Errorf("Stage called %d times, want 4 (one per write)", o.staged)
	}
	if len(o.committed) != 2 || string(o.committed[0].Value) != "A1,B2" || string(o.committed[1].Value) != "A1" {
		t.Fatalf("committed %q, want the Apply's A1,B2 then the Delete's A1", o.committed)
	}
	if o.ctxs[0].Value(ctxKey{}) != "import-1" {
		t.Error("Committed did not get the write's context")
	}
	if !(o.committed[0].ID < o.committed[1].ID) {
		t.Errorf("entry IDs %q, %q not in write order", o.committed[0].ID, o.committed[1].ID)
	}
	if p := e.reg.PendingOutbox(); len(p) != 0 {
		t.Errorf("PendingOutbox() of a fresh registry = %q", p)
	}

	e.reopen(nil)
	p := e.reg.PendingOutbox()
	if !slices.EqualFunc(p, o.committed, func(a, b registry.OutboxEntry) bool {
		return a.ID == b.ID && string(a.Value) == string(b.Value)
	}) {
		t.Fatalf("PendingOutbox() after reopen = %q, want %q", p, o.committed)
	}
	if _, ok := e.reg.Device("LOST"); ok {
		t.Error("the refused write's device is stored")
	}
	if err := e.reg.RemoveOutbox(ctx, p[0].ID); err != nil {
		t.Fatal(err)
	}
	if got := e.reg.PendingOutbox(); len(got) != 1 || got[0].ID != p[1].ID {
		t.Errorf("PendingOutbox() after removing the first = %q", got)
	}
	alone, err := e.reg.WriteOutbox(ctx, []byte("config"))
	if err != nil {
		t.Fatal(err)
	}
	if alone.ID <= p[1].ID {
		t.Errorf("entry ID %q after a reopen is not after %q", alone.ID, p[1].ID)
	}

	e.reopen(nil)
	p = e.reg.PendingOutbox()
	if len(p) != 2 || p[0].ID != o.committed[1].ID || p[1].ID != alone.ID || string(p[1].Value) != "config" {
		t.Fatalf("PendingOutbox() = %q, want the Delete's entry and the lone one", p)
	}
	if err := e.reg.RemoveOutbox(ctx, p[0].ID, p[1].ID); err != nil {
		t.Fatal(err)
	}
	e.reopen(nil)
	if p := e.reg.PendingOutbox(); len(p) != 0 {
		t.Errorf("PendingOutbox() after removing all = %q", p)
	}
	if _, ok := e.reg.Device("B2"); !ok {
		t.Error("device B2 lost")
	}
}
