package relay_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts it when the test ends
// (after the relays it holds are shut down: cleanups run last first). It skips the test where
// it cannot mount (not root, or no permission to mount, as in some containers); CI runs as root.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (CI runs as root)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("unmount %s: %v; detaching it", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// remount resizes the tmpfs on dir.
func remount(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("remount %s with size %d: %v", dir, size, err)
	}
}

// freeBytes is what statfs says is available in dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// Disk full on a real small filesystem. The relay's data directory is on a 96 MiB tmpfs and
// its endpoint is down; a fleet sends records that do not compress. The relay fills the disk to
// store.min_free (raised to the store's floor) and refuses from then on: devices get ERROR 503
// over TCP and UDP, /healthz answers 503, the metric says so, and it does not die (a Badger
// write into a full tmpfs is SIGBUS, which would kill this test binary). With less free space
// than opening needs it refuses to start, with the figures; restarted on the full disk, it
// starts, still refusing, and does not read NDJSON. The endpoint comes back: delivery
// frees space, ingest reopens, the NDJSON lines are read, and every acknowledged record is
// delivered: none was acknowledged without being stored.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, 96<<20)
	sink := startSink(t)
	var down atomic.Bool
	down.Store(true)
	sink.SetStatus(func(string, []byte) int {
		if down.Load() {
			return 503
		}
		return 200
	})
	cfg := testConfig(t, sink)
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Devices.NDJSON.TCP = "127.0.0.1:0"
	cfg.Store.MinFree = "1MiB"     // raised to the store's floor: the test fills as much as it may
	cfg.Delivery.ShutdownGrace = 0 // the endpoint is down at the restart: do not wait for it
	r := startRelay(t, cfg)
	// The restarted relay listens where the devices know it.
	cfg.Devices.Native.TCP, cfg.Devices.Native.UDP = r.DeviceTCPAddr().String(), r.DeviceUDPAddr().String()

	const devices, records, pad = 16, 4, 4096 // ≈16 KiB frames of random base64
	devs := make([]*loadgen.Device, devices)
	for i := range devs {
		// A small window: every refusal makes a device resend what it has in flight.
		devs[i] = loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTCPAddr().String(),
			Hello: native.Hello{Serial: fmt.Sprintf("D%02d", i)}, Window: 16}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := devs[i].Connect(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		t.Cleanup(devs[i].Close)
	}
	var refused atomic.Int64 // ERROR 503 answers seen by the fleet
	fleet := func(r *relay.Relay, stop func() bool) {
		var wg sync.WaitGroup
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pump(t, r, d, i, records, pad, &refused, stop)
			}()
		}
		wg.Wait()
	}

	// 1. Fill the disk: the relay refuses, and keeps refusing without dying.
	fleet(r, func() bool { return refused.Load() >= 2*devices })
	health := "http://" + r.AdminAddr().String() + "/healthz"
	if code, body := httpGet(t, health); code != 503 || !strings.Contains(body, "refusing new data") {
		t.Fatalf("/healthz with the disk full = %d %q, want 503 and why", code, body)
	}
	if v := metric(t, r, "fleetrelay_store_ingest_refused"); v != 1 {
		t.Fatalf("fleetrelay_store_ingest_refused = %v, want 1", v)
	}
	minFree := metric(t, r, "fleetrelay_store_min_free_bytes")
	free := freeBytes(t, dir)
	t.Logf("disk full: %d ERROR 503 answers, %.1f MiB free of 96 MiB, min_free %.1f MiB, %d frames refused",
		refused.Load(), float64(free)/(1<<20), minFree/(1<<20), int(metric(t, r, "fleetrelay_store_refused_frames_total")))
	if float64(free) < minFree-4<<20 {
		t.Errorf("%d bytes free: more than 4 MiB below min_free %v", free, minFree)
	}
	udpRefused(t, r.DeviceUDPAddr().String())
	acked := make([]uint64, devices)
	for i, d := range devs {
		acked[i] = d.Acked()
		d.Close()
	}

	// 2. Restart on the full disk: it starts, refusing new data, and does not read NDJSON.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := r.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown on a full disk: %v", err)
	}
	cancel()
	// With less free space than opening needs it refuses to start, and says why.
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	used := int64(st.Blocks-st.Bfree) * st.Bsize
	remount(t, dir, used+4<<20)
	if r, err := relay.New(cfg, testLogger(t)); err == nil {
		_ = r.Shutdown(context.Background())
		t.Fatal("the relay opened its store with 4 MiB free")
	} else if msg := err.Error(); !strings.Contains(msg, "not enough free disk space") || !strings.Contains(msg, cfg.DataDir) ||
		!strings.Contains(msg, "needs") {
		t.Fatalf("relay.New with 4 MiB free: %v; want why, with the directory and the figures", err)
	} else {
		t.Logf("with 4 MiB free: %v", err)
	}
	remount(t, dir, 96<<20)
	r = startRelay(t, cfg)
	health = "http://" + r.AdminAddr().String() + "/healthz"
	if code, body := httpGet(t, health); code != 503 {
		t.Fatalf("/healthz after a restart on the full disk = %d %q, want 503", code, body)
	}
	nd := dialNDJSON(t, r)
	var lines [][]byte
	for i := range 10 {
		lines = append(lines, fmt.Appendf(nil, `{"serial":"N1","i":%d}`, i))
	}
	if err := nd.Send(lines...); err != nil {
		t.Fatal(err)
	}
	for i, d := range devs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := d.Connect(ctx); err != nil {
			t.Fatalf("reconnect D%02d: %v", i, err)
		}
		cancel()
		if w := d.Welcome(); w.LastSeq < acked[i] {
			t.Fatalf("D%02d: WELCOME lastSeq %d after the restart, below the %d acknowledged", i, w.LastSeq, acked[i])
		}
	}
	before := refused.Load()
	fleet(r, func() bool { return refused.Load() >= before+devices })
	if n := metric(t, r, "fleetrelay_ndjson_lines_total"); n != 0 {
		t.Fatalf("%v NDJSON lines read while the store refuses new data", n)
	}

	// 3. The endpoint is back: delivery frees space, ingest reopens, everything arrives.
	down.Store(false)
	checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if code, body := httpGet(t, health); code != 200 {
			return fmt.Errorf("/healthz = %d %q", code, body)
		}
		return nil
	})
	t.Logf("ingest reopened with %.1f MiB free", float64(freeBytes(t, dir))/(1<<20))
	var sent atomic.Int64
	fleet(r, func() bool { return sent.Add(1) > 20*devices })
	for i, d := range devs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for d.Unacked() > 0 {
			if err := d.WaitAcked(ctx, d.NextSeq()-1); err != nil {
				if ctx.Err() != nil {
					t.Fatalf("D%02d: %v", i, err)
				}
				_ = d.Connect(ctx) // refused again for a moment: resend
			}
		}
		cancel()
		acked[i] = d.Acked()
	}
	total := 0
	for _, a := range acked {
		total += int(a) * records
	}
	checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := sink.Stats().Unique; n < total+len(lines) {
			return fmt.Errorf("sink has %d of %d messages", n, total+len(lines))
		}
		return nil
	})
	lost := 0
	for i, a := range acked {
		for s := uint64(1); s <= a; s++ {
			for k := range records {
				if sink.Count(loadgen.MsgKey{Device: fmt.Sprintf("D%02d", i), Seq: s, Index: k}) == 0 {
					lost++
				}
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d acknowledged records never delivered", lost)
	}
	checkLines(t, sink, "N1", false, lines)
	if n := metric(t, r, `fleetrelay_ndjson_dropped_total{reason="store"}`); n != 0 {
		t.Fatalf("%v NDJSON lines read and refused: the listener should not have read them", n)
	}
	t.Logf("%d acknowledged records delivered, 0 lost, %d delivered twice; %.1f MiB free at the end", total, sink.Stats().Dups,
		float64(freeBytes(t, dir))/(1<<20))
}

// pump sends frames of random records from device d until stop says so; on ERROR 503 it counts
// the refusal, backs off a little and reconnects, as firmware would.
func pump(t *testing.T, r *relay.Relay, d *loadgen.Device, id, records, pad int, refused *atomic.Int64, stop func() bool) {
	rnd := rand.New(rand.NewChaCha8([32]byte{byte(id)}))
	raw := make([]byte, pad*3/4)
	recs := make([][]byte, records)
	for !stop() {
		seq := d.NextSeq()
		for k := range recs {
			for j := range raw {
				raw[j] = byte(rnd.Uint32())
			}
			recs[k] = fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, seq, base64.StdEncoding.EncodeToString(raw))
		}
		if _, err := d.Send(recs...); err == nil {
			continue
		} else if re := (*loadgen.ErrRelay)(nil); errors.As(err, &re) {
			if re.Code != native.CodeUnavailable {
				t.Errorf("device %d: ERROR %d %q, want 503", id, re.Code, re.Msg)
				return
			}
			refused.Add(1)
		}
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.Connect(ctx)
		cancel()
		if err != nil {
			t.Errorf("device %d: reconnect: %v", id, err)
			return
		}
	}
}

// udpRefused sends a UDATA datagram and expects ERROR 503 back.
func udpRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(native.AppendUData(nil, "U1", "", 1, []byte(`{"a":1}`))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer to UDATA on a full disk: %v", err)
	}
	typ, body, _, err := native.Next(buf[:n], 1024)
	if err != nil || typ != native.TypeError {
		t.Fatalf("answer to UDATA on a full disk: % x, want ERROR", buf[:n])
	}
	if code, msg, _ := native.ParseError(body); code != native.CodeUnavailable {
		t.Fatalf("UDATA on a full disk: ERROR %d %q, want 503", code, msg)
	}
}
