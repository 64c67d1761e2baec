package actors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/netio"
)

// tconn is a netio.Conn that decodes what is written to it and remembers being closed.
type tconn struct {
	mu       sync.Mutex
	welcomes []native.Welcome
	acks     []uint64
	closed   bool
}

func (c *tconn) Write(frame []byte) {
	typ, body, _, err := native.Next(frame, native.MaxFrameLimit)
	if err != nil {
		panic(fmt.Sprintf("relay wrote % x: %v", frame, err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch typ {
	case native.TypeWelcome:
		w, err := native.ParseWelcome(body)
		if err != nil {
			panic(err)
		}
		c.welcomes = append(c.welcomes, w)
	case native.TypeAck:
		seq, err := native.ParseAck(body)
		if err != nil {
			panic(err)
		}
		c.acks = append(c.acks, seq)
	}
}
func (c *tconn) Fail(uint16, string)    { c.Close() }
func (c *tconn) Close()                 { c.mu.Lock(); c.closed = true; c.mu.Unlock() }
func (c *tconn) Remote() netip.AddrPort { return netip.AddrPort{} }
func (c *tconn) Datagram() bool         { return false }

func (c *tconn) state() (welcomes []native.Welcome, acks []uint64, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]native.Welcome(nil), c.welcomes...), append([]uint64(nil), c.acks...), c.closed
}

func (c *tconn) lastAck() uint64 {
	_, acks, _ := c.state()
	if len(acks) == 0 {
		return 0
	}
	return acks[len(acks)-1]
}

func open(t *testing.T, sys *actors.System, c netio.Conn, serial string) netio.Session {
	t.Helper()
	s, err := sys.Open(c, &native.Hello{Serial: serial, ICCID: "89" + serial})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitActors(t *testing.T, sys *actors.System, want int64) {
	t.Helper()
	poll(t, func() error {
		if n := sys.DeviceActors(); n != want {
			return fmt.Errorf("%d device actors, want %d", n, want)
		}
		return nil
	})
}

// A connection that only said HELLO is welcomed at once and holds no actor; its first DATA
// spawns one, which stores and acknowledges it, and goes back to sleep when the device is quiet.
// Acknowledgements, identity fields, replacement and retirement work across the sleeps.
func TestHelloOnlyHoldsNoActor(t *testing.T) {
	j := &journal{last: map[string]uint64{"A": 5}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 4096, Journal: j, DeviceIdle: 20 * time.Millisecond})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })

	c1 := &tconn{}
	s1 := open(t, sys, c1, "A")
	if w, acks, _ := c1.state(); len(w) != 1 || w[0].LastSeq != 5 || w[0].Ack != actors.AckPersist || w[0].MaxFrame != 4096 || len(acks) != 0 {
		t.Fatalf("after HELLO: welcomes %+v, acks %v; want one WELCOME with lastSeq 5 at once", w, acks)
	}
	if n := sys.DeviceActors(); n != 0 {
		t.Fatalf("%d device actors after HELLO only, want 0", n)
	}

	s1.Data(6, [][]byte{[]byte(`{"a":1}`)}, nil)
	poll(t, func() error {
		if a := c1.lastAck(); a != 6 {
			return fmt.Errorf("last ACK %d, want 6", a)
		}
		return nil
	})
	j.mu.Lock()
	f := j.frames[0]
	j.mu.Unlock()
	if f.Seq != 6 || f.PrevSeq != 5 || f.Serial != "A" || f.ICCID != "89A" {
		t.Errorf("stored frame seq %d prev %d serial %q iccid %q", f.Seq, f.PrevSeq, f.Serial, f.ICCID)
	}
	waitActors(t, sys, 0) // quiet for DeviceIdle: the entry keeps the connection, not the actor

	s1.Data(6, [][]byte{[]byte(`{"a":1}`)}, nil) // a resend wakes it and is answered again
	s1.Data(7, [][]byte{[]byte(`{"a":2}`)}, nil)
	poll(t, func() error {
		if _, acks, _ := c1.state(); fmt.Sprint(acks) != "[6 6 7]" {
			return fmt.Errorf("ACKs %v, want [6 6 7]", acks)
		}
		return nil
	})
	if seqs, _ := j.stored("A"); fmt.Sprint(seqs) != "[6 7]" {
		t.Fatalf("stored %v, want [6 7]", seqs)
	}
	waitActors(t, sys, 0)

	// A new connection replaces the dormant one, without an actor.
	c2 := &tconn{}
	s2 := open(t, sys, c2, "A")
	if w, _, _ := c2.state(); len(w) != 1 || w[0].LastSeq != 7 {
		t.Fatalf("second connection's welcomes %+v, want lastSeq 7", w)
	}
	if _, _, closed := c1.state(); !closed {
		t.Fatal("the replaced connection is still open")
	}
	if n := sys.DeviceActors(); n != 0 {
		t.Fatalf("%d device actors after a second HELLO, want 0", n)
	}
	s1.Closed() // the old connection's close does not touch the new one
	s2.Data(8, [][]byte{[]byte(`{"a":3}`)}, nil)
	poll(t, func() error {
		if a := c2.lastAck(); a != 8 {
			return fmt.Errorf("last ACK %d, want 8", a)
		}
		return nil
	})
	if a := c1.lastAck(); a != 7 {
		t.Errorf("replaced connection's last ACK %d, want 7", a)
	}
	waitActors(t, sys, 0)

	// Closing a dormant connection forgets the identity; a reconnect starts from the journal.
	s2.Closed()
	c3 := &tconn{}
	open(t, sys, c3, "A")
	if w, _, _ := c3.state(); len(w) != 1 || w[0].LastSeq != 8 {
		t.Fatalf("third connection's welcomes %+v, want lastSeq 8", w)
	}
	if err := sys.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Ack mode delivery: the delivered watermark reaches a dormant connection without an actor.
