package actors_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/netio"
)

// MaxUnknown counts only identities without metadata: at the cap a new one is refused (HELLO:
// an error wrapping netio.ErrBusy; datagrams and NDJSON lines: dropped, the lines' done still
// called), a device of the fleet is not, and an unknown identity forgotten (its connection
// closed) frees its place.
func TestMaxUnknown(t *testing.T) {
	j := &journal{last: map[string]uint64{}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 4096, Journal: j, DeviceIdle: time.Hour,
		MaxUnknown: 2, Fleet: map[string]*actors.DeviceMeta{"KNOWN": {}}})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	open := func(id string) (netio.Session, error) {
		return sys.Open(&tconn{}, &native.Hello{Serial: id})
	}
	a, err := open("A")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open("B"); err != nil {
		t.Fatal(err)
	}
	if _, err := open("C"); !errors.Is(err, netio.ErrBusy) {
		t.Fatalf("Open of a third unknown identity = %v, want ErrBusy", err)
	}
	if _, err := open("KNOWN"); err != nil {
		t.Fatalf("Open of a fleet device at the cap = %v", err)
	}
	if _, err := open("A"); err != nil { // a known entry: a reconnect is not a new identity
		t.Fatalf("reconnect of A at the cap = %v", err)
	}
	u := &uconn{}
	sys.UData(u, &native.UData{Identity: []byte("D"), Seq: 1, Records: [][]byte{[]byte(`{}`)}}, nil)
	var lines doneCount
	sys.Lines("E", false, netip.AddrPort{}, [][]byte{[]byte(`{}`)}, lines.done)
	if lines.n.Load() != 1 {
		t.Errorf("done called %d times for refused lines, want 1", lines.n.Load())
	}
	if n, r := sys.UnknownIdentities(), sys.UnknownRefused(); n != 2 || r != 3 {
		t.Errorf("%d unknown identities, %d refused; want 2, 3", n, r)
	}
	if seqs, _ := j.stored("D"); len(seqs) != 0 {
		t.Errorf("refused datagram stored: %v", seqs)
	}

	a.Closed() // the first connection of A: replaced already, so A stays
	if n := sys.UnknownIdentities(); n != 2 {
		t.Errorf("%d unknown identities after a replaced connection closed, want 2", n)
	}
	if _, err := open("B2"); !errors.Is(err, netio.ErrBusy) {
		t.Fatalf("Open of B2 = %v, want ErrBusy", err)
	}
	bs, err := open("B") // replaces B's connection; then closing it forgets B
	if err != nil {
		t.Fatal(err)
	}
	bs.Closed()
	poll(t, func() error {
		if n := sys.UnknownIdentities(); n != 1 {
			return fmt.Errorf("%d unknown identities after B left, want 1", n)
		}
		return nil
	})
	if _, err := open("B2"); err != nil {
		t.Fatalf("Open of B2 after B left = %v", err)
	}
	sys.UData(u, &native.UData{Identity: []byte("D"), Seq: 1, Records: [][]byte{[]byte(`{}`)}}, nil)
	if r := sys.UnknownRefused(); r != 5 {
		t.Errorf("%d refused, want 5", r)
	}
}
