package actors

import (
	"strconv"
	"testing"
)

// The dedupe window keeps the keys of an identity's last telWindowPackets packets with the seq of
// the frame that stored them; older packets fall out, and a store refusal drops the keys of the
// frames above the seq the identity restarts from.
func TestTelWindow(t *testing.T) {
	var w telWindow
	f := func(h, wantSeq uint64, wantOK bool) {
		t.Helper()
		if seq, ok := w.find(h); seq != wantSeq || ok != wantOK {
			t.Errorf("find(%d) = %d, %v, want %d, %v", h, seq, ok, wantSeq, wantOK)
		}
	}
	for p := range uint64(telWindowPackets) {
		w.add([]telKey{{hash: 100 + p, seq: p + 1}, {hash: 200 + p, seq: p + 1}})
	}
	f(100, 1, true)
	f(203, 4, true)
	w.add([]telKey{{hash: 500, seq: 5}}) // the first packet falls out
	f(100, 0, false)
	f(200, 0, false)
	f(101, 2, true)
	f(500, 5, true)
	w.drop(3) // frames 4 and 5 were refused
	f(203, 0, false)
	f(500, 0, false)
	f(102, 3, true)
}

// The windows are bounded: at telMaxWindows identities a new one replaces an arbitrary one.
func TestTelWindowsBounded(t *testing.T) {
	s := &System{}
	for i := range telMaxWindows + 10 {
		s.telWindow(strconv.Itoa(i))
	}
	if n := len(s.tel.windows); n != telMaxWindows {
		t.Fatalf("%d windows, want %d", n, telMaxWindows)
	}
}
