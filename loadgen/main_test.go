package loadgen_test

import (
	"os"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// TestMain removes the relay binary the process test built.
func TestMain(m *testing.M) {
	code := m.Run()
	relaytest.RemoveBinaries()
	os.Exit(code)
}
