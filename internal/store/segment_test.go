package store_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

func sampleFrames() []*store.Frame {
	return []*store.Frame{
		{Device: "356307042441013", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944", Seq: 1, ReceivedAt: 1700000000000,
			Routes: []uint16{1, 2}, Records: [][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`)}},
		{Device: "SN2", Serial: "SN2", Seq: 1 << 40, ReceivedAt: -5, Routes: []uint16{1, 2}, Records: [][]byte{[]byte(`{}`)}, Window: true},
		{Device: "", Seq: 0, Routes: []uint16{65535}},
		{Device: "x", IMEI: "y", Records: [][]byte{{}, []byte(`{"c":[1,2,3]}`)}},
		{Device: "SN1", Serial: "SN1", ReceivedAt: 1700000000001, Routes: []uint16{1, 2},
			Result: true, Task: 42, Code: 1, Records: [][]byte{[]byte(`{"interval":60}`)}},
		{Device: "356307042441013", IMEI: "356307042441013", Routes: []uint16{2},
			Result: true, Task: 1<<64 - 1, Records: [][]byte{[]byte(`{}`)}},
	}
}

// normalize makes nil and empty slices compare equal.
func normalize(fs []*store.Frame) []store.Frame {
	out := make([]store.Frame, len(fs))
	for i, f := range fs {
		out[i] = *f
		if len(f.Routes) == 0 {
			out[i].Routes = nil
		}
		if len(f.Records) == 0 {
			out[i].Records = nil
		}
		for j, r := range out[i].Records {
			if len(r) == 0 {
				out[i].Records[j] = []byte{}
			}
		}
	}
	return out
}

func TestSegmentRoundTrip(t *testing.T) {
	frames := sampleFrames()
	enc := store.AppendSegment([]byte("prefix"), frames)
	if !bytes.HasPrefix(enc, []byte("prefix")) {
		t.Fatal("AppendSegment dropped dst")
	}
	seg, err := store.DecodeSegment(9, enc[len("prefix"):])
	if err != nil {
		t.Fatalf("DecodeSegment = %v", err)
	}
	if seg.ID != 9 || seg.Len() != 7 {
		t.Errorf("ID, Len = %d, %d; want 9, 7", seg.ID, seg.Len())
	}
	if got, want := normalize(seg.Frames), normalize(frames); !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeSegment(AppendSegment(f)) =\n%+v\nwant\n%+v", got, want)
	}
	mem := store.NewSegment(9, frames)
	for pos := range uint32(8) {
		fi, ri, ok := mem.Locate(pos)
		dfi, dri, dok := seg.Locate(pos)
		if fi != dfi || ri != dri || ok != dok || ok != (pos < 7) {
			t.Errorf("Locate(%d) = %d,%d,%v (decoded %d,%d,%v)", pos, fi, ri, ok, dfi, dri, dok)
		}
		if ok && mem.Pos(fi, ri) != pos {
			t.Errorf("Pos(Locate(%d)) = %d", pos, mem.Pos(fi, ri))
		}
	}
	f := func(data []byte, want error) {
		t.Helper()
		if _, err := store.DecodeSegment(1, data); !errors.Is(err, want) {
			t.Errorf("DecodeSegment(%q) = %v, want %v", data, err, want)
		}
	}
	f(nil, store.ErrCorrupt)
	f([]byte{2, 0, 0}, store.ErrVersion)
	f(append(bytes.Clone(enc[len("prefix"):]), 0), store.ErrCorrupt)
	f([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0}, store.ErrCorrupt)
}

// Segments written before result frames existed decode unchanged: this is the encoding of
// two DATA frames by the store as it was before (flags bit 2 unused).
func TestSegmentBeforeResults(t *testing.T) {
	old, err := hex.DecodeString("010203020f33353633303730343234343130313303534e3104383934340780a0abfef96202010202077b2261223a317d" +
		"077b2262223a327d0103534e32000080808080802009010301027b7d")
	if err != nil {
		t.Fatal(err)
	}
	want := []*store.Frame{
		{Device: "356307042441013", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944", Seq: 7, ReceivedAt: 1700000000000,
			Routes: []uint16{1, 2}, Records: [][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`)}},
		{Device: "SN2", Serial: "SN2", Seq: 1 << 40, ReceivedAt: -5, Routes: []uint16{3}, Records: [][]byte{[]byte(`{}`)}},
	}
	seg, err := store.DecodeSegment(3, old)
	if err != nil {
		t.Fatalf("DecodeSegment(old segment) = %v", err)
	}
	if got, want := normalize(seg.Frames), normalize(want); !reflect.DeepEqual(got, want) {
		t.Errorf("old segment decoded as\n%+v\nwant\n%+v", got, want)
	}
	if enc := store.AppendSegment(nil, want); !bytes.Equal(enc, old) {
		t.Errorf("DATA frames encode as %x, want the old encoding %x", enc, old)
	}
}

