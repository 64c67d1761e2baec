package loadgen_test

import (
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// TestMain removes the relay binaries the process tests built.
func TestMain(m *testing.M) { relaytest.Main(m) }
