package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// A relay whose store was damaged while it was stopped refuses to start,
// naming the file and the way out, rather than starting empty (with MANIFEST
// deleted, Badger alone would delete every table and start empty); after
// `fleetrelay store salvage` it starts on the new directory and delivers
// every message it had acknowledged.
func TestRelayRefusesDamagedStore(t *testing.T) {
	sink := startSink(t)
	sink.SetStatus(func(string, []byte) int { return 503 }) // the endpoint is down
	cfg := testConfig(t, sink)
	cfg.Delivery.ShutdownGrace = config.Duration(100 * time.Millisecond)
	base := cfg.DataDir
	r := startRelay(t, cfg) // shut down below, to damage its store
	want := map[loadgen.MsgKey]bool{}
	// Records that do not compress: segments go to the value log, so a
	// damaged table loses delivery state but no message (a segment under
	// 1 KiB compressed lives in the table, and is lost with its block).
	rnd := rand.New(rand.NewPCG(3, 4))
	pad := make([]byte, 1200)
	for i := range 5 {
		serial := fmt.Sprintf("CR%d", i)
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: serial}, 1)
		var last uint64
		for range 40 {
			for j := range pad {
				pad[j] = 'a' + byte(rnd.IntN(26))
			}
			seq, err := d.Send(fmt.Appendf(nil, `{"dev":%q,"pad":%q}`, serial, pad))
			if err != nil {
				t.Fatal(err)
			}
			want[loadgen.MsgKey{Device: serial, Seq: seq}] = true
			last = seq
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.WaitAcked(ctx, last)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", serial, err)
		}
		d.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(base, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table in the stopped relay's store")
	}

	for _, c := range []struct {
		name   string
		damage func(dir string) (file string)
	}{
		{"MANIFEST deleted", func(dir string) string {
			if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
				t.Fatal(err)
			}
			return "MANIFEST"
		}},
		{"bytes flipped in a table", func(dir string) string {
			name := filepath.Base(tables[0])
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for i := 100; i < 104; i++ {
				b[i] ^= 0x55
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return name
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			copyTree(t, base, dir)
			file := c.damage(dir)
			cfg.DataDir = dir
			r, err := relay.New(cfg, testLogger(t))
			if err == nil {
				_ = r.Shutdown(context.Background())
				t.Fatalf("relay started on a store with %s", c.name)
			}
			if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "fleetrelay store salvage") {
				t.Fatalf("relay.New = %v, want a damaged-store error naming %s and the salvage command", err, file)
			}

			to := filepath.Join(t.TempDir(), "salvaged")
			srep, err := store.Salvage(store.SalvageOptions{From: dir, To: to})
			if err != nil {
				t.Fatal(err)
			}
			var lost []store.Loss
			for _, l := range srep.Lost {
				if !strings.HasPrefix(l.What, `key "m/`) { // format and segment counter: the store writes them again
					lost = append(lost, l)
				}
			}
			if len(lost) > 0 || srep.Pending["test"] < len(want) {
				t.Fatalf("salvage lost %v, pending %v, want no message lost and %d pending", lost, srep.Pending, len(want))
			}
			sink.Reset()
			sink.SetStatus(nil) // the endpoint is back
			defer sink.SetStatus(func(string, []byte) int { return 503 })
			cfg.DataDir = to
			startRelay(t, cfg)
			checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				missing := 0
				for k := range want {
					if sink.Count(k) == 0 {
						missing++
					}
				}
				if missing != 0 {
					return fmt.Errorf("%d of %d acknowledged messages not delivered from the salvaged store", missing, len(want))
				}
				return nil
			})
		})
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
