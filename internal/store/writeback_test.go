package store_test

import (
	"os"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The writeback loop finds Badger's active value-log file by name: this pins the naming to the
// Badger version in go.mod, so an upgrade that renames the files fails here instead of silently
// bringing back the rotation stalls.
func TestWritebackFindsActiveValueLog(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer mustClose(t, s)
	appendWait(t, s, frame("D1", 1, 50, 1))
	p := store.NewestVlog(dir)
	if p == "" {
		t.Fatal("no value-log file found in the store's directory")
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("newest value log %s: %v (size %v)", p, err, fi)
	}
}
