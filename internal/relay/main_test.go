package relay_test

import (
	"os"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// TestMain removes the relay binaries the process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	relaytest.RemoveBinaries()
	os.Exit(code)
}
