package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// notice is a notification message of account acct, as the actors store it.
func notice(acct string, n int, routes ...uint16) *store.Frame {
	return &store.Frame{Device: acct, ReceivedAt: 1234, Notice: true, Routes: routes,
		Records: [][]byte{fmt.Appendf(nil, `{"hashId":"n%d"}`, n)}}
}

// A notice survives the segment round trip with its flag, its empty serial and IMEI, and its
// record.
func TestSegmentNoticeFrame(t *testing.T) {
	enc := store.AppendSegment(nil, []*store.Frame{notice("acct", 1, 3), frame("d", 1, 1, 3)})
	seg, err := store.DecodeSegment(1, enc)
	if err != nil {
		t.Fatalf("DecodeSegment = %v", err)
	}
	if got := seg.Frames[0]; !got.Notice || got.Result || got.Device != "acct" || got.Serial != "" ||
		got.IMEI != "" || string(got.Records[0]) != `{"hashId":"n1"}` {
		t.Fatalf("decoded notice frame %+v", got)
	}
	if seg.Frames[1].Notice {
		t.Fatalf("decoded DATA frame %+v has Notice set", seg.Frames[1])
	}
}

// Notices are stored and delivered per route, survive a restart, and retire their segment
// once delivered; they are outside every seq space: a notice whose Device is a device's
// identity moves neither its last stored seq nor its watermark, is never refused as a gap,
// and leaves no device state or checkpoint behind.
func TestNoticeFrames(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	a, _ := s.RouteID("a")
	d2 := frame("d", 2, 2, a)
	d2.PrevSeq = 1
	stray := notice("d", 2, a)
	stray.Seq, stray.PrevSeq = 99, 77
	appendWait(t, s, frame("d", 1, 1, a), notice("acct", 1, a), d2, stray, notice("other", 3))
	checkSeqs(t, s, "d", 2, 0)
	checkSeqs(t, s, "acct", 0, 0)
	if n := len(pendingRefs(t, s, a)); n != 5 { // DATA 1 and 2 hold 3 records
		t.Fatalf("%d records pending on a, want 5", n)
	}
	mustClose(t, s)

	s = open(t, dir)
	checkSeqs(t, s, "d", 2, 0)
	checkSeqs(t, s, "acct", 0, 0)
	notices := 0
	err := s.Pending(a, 0, func(seg *store.Segment, pos []uint32) bool {
		for _, p := range pos {
			if i, _, _ := seg.Locate(p); seg.Frames[i].Notice {
				notices++
			}
		}
		return true
	})
	if err != nil || notices != 2 {
		t.Fatalf("Pending(a) after reopen: %d notices, %v; want 2", notices, err)
	}
	s.MarkDelivered(a, pendingRefs(t, s, a))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
	checkSeqs(t, s, "d", 2, 2)
	mustClose(t, s)

	s = open(t, dir)
	defer mustClose(t, s)
	checkSeqs(t, s, "d", 2, 2)
	checkSeqs(t, s, "acct", 0, 0)
	if st := s.Stats(); st.Devices != 1 {
		t.Errorf("Devices = %d, want 1 (d; notices make no device state)", st.Devices)
	}
}
