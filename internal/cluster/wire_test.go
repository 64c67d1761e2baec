package cluster

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

func TestWireFrameRoundTrip(t *testing.T) {
	for _, f := range []*store.Frame{
		{Device: "dev-1", Serial: "dev-1", Seq: 42, ReceivedAt: 1700000000000, Records: [][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`)}, Routes: []uint16{1, 7}},
		{Device: "356307042441013", IMEI: "356307042441013", ICCID: "8944", Seq: 9, Window: true, Records: [][]byte{[]byte(`{}`)}},
		{Device: "d", Serial: "d", Result: true, Task: 77, Code: 1, Records: [][]byte{[]byte(`{"x":true}`)}, Routes: []uint16{3}},
	} {
		got, err := DecodeFrame(EncodeFrame(nil, f))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, f) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, f)
		}
	}
	if _, err := DecodeFrame([]byte{1, 2, 3}); err == nil {
		t.Error("garbage decoded")
	}
	two := store.AppendSegment(nil, []*store.Frame{{Device: "a", Seq: 1}, {Device: "b", Seq: 1}})
	if _, err := DecodeFrame(two); err == nil {
		t.Error("a message of two frames decoded as one")
	}
}

func TestWireSubjects(t *testing.T) {
	cases := map[string]string{"dev-1_A": "dev-1_A", "a.b": "~612e62", "x y": "~782079", "": "~", "*": "~2a"}
	for id, want := range cases {
		if got := Token(id); got != want {
			t.Errorf("Token(%q) = %q, want %q", id, got, want)
		}
	}
	if got := Token(strings.Repeat("a", 129)); !strings.HasPrefix(got, "~") {
		t.Errorf("a 129-byte identity kept as its token")
	}
	f := &store.Frame{Device: "a.b", Seq: 5}
	subj := JournalSubject("fr", f, 8)
	p := Partition("a.b", 8)
	if subj != DeviceSubject("fr", "a.b", 8) || !strings.HasSuffix(subj, ".~612e62") {
		t.Errorf("subject %q", subj)
	}
	if got, ok := SubjectPartition("fr", subj); !ok || got != p {
		t.Errorf("SubjectPartition(%q) = %d %v, want %d", subj, got, ok, p)
	}
	if !strings.HasPrefix(subj, strings.TrimSuffix(PartitionFilter("fr", p), ">")) {
		t.Errorf("%q is not under %q", subj, PartitionFilter("fr", p))
	}
	for _, bad := range []string{"fr.registry", "fr.j.x.d", "fr.j.3", "other.j.1.d"} {
		if _, ok := SubjectPartition("fr", bad); ok {
			t.Errorf("SubjectPartition(%q) accepted", bad)
		}
	}
	if MsgID(f) != "~612e62:5" || MsgID(&store.Frame{Device: "d", Result: true}) != "" {
		t.Errorf("MsgID")
	}
	if n := JournalSubject("fr", &store.Frame{Notice: true}, 8); n != "fr.j.0.~notice" {
		t.Errorf("notice subject %q", n)
	}
	// Spread: 10,000 identities over 32 partitions, none empty or more than twice its share.
	var counts [32]int
	for i := range 10000 {
		counts[Partition("dev-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+strconv.Itoa(i), 32)]++
	}
	for p, c := range counts {
		if c == 0 || c > 2*10000/32 {
			t.Errorf("partition %d holds %d of 10,000", p, c)
		}
	}
}
