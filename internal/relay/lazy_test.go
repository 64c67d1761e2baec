package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

func waitAcked(t *testing.T, d *loadgen.Device, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// Through the real relay: devices that only said HELLO are welcomed and hold no device actor;
// DATA after the HELLO is stored, delivered and acknowledged; a second connection of an identity
// still replaces the first, with or without an actor; WELCOME reports what was stored.
func TestRelayHelloOnlyHoldsNoActor(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Devices.Native.UDP = ""
	r := startRelay(t, cfg)
	devs := make([]*loadgen.Device, 5)
	for i := range devs {
		devs[i] = connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: fmt.Sprintf("L%d", i)}, 1)
		if w := devs[i].Welcome(); w.LastSeq != 0 || w.Ack != "persist" {
			t.Fatalf("L%d WELCOME %+v", i, w)
		}
	}
	if n := metric(t, r, "fleetrelay_device_connections"); n != 5 {
		t.Fatalf("%v connections, want 5", n)
	}
	if n := metric(t, r, "fleetrelay_device_actors"); n != 0 {
		t.Fatalf("%v device actors for 5 HELLO-only connections, want 0", n)
	}

	for i := 0; i < 3; i++ {
		if _, err := devs[0].Send([]byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitAcked(t, devs[0], 3)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 3 {
			return fmt.Errorf("sink has %d of 3 messages", n)
		}
		return nil
	})
	if n := metric(t, r, "fleetrelay_device_actors"); n != 1 {
		t.Fatalf("%v device actors after one device sent DATA, want 1", n)
	}

	// Replacing a connection that has no actor, then one that has.
	for _, c := range []struct {
		old     *loadgen.Device
		serial  string
		lastSeq uint64
	}{{devs[1], "L1", 0}, {devs[0], "L0", 3}} {
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: c.serial}, c.lastSeq+1)
		if w := d.Welcome(); w.LastSeq != c.lastSeq {
			t.Fatalf("%s second connection: WELCOME lastSeq %d, want %d", c.serial, w.LastSeq, c.lastSeq)
		}
		checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if c.old.Err() == nil {
				return fmt.Errorf("first connection still open")
			}
			return nil
		})
		if _, err := d.Send([]byte(`{"after":"replace"}`)); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, d, c.lastSeq+1)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n != 5 {
			return fmt.Errorf("sink has %d of 5 messages", n)
		}
		return nil
	})
	for _, d := range devs[2:] { // the quiet ones are still connected
		if err := d.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n := metric(t, r, "fleetrelay_device_connections"); n != 5 {
		t.Fatalf("%v connections, want 5", n)
	}
}
