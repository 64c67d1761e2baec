package cluster

import "time"

// Crash stops q as a crash would: no heartbeat, renewal, fetch or cursor write any more,
// nothing handed back, marks ignored. Close still frees what it holds in the process.
func (q *Queues) Crash() { q.crash() }

// SetPurge sets how old a message every route is done with must be before it is purged and
// how often owners purge, and returns a func that puts them back. Call it while no Queues runs.
func SetPurge(age, every time.Duration) func() {
	oldAge, oldEvery, oldExact := purgeAge, purgeEvery, purgeExact
	purgeAge, purgeEvery, purgeExact = age, every, true
	return func() { purgeAge, purgeEvery, purgeExact = oldAge, oldEvery, oldExact }
}

// Winner returns the node among live that rendezvous hashing gives partition p to.
func Winner(live []string, p int) string { return winner(live, p) }
