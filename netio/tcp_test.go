package netio

import (
	"encoding/binary"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// countRecords sizes the records slice of a DATA frame exactly for well-formed bodies and never
// panics on malformed ones (ParseData refuses those).
func TestCountRecords(t *testing.T) {
	f := func(body []byte, want int) {
		t.Helper()
		if got := countRecords(body); got != want {
			t.Errorf("countRecords(% x) = %d, want %d", body, got, want)
		}
	}
	data := func(recs ...string) []byte {
		b := make([]byte, 8)
		for _, r := range recs {
			b = binary.BigEndian.AppendUint32(b, uint32(len(r)))
			b = append(b, r...)
		}
		return b
	}
	f(nil, 0)
	f(make([]byte, 7), 0)
	f(data(), 0)
	f(data(`{}`), 1)
	f(data(`{"a":1}`, `{}`, `{"b":[1,2]}`), 3)
	f(data(``, `{}`), 2)
	long := data(`{"a":1}`)
	binary.BigEndian.PutUint32(long[8:], 1000) // record longer than the frame
	f(long, 1)
	f(append(data(`{}`), 0, 0), 1) // truncated length: ParseData refuses the frame
	for i := 0; i <= 12; i++ {
		countRecords(data(`{"x":1}`)[:i]) // any prefix: no panic
	}
	body := data(`{"a":1}`, `{"b":2}`)
	_, recs, err := native.ParseData(body, make([][]byte, 0, countRecords(body)))
	if err != nil || len(recs) != 2 || cap(recs) != 2 {
		t.Errorf("ParseData: %d records (cap %d), %v", len(recs), cap(recs), err)
	}
}
