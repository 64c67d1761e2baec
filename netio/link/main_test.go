package link

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every engine, watcher and
// dial must be stopped by its owner. Ignored are the goroutines of the process-wide worker pool
// gnet's package starts when it is loaded (ants' purger and clock, and its idle workers, which
// run gnet's Enroll and expire after 10 s): they belong to no engine and live with the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
	)
}
