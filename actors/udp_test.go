package actors_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/native"
)

// uconn is a UDP source: ACKs written to it name exactly their seq.
type uconn struct{ tconn }

func (c *uconn) Datagram() bool { return true }

func wantAcks(t *testing.T, c *uconn, want ...uint64) {
	t.Helper()
	slices.Sort(want)
	poll(t, func() error {
		_, acks, _ := c.state()
		slices.Sort(acks)
		if !slices.Equal(acks, want) {
			return fmt.Errorf("ACKs %v, want %v", acks, want)
		}
		return nil
	})
}

// Datagrams out of order and twice, some while their first copy is still on its way to the store:
// each seq is stored once, each ACK names exactly its seq (never a cumulative one), a resend of a
// stored seq is acknowledged again, and a datagram on its way is acknowledged by its commit only.
func TestDatagramsAreAckedSelectively(t *testing.T) {
	j := &journal{last: map[string]uint64{"U": 2}} // seqs 1 and 2 stored before, over TCP
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 4096, Journal: j, DeviceIdle: time.Hour})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	c := &uconn{}
	send := func(seqs ...uint64) {
		for _, seq := range seqs {
			sys.UData(c, &native.UData{Identity: []byte("U"), Seq: seq, Records: [][]byte{[]byte(`{}`)}}, nil)
		}
	}
	j.mu.Lock()
	j.hold = true
	j.mu.Unlock()
	send(5, 3, 5, 2, 0)
	wantAcks(t, c, 2) // 2 was stored; 5 and 3 are on their way; 0 is no seq
	poll(t, func() error {
		j.mu.Lock()
		defer j.mu.Unlock()
		if len(j.held) != 2 {
			return fmt.Errorf("%d appends held, want 2", len(j.held))
		}
		return nil
	})
	send(3, 5) // still on their way: dropped
	j.release()
	wantAcks(t, c, 2, 3, 5)
	send(4, 3, 6)
	wantAcks(t, c, 2, 3, 5, 4, 3, 6)
	if seqs, _ := j.stored("U"); !slices.Equal(seqs, []uint64{5, 3, 4, 6}) {
		t.Errorf("stored seqs %v, want [5 3 4 6]", seqs)
	}
	for _, f := range j.frames {
		if !f.Window || f.PrevSeq != 0 {
			t.Errorf("datagram frame %d: Window %v, PrevSeq %d; want windowed, not chained", f.Seq, f.Window, f.PrevSeq)
		}
	}
}

// A datagram the store refuses is answered ERROR (tconn.Fail), not acknowledged, and its resend
// is stored.
func TestRefusedDatagramIsStoredWhenResent(t *testing.T) {
	j := &journal{last: map[string]uint64{}, refuse: 1}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 4096, Journal: j, DeviceIdle: time.Hour})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	c := &uconn{}
	send := func(seq uint64) {
		sys.UData(c, &native.UData{Identity: []byte("U"), Seq: seq, Records: [][]byte{[]byte(`{}`)}}, nil)
	}
	send(1)
	send(2)
	wantAcks(t, c, 2)
	if _, _, failed := c.state(); !failed {
		t.Error("no ERROR answered the refused datagram")
	}
	send(1)
	wantAcks(t, c, 1, 2)
	if seqs, _ := j.stored("U"); !slices.Equal(seqs, []uint64{2, 1}) {
		t.Errorf("stored seqs %v, want [2 1]", seqs)
	}
}
