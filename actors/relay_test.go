package actors_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// startLazyRelay is a real relay on loopback port 0 delivering to a sink.
func startLazyRelay(t *testing.T) (*relay.Relay, *loadgen.Sink) {
	t.Helper()
	sink, err := loadgen.StartSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Devices.Native.TCP = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Delivery.AllowPrivateNetworks = true
	rt := config.DefaultRoute()
	rt.Name = "test"
	rt.URL = sink.URL() + "/ingest/[SERIAL]"
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, rt)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return r, sink
}

// relayMetric reads one unlabelled sample from the relay's /metrics.
func relayMetric(t *testing.T, r *relay.Relay, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

func dial(t *testing.T, r *relay.Relay, serial string, first uint64) *loadgen.Device {
	t.Helper()
	d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTCPAddr().String(), Hello: native.Hello{Serial: serial}}, first)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", serial, err)
	}
	t.Cleanup(d.Close)
	return d
}

func waitAcked(t *testing.T, d *loadgen.Device, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

func within(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Through the real relay: devices that only said HELLO are welcomed and hold no device actor;
// DATA after the HELLO is stored, delivered and acknowledged; a second connection of an identity
// still replaces the first, with or without an actor; WELCOME reports what was stored.
func TestRelayHelloOnlyHoldsNoActor(t *testing.T) {
	r, sink := startLazyRelay(t)
	devs := make([]*loadgen.Device, 5)
	for i := range devs {
		devs[i] = dial(t, r, fmt.Sprintf("L%d", i), 1)
		if w := devs[i].Welcome(); w.LastSeq != 0 || w.Ack != "persist" {
			t.Fatalf("L%d WELCOME %+v", i, w)
		}
	}
	if n := relayMetric(t, r, "fleetrelay_device_connections"); n != 5 {
		t.Fatalf("%v connections, want 5", n)
	}
	if n := relayMetric(t, r, "fleetrelay_device_actors"); n != 0 {
		t.Fatalf("%v device actors for 5 HELLO-only connections, want 0", n)
	}

	for i := 0; i < 3; i++ {
		if _, err := devs[0].Send([]byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitAcked(t, devs[0], 3)
	within(t, "delivery", func() error {
		if n := sink.Stats().Unique; n != 3 {
			return fmt.Errorf("sink has %d of 3 messages", n)
		}
		return nil
	})
	if n := relayMetric(t, r, "fleetrelay_device_actors"); n != 1 {
		t.Fatalf("%v device actors after one device sent DATA, want 1", n)
	}

	// Replacing a connection that has no actor, then one that has.
	for _, c := range []struct {
		old     *loadgen.Device
		serial  string
		lastSeq uint64
	}{{devs[1], "L1", 0}, {devs[0], "L0", 3}} {
		d := dial(t, r, c.serial, c.lastSeq+1)
		if w := d.Welcome(); w.LastSeq != c.lastSeq {
			t.Fatalf("%s second connection: WELCOME lastSeq %d, want %d", c.serial, w.LastSeq, c.lastSeq)
		}
		within(t, c.serial+" replaced", func() error {
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
	within(t, "delivery", func() error {
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
	if n := relayMetric(t, r, "fleetrelay_device_connections"); n != 5 {
		t.Fatalf("%v connections, want 5", n)
	}
}
