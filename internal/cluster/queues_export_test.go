package cluster

import "time"

// Crash stops q as a crash would: no heartbeat, renewal, fetch or cursor write any more,
// nothing handed back, marks ignored. Close still frees what it holds in the process.
func (q *Queues) Crash() { q.crash() }

// SetPurgeAge sets how old a message every route is done with must be before it is purged,
// and returns a func that puts it back.
func SetPurgeAge(d time.Duration) func() {
	old := purgeAge
	purgeAge = d
	return func() { purgeAge = old }
}
