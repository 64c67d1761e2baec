package store

// Device commands (internal/tasks) live in a key space of their own, apart from the registry's
// so that the registry, which refuses kinds it does not know, never reads them, and so that the
// many small writes of task state never mix with the resources an operator manages:
//
//	t/<kind>/<id>   one task record; the value is internal/tasks' encoding
//
// The same guarantees as the registry's: LoadTasks reads them all, WriteTasks applies ops in one
// transaction, as durable when it returns as an acknowledged frame.
var prefixTasks = []byte("t/")

// LoadTasks calls fn for every task key ("<kind>/<id>") and value, like LoadRegistry. It works on
// an opened store, started or not; ErrClosed after Close.
func (s *Store) LoadTasks(fn func(key, value []byte) error) error {
	return s.loadSpace(prefixTasks, "tasks", fn)
}

// WriteTasks applies ops to the task key space in one transaction, like WriteRegistry. Safe for
// concurrent use.
func (s *Store) WriteTasks(ops []RegistryOp) error {
	return s.writeSpace(prefixTasks, "tasks", ops)
}