// A result frame's task and code survive the round trip, and flag bits beyond the known ones
// are still refused.
func TestSegmentResultFrame(t *testing.T) {
	f := &store.Frame{Device: "SN1", Serial: "SN1", ReceivedAt: 5, Routes: []uint16{1},
		Result: true, Task: 300, Code: 1, Records: [][]byte{[]byte(`{"ok":false}`)}}
	enc := store.AppendSegment(nil, []*store.Frame{f})
	seg, err := store.DecodeSegment(1, enc)
	if err != nil {
		t.Fatalf("DecodeSegment = %v", err)
	}
	if got := seg.Frames[0]; !got.Result || got.Task != 300 || got.Code != 1 || got.Seq != 0 ||
		string(got.Records[0]) != `{"ok":false}` {
		t.Fatalf("decoded result frame %+v", got)
	}
	// Header: version, frame count, record count; then the flags byte.
	if enc[3] != 1|4 {
		t.Fatalf("flags byte = %#x, want Serial==Device and Result", enc[3])
	}
	bad := bytes.Clone(enc)
	bad[3] |= 32 // bits 0-4 are known (notice.go: bit 4)
	if _, err := store.DecodeSegment(1, bad); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("unknown flag bit: DecodeSegment = %v, want ErrCorrupt", err)
	}
	plain := *f
	plain.Result, plain.Task, plain.Code = false, 0, 0
	if n, m := len(enc), len(store.AppendSegment(nil, []*store.Frame{&plain})); n != m+3 {
		t.Errorf("result frame encodes in %d bytes, the same DATA frame in %d; want 3 more (task 300, code)", n, m)
	}
}

func TestAppendSegmentAllocs(t *testing.T) {
	frames := sampleFrames()
	buf := store.AppendSegment(nil, frames)
	if n := testing.AllocsPerRun(100, func() { buf = store.AppendSegment(buf[:0], frames) }); n != 0 {
		t.Errorf("AppendSegment into a large enough buffer: %v allocs, want 0", n)
	}
}

func FuzzDecodeSegment(f *testing.F) {
	enc := store.AppendSegment(nil, sampleFrames())
	for i := range len(enc) + 1 {
		f.Add(bytes.Clone(enc[:i]))
	}
	f.Add(store.AppendSegment(nil, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		data = bytes.Clone(data) // the segment keeps sub-slices
		seg, err := store.DecodeSegment(1, data)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) && !errors.Is(err, store.ErrVersion) {
				t.Fatalf("DecodeSegment error %v wraps neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		n := 0
		for i, fr := range seg.Frames {
			for j := range fr.Records {
				if p := seg.Pos(i, j); p != uint32(n) {
					t.Fatalf("Pos(%d,%d) = %d, want %d", i, j, p, n)
				}
				n++
			}
		}
		if n != seg.Len() {
			t.Fatalf("Len() = %d, frames hold %d records", seg.Len(), n)
		}
		again, err := store.DecodeSegment(1, store.AppendSegment(nil, seg.Frames))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if got, want := normalize(again.Frames), normalize(seg.Frames); !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip changed frames:\n%v\n%v", fmt.Sprint(got), fmt.Sprint(want))
		}
	})
}
