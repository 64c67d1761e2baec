package actors_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
)

// After the store refuses a frame, the relay fails the connection. Frames the device had already
// sent on it must not be stored behind the refused one: WELCOME's lastSeq would then cover the
// refused frame and the device would never resend it.
func TestNoFrameStoredAfterRefusalOnFailedConnection(t *testing.T) {
	j := &journal{last: map[string]uint64{}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 4096, Journal: j, DeviceIdle: time.Hour})
	defer sys.Stop(context.Background())

	c := &tconn{}
	s := open(t, sys, c, "R1")
	s.Data(1, lines(1), nil)
	poll(t, func() error {
		if c.lastAck() != 1 {
			return fmt.Errorf("ack %d, want 1", c.lastAck())
		}
		return nil
	})
	j.mu.Lock()
	j.refuse = 1
	j.mu.Unlock()
	s.Data(2, lines(1), nil) // refused: the connection is failed
	poll(t, func() error {
		if _, _, closed := c.state(); !closed {
			return fmt.Errorf("connection not failed after the refusal")
		}
		return nil
	})
	s.Data(3, lines(1), nil) // was already on its way on the failed connection
	s.Data(4, lines(1), nil)
	if err := sys.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := j.stored("R1"); !slices.Equal(seqs, []uint64{1}) {
		t.Fatalf("stored seqs %v, want [1]: a frame after the refused one was stored on the failed connection", seqs)
	}
	if ack := c.lastAck(); ack != 1 {
		t.Fatalf("last ACK %d, want 1", ack)
	}

	// The device reconnects: WELCOME says 1, it resends 2..4, all stored in order.
	c2 := &tconn{}
	s2 := open(t, sys, c2, "R1")
	poll(t, func() error {
		if w, _, _ := c2.state(); len(w) != 1 || w[0].LastSeq != 1 {
			return fmt.Errorf("welcomes %+v, want lastSeq 1", w)
		}
		return nil
	})
	for seq := uint64(2); seq <= 4; seq++ {
		s2.Data(seq, lines(1), nil)
	}
	poll(t, func() error {
		if seqs, _ := j.stored("R1"); !slices.Equal(seqs, []uint64{1, 2, 3, 4}) {
			return fmt.Errorf("stored seqs %v, want [1 2 3 4]", seqs)
		}
		if c2.lastAck() != 4 {
			return fmt.Errorf("ack %d, want 4", c2.lastAck())
		}
		return nil
	})
}

// Frames still arriving on a connection that is no longer the device's current one (it was
// replaced, or failed after a store refusal) are ignored: never stored, never acknowledged. The
// device resends them on its new connection from WELCOME's lastSeq.
func TestFramesFromReplacedConnectionIgnored(t *testing.T) {
	j := &journal{last: map[string]uint64{}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 4096, Journal: j, DeviceIdle: time.Hour})
	defer sys.Stop(context.Background())

	c1 := &tconn{}
	s1 := open(t, sys, c1, "R2")
	s1.Data(1, lines(1), nil) // wakes the actor
	poll(t, func() error {
		if c1.lastAck() != 1 {
			return fmt.Errorf("ack %d, want 1", c1.lastAck())
		}
		return nil
	})
	c2 := &tconn{}
	s2 := open(t, sys, c2, "R2") // replaces c1
	poll(t, func() error {
		if w, _, _ := c2.state(); len(w) != 1 {
			return fmt.Errorf("no WELCOME on the new connection")
		}
		if _, _, closed := c1.state(); !closed {
			return fmt.Errorf("the replaced connection is open")
		}
		return nil
	})
	s1.Data(2, lines(1), nil) // late, on the replaced connection
	if err := sys.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := j.stored("R2"); !slices.Equal(seqs, []uint64{1}) {
		t.Fatalf("stored seqs %v, want [1]", seqs)
	}
	if _, acks, _ := c2.state(); len(acks) != 0 {
		t.Fatalf("ACKs %v on the new connection for a frame it did not send", acks)
	}
	s2.Data(2, lines(1), nil)
	poll(t, func() error {
		if seqs, _ := j.stored("R2"); !slices.Equal(seqs, []uint64{1, 2}) {
			return fmt.Errorf("stored seqs %v, want [1 2]", seqs)
		}
		return nil
	})
}
