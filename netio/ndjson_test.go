package netio

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// recorder is a Dispatcher that keeps what Lines receives.
type recorder struct {
	calls []linesCall
}

type linesCall struct {
	id      string
	imei    bool
	records [][]byte
}

func (r *recorder) Open(Conn, *native.Hello) (Session, error) { return nil, nil }
func (r *recorder) UData(Conn, *native.UData, []byte)         {}
func (r *recorder) Lines(id string, imei bool, _ netip.AddrPort, records [][]byte, _ func()) {
	r.calls = append(r.calls, linesCall{id, imei, records})
}

// One read's lines become one call per identity, in order of first appearance, each holding that
// identity's lines in order, copied out of the read buffer.
func TestLineBatchGroups(t *testing.T) {
	buf := []byte("A0\nB0\nA1\nC0\nB1\n")
	ids := []string{"A", "B", "A", "C", "B"}
	b := batches.Get().(*lineBatch)
	for i, id := range ids {
		b.add([]byte(id), 3*i, 3*i+2)
	}
	var r recorder
	b.dispatch(buf, &r, true, netip.AddrPort{}, nil)
	batches.Put(b.reset())
	clear(buf) // the records are copies

	var got []string
	for _, c := range r.calls {
		if !c.imei {
			t.Errorf("call for %s lost imei", c.id)
		}
		got = append(got, fmt.Sprintf("%s:%q", c.id, c.records))
	}
	want := []string{`A:["A0" "A1"]`, `B:["B0" "B1"]`, `C:["C0"]`}
	if !slices.Equal(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	// A callee appending to its records cannot overwrite another identity's.
	a := r.calls[0].records
	a[0] = append(a[0], 'x')
	_ = append(a, []byte("extra"))
	if string(r.calls[1].records[0]) != "B0" || string(a[1]) != "A1" {
		t.Fatalf("records overlap: %q %q", r.calls[1].records, a)
	}
}

// Steady state, a read costs two allocations (the copy and its slice headers) plus one string per
// identity; the batch itself is reused (pooled in OnTraffic).
func TestLineBatchAllocs(t *testing.T) {
	buf := []byte("A0\nB0\nA1\nC0\nB1\n")
	ids := [][]byte{[]byte("A"), []byte("B"), []byte("A"), []byte("C"), []byte("B")}
	r := &recorder{calls: make([]linesCall, 0, 1000)}
	b := batches.New().(*lineBatch)
	n := testing.AllocsPerRun(100, func() {
		for i, id := range ids {
			b.add(id, 3*i, 3*i+2)
		}
		b.dispatch(buf, r, false, netip.AddrPort{}, nil)
		b.reset()
		r.calls = r.calls[:0]
	})
	if n > 5 {
		t.Errorf("a read of 5 lines for 3 identities allocates %v times, want at most 5", n)
	}
}
