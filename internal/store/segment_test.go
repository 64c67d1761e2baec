package store_test

import (
	"bytes"
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
		{Device: "SN2", Serial: "SN2", Seq: 1 << 40, ReceivedAt: -5, Routes: []uint16{1, 2}, Records: [][]byte{[]byte(`{}`)}},
		{Device: "", Seq: 0, Routes: []uint16{65535}},
		{Device: "x", IMEI: "y", Records: [][]byte{{}, []byte(`{"c":[1,2,3]}`)}},
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
	if seg.ID != 9 || seg.Len() != 5 {
		t.Errorf("ID, Len = %d, %d; want 9, 5", seg.ID, seg.Len())
	}
	if got, want := normalize(seg.Frames), normalize(frames); !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeSegment(AppendSegment(f)) =\n%+v\nwant\n%+v", got, want)
	}
	mem := store.NewSegment(9, frames)
	for pos := range uint32(6) {
		fi, ri, ok := mem.Locate(pos)
		dfi, dri, dok := seg.Locate(pos)
		if fi != dfi || ri != dri || ok != dok || ok != (pos < 5) {
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