func TestDeliveredAckWhileDormant(t *testing.T) {
	j := &journal{last: map[string]uint64{"D": 3}}
	sys := actors.New(actors.Options{AckMode: actors.AckDelivery, Journal: j, DeviceIdle: time.Hour})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	c := &tconn{}
	open(t, sys, c, "D")
	if w, acks, _ := c.state(); len(w) != 1 || w[0].LastSeq != 3 || fmt.Sprint(acks) != "[3]" {
		t.Fatalf("welcomes %+v, acks %v; want lastSeq 3 and ACK 3", w, acks)
	}
	sys.OnDelivered("D", 3) // nothing new
	sys.OnDelivered("D", 4)
	sys.OnDelivered("nobody", 9)
	if _, acks, _ := c.state(); fmt.Sprint(acks) != "[3 4]" {
		t.Fatalf("acks %v, want [3 4]", acks)
	}
	if n := sys.DeviceActors(); n != 0 {
		t.Fatalf("%d device actors, want 0", n)
	}
}

// Many devices sending with pauses around a 1 ms idle time, so their actors sleep and wake
// while frames, commits and closes race: every frame is stored once, in order, and acknowledged.
func TestSleepWakeRace(t *testing.T) {
	j := &journal{last: map[string]uint64{}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, Journal: j, DeviceIdle: time.Millisecond})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	const devices, frames = 40, 60
	var wg sync.WaitGroup
	var failed atomic.Value
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("R%d", d)
			rng := rand.New(rand.NewPCG(uint64(d), 1))
			c := &tconn{}
			s := open(t, sys, c, id)
			for seq := uint64(1); seq <= frames; seq++ {
				s.Data(seq, [][]byte{[]byte(`{}`)}, nil)
				if rng.IntN(3) == 0 {
					time.Sleep(time.Duration(rng.IntN(2500)) * time.Microsecond)
				}
				if seq%20 == 0 { // reconnect now and then, with frames maybe still in flight
					deadline := time.Now().Add(10 * time.Second)
					for c.lastAck() != seq && time.Now().Before(deadline) {
						time.Sleep(100 * time.Microsecond)
					}
					s.Closed()
					c = &tconn{}
					s = open(t, sys, c, id)
					for { // at once if the entry is dormant, from its actor if not
						w, _, _ := c.state()
						if len(w) == 1 && w[0].LastSeq == seq {
							break
						}
						if len(w) > 1 || len(w) == 1 && w[0].LastSeq != seq || time.Now().After(deadline) {
							failed.Store(fmt.Errorf("%s reconnect after %d: welcomes %+v", id, seq, w))
							return
						}
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			s.Closed()
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	for d := range devices {
		id := fmt.Sprintf("R%d", d)
		seqs, _ := j.stored(id)
		if len(seqs) != frames {
			t.Fatalf("%s: stored %d frames, want %d", id, len(seqs), frames)
		}
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("%s: stored seqs %v", id, seqs)
			}
		}
	}
	waitActors(t, sys, 0)
	if err := sys.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
}
