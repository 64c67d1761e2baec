package netio_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every engine, NDJSON reader
// and test dispatcher must be stopped by its owner. The only goroutines ignored are the two of
// the process-wide worker pool gnet's package starts when it is loaded (ants' stale-worker purger
// and clock): they belong to no engine and live as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}
