package store_test

import (
	"errors"
	"maps"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The task key space is apart from the registry's: a task written with WriteTasks is read back
// by LoadTasks after a reopen, and never by LoadRegistry, nor a registry resource by LoadTasks.
// After Close both answer ErrClosed.
func TestTasksKeySpace(t *testing.T) {
	dir := t.TempDir()
	s := openOnly(t, dir)
	if err := s.WriteRegistry([]store.RegistryOp{{Kind: "device", ID: "D1", Value: []byte(`{"id":"D1"}`)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteTasks([]store.RegistryOp{
		{Kind: "task", ID: "D1/00000000000000000001", Value: []byte(`{"task":1}`)},
		{Kind: "task", ID: "D1/00000000000000000002", Value: []byte(`{"task":2}`)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteTasks([]store.RegistryOp{{Kind: "task", ID: "D1/00000000000000000002"}}); err != nil { // a delete
		t.Fatal(err)
	}
	if err := s.WriteTasks([]store.RegistryOp{{Kind: "a/b", ID: "x", Value: []byte(`{}`)}}); err == nil {
		t.Error("WriteTasks with a kind holding '/' = nil, want an error")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteTasks([]store.RegistryOp{{Kind: "task", ID: "x", Value: []byte(`{}`)}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("WriteTasks after Close = %v, want ErrClosed", err)
	}
	s = openOnly(t, dir)
	tasks := map[string]string{}
	if err := s.LoadTasks(func(k, v []byte) error { tasks[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"task/D1/00000000000000000001": `{"task":1}`}; !maps.Equal(tasks, want) {
		t.Errorf("LoadTasks = %v, want %v", tasks, want)
	}
	if got, want := loadRegistry(t, s), map[string]string{"device/D1": `{"id":"D1"}`}; !maps.Equal(got, want) {
		t.Errorf("LoadRegistry = %v, want %v (no task)", got, want)
	}
}
