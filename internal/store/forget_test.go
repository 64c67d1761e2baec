package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Forget drops a device's state only once nothing of it is pending: a routed frame (TCP) or a
// windowed one (UDP) in delivery keeps it; delivered, or stored without routes, it goes, from
// memory (Stats.Devices, LastSeq 0, WindowSeq unknown) and, after the next checkpoint snapshot,
// from disk: a restart does not bring it back, while a device not forgotten keeps its seq.
func TestForget(t *testing.T) {
	defer store.SetSnapshotThresholds(2, 64, 128)()
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	udp := frame("udp", 7, 1, r)
	udp.Window = true
	appendWait(t, s, frame("plain", 3, 1), frame("routed", 5, 1, r), udp, frame("kept", 9, 1))
	if n := s.Stats().Devices; n != 4 {
		t.Fatalf("Stats().Devices = %d, want 4", n)
	}
	for _, dev := range []string{"routed", "udp"} {
		if s.Forget(dev) {
			t.Errorf("Forget(%q) with a frame in delivery = true", dev)
		}
	}
	if !s.Forget("plain") {
		t.Error("Forget(plain), a frame without routes, = false")
	}
	if !s.Forget("never") {
		t.Error("Forget of a device never seen = false")
	}
	s.MarkDelivered(r, pendingRefs(t, s, r))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		for _, dev := range []string{"routed", "udp"} {
			if !s.Forget(dev) {
				return fmt.Errorf("Forget(%q) after delivery = false", dev)
			}
		}
		return nil
	})
	if n := s.Stats().Devices; n != 1 {
		t.Errorf("Stats().Devices = %d after forgetting 3 of 4, want 1", n)
	}
	if got := s.LastSeq("routed"); got != 0 {
		t.Errorf("LastSeq(routed) = %d after Forget, want 0", got)
	}
	if stored, _ := s.WindowSeq("udp", 7); stored {
		t.Error("WindowSeq(udp, 7) = stored after Forget")
	}

	// Once their segment retired (writing a checkpoint entry of its own), commits until a
	// snapshot rewrites the checkpoints without the forgotten devices.
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("%d segments live", n)
		}
		return nil
	})
	before := s.Stats().Snapshots
	for seq := uint64(10); s.Stats().Snapshots == before; seq++ {
		if seq > 10000 {
			t.Fatal("no checkpoint snapshot")
		}
		appendWait(t, s, frame("kept", seq, 1))
	}
	last := s.LastSeq("kept")
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	for _, dev := range []string{"plain", "routed", "udp"} {
		if got := s.LastSeq(dev); got != 0 {
			t.Errorf("after a restart LastSeq(%q) = %d, want 0 (forgotten)", dev, got)
		}
	}
	if got := s.LastSeq("kept"); got != last {
		t.Errorf("after a restart LastSeq(kept) = %d, want %d", got, last)
	}
}
