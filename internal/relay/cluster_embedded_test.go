package relay_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// fleetrelay -nats-embedded ADDR: one machine tries cluster mode with nothing else installed.
// The relay process runs its own NATS JetStream server (its store under data_dir/nats) and
// journals on it: a device's frames are acknowledged, delivered, and in the journal stream,
// which another client reaches at ADDR. Stopped and started again, the relay welcomes the
// device with the lastSeq it had stored (the devices' state lives in JetStream now).
func TestNATSEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a relay process")
	}
	sink := startSink(t)
	dir := t.TempDir()
	tcp, natsAddr := relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	// The kill test's config without a NATS URL: -nats-embedded sets it.
	path := writeClusterConfig(t, dir, "e1", "", tcp, sink.URL())
	start := func() *relaytest.Process {
		return relaytest.StartProcess(t, relayBinary(t), tcp, "-config", path, "-nats-embedded", natsAddr)
	}
	p := start()
	d := connect(t, tcp, native.Hello{Serial: "E1"}, 1)
	seqs := send(t, d, "E1", 20)
	waitRecords(t, sink, "E1", seqs)

	// The journal is in the embedded server's JetStream, on disk under data_dir/nats.
	js := jetStream(t, "nats://"+natsAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "killtest_journal")
	if err != nil {
		t.Fatalf("the journal stream on the embedded server: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < uint64(len(seqs)) || info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 1 {
		t.Fatalf("journal stream: %d messages (want ≥ %d), storage %v, %d replicas", info.State.Msgs, len(seqs), info.Config.Storage, info.Config.Replicas)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "nats", "jetstream")); err != nil {
		t.Fatalf("the embedded server's store: %v", err)
	}

	// Stopped and started again: the device's lastSeq comes back from JetStream.
	d.Close()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("relay exit after SIGTERM: %v", err)
	}
	start()
	d = connect(t, tcp, native.Hello{Serial: "E1"}, seqs[len(seqs)-1]+1)
	if w := d.Welcome(); w.LastSeq != seqs[len(seqs)-1] {
		t.Fatalf("WELCOME lastSeq %d after the restart, want %d", w.LastSeq, seqs[len(seqs)-1])
	}
	waitRecords(t, sink, "E1", send(t, d, "E1", 3))
}
