package relay_test

import (
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// TestMain removes the relay binaries the process tests built. Run as a NATS node process of
// natstest.StartProcs, it is that node instead.
func TestMain(m *testing.M) {
	natstest.ServeNodeIfChild()
	relaytest.Main(m)
}
