package relay

import "time"

// SetLegsCheckEvery sets how often a node checks that the nodes which asked for its links still
// run (0: the default).
func SetLegsCheckEvery(d time.Duration) { legsCheckEvery.Store(int64(d)) }
