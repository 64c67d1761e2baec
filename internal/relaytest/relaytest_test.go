package relaytest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

// connectAndSend connects a device to addr, sends one record and waits for its ACK.
func connectAndSend(t *testing.T, addr, serial string) {
	t.Helper()
	d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: addr, Hello: native.Hello{Serial: serial}}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	seq, err := d.Send([]byte(`{"t":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAcked(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// waitDelivered waits until sink holds serial's first message.
func waitDelivered(t *testing.T, sink *loadgen.Sink, serial string) {
	t.Helper()
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if sink.Count(loadgen.MsgKey{Device: serial, Seq: 1}) != 1 {
			return fmt.Errorf("%s's message not delivered", serial)
		}
		return nil
	})
}

// Start runs a relay on ports of its own with its store under the test's directory, delivering
// to the sink of StartSink.
func TestStart(t *testing.T) {
	sink := relaytest.StartSink(t)
	cfg := relaytest.Config(t, sink.URL())
	r := relaytest.Start(t, cfg)
	if entries, err := os.ReadDir(cfg.DataDir); err != nil || len(entries) == 0 {
		t.Fatalf("data directory %s: %d entries, %v; want the store there", cfg.DataDir, len(entries), err)
	}
	if r.DeviceTCPAddr() == nil || r.DeviceUDPAddr() == nil || r.AdminAddr() == nil {
		t.Fatalf("listeners: tcp %v, udp %v, admin %v; want all three", r.DeviceTCPAddr(), r.DeviceUDPAddr(), r.AdminAddr())
	}
	connectAndSend(t, r.DeviceTCPAddr().String(), "RT1")
	waitDelivered(t, sink, "RT1")
}

// Binary builds once per process; StartProcess runs it until the test ends.
func TestBinaryAndProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the relay binary")
	}
	bin := relaytest.Binary(t, false)
	if again := relaytest.Binary(t, false); again != bin {
		t.Fatalf("second Binary = %s, want the first build %s", again, bin)
	}
	sink := relaytest.StartSink(t)
	dir := t.TempDir()
	addr := relaytest.FreeAddr(t)
	cfg := fmt.Sprintf("data_dir: %s\nlog:\n  level: warn\ndevices:\n  native:\n    tcp: %s\n    udp: \"\"\nadmin:\n  listen: \"\"\n"+
		"delivery:\n  allow_private_networks: true\nroutes:\n  - name: test\n    url: %s/ingest/[SERIAL]\n",
		filepath.Join(dir, "data"), addr, sink.URL())
	path := filepath.Join(dir, "fleetrelay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := relaytest.StartProcess(t, bin, addr, "-config", path)
	connectAndSend(t, addr, "RP1")
	waitDelivered(t, sink, "RP1")
	if err := p.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("relay process after SIGINT: %v, want exit 0", err)
	}
}
