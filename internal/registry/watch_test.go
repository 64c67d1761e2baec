package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// stageRecorder is an outbox that records what it is asked to stage, and stages nothing.
type stageRecorder struct{ batches *[][]registry.Change }

func (s stageRecorder) Stage(_ context.Context, cs []registry.Change) []byte {
	*s.batches = append(*s.batches, cs)
	return nil
}

func (s stageRecorder) Committed(context.Context, registry.OutboxEntry) {
	panic("Committed without an entry staged")
}

// The outbox's Stage sees each write once, with all its changes in order: an Apply of many
// devices is one call; a device's change carries what it was before and the write's time; a
// write that fails its checks calls nothing; Watch sees the same changes one by one.
func TestOutboxStageChanges(t *testing.T) {
	e := newEnv(t)
	var batches [][]registry.Change
	e.reg.SetOutbox(stageRecorder{&batches})
	var single []string
	e.reg.Watch(func(c registry.Change) { single = append(single, c.ID) })

	if err := e.reg.Create(ctx, &registry.Device{ID: "d1", Account: "a"}); err != nil {
		t.Fatal(err)
	}
	d1, _ := e.reg.Device("D1")
	changes := []any{&registry.Device{ID: "D1", Account: "a", Custom1: "x"}, registry.Deletion{Kind: registry.Devices, ID: "d1"}}
	for i := range 5 {
		changes = append(changes, &registry.Device{ID: fmt.Sprintf("N%d", i)})
	}
	changes = append(changes, &registry.Account{ID: "acc", Name: "A"})
	if err := e.reg.Apply(ctx, changes...); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Apply(ctx, &registry.Device{ID: "N9"}, registry.Deletion{Kind: registry.Devices, ID: "nope"}); err == nil {
		t.Fatal("Apply deleting a missing device succeeded")
	}
	if len(batches) != 2 || len(batches[0]) != 1 || len(batches[1]) != 8 {
		t.Fatalf("batches of %v changes, want 2 batches of 1 and 8", lens(batches))
	}
	c := batches[0][0]
	if c.Device == nil || c.Before != nil || !c.At.Equal(d1.CreatedAt) {
		t.Errorf("create: %+v; want the device, no Before, At its CreatedAt %v", c, d1.CreatedAt)
	}
	up, del := batches[1][0], batches[1][1]
	if up.Device == nil || up.Device.Custom1 != "x" || up.Before == nil || up.Before.Custom1 != "" ||
		up.Before.Revision != 1 || !up.At.Equal(up.Device.UpdatedAt) {
		t.Errorf("update: %+v (before %+v); want the new device, the old one before, At its UpdatedAt", up, up.Before)
	}
	if !del.Deleted || del.Device != nil || del.Before == nil || del.Before.Custom1 != "x" || del.Before.Account != "a" ||
		!del.At.Equal(up.At) {
		t.Errorf("delete: %+v (before %+v); want Deleted, Before the updated device, At the write's time", del, del.Before)
	}
	for i, c := range batches[1][2:7] {
		if c.Device == nil || c.Device.ID != fmt.Sprintf("N%d", i) || c.Before != nil {
			t.Errorf("change %d: %+v, want device N%d created", i+2, c, i)
		}
	}
	if c := batches[1][7]; c.Account == nil || c.Before != nil {
		t.Errorf("change 7: %+v, want the account, no Before", c)
	}
	if got := strings.Join(single, ","); got != "D1,D1,D1,N0,N1,N2,N3,N4,acc" {
		t.Errorf("Watch saw %s", got)
	}
	// What Stage got is its own.
	batches[1][0].Before.Custom1 = "changed"
	batches[1][0].Device.Custom1 = "changed"
	if err := e.reg.Delete(ctx, registry.Devices, "N0"); err != nil {
		t.Fatal(err)
	}
	if len(batches) != 3 || batches[2][0].Before == nil || batches[2][0].Before.ID != "N0" {
		t.Fatalf("Delete: batches %v, last %+v", lens(batches), batches[len(batches)-1])
	}
}

func lens(b [][]registry.Change) []int {
	n := make([]int, len(b))
	for i := range b {
		n[i] = len(b[i])
	}
	return n
}
