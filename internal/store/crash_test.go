package store_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

const (
	crashEnv    = "FLEETRELAY_STORE_CRASH_DIR"
	crashPadEnv = "FLEETRELAY_STORE_CRASH_PAD" // "text" or "random": 2 KiB of padding per record
	// crashWindowEnv makes the child append windowed frames as a lossy UDP device would: every
	// seq divisible by 11 is never appended, every one divisible by 7 is held back and appended
	// later, below the device's highest seq. Only c2 has frames without routes.
	crashWindowEnv = "FLEETRELAY_STORE_CRASH_WINDOW"
)

// crashChild runs in the re-executed test binary until it is killed. It
// appends frames in a loop for three devices (every fourth frame without
// routes) and prints "A device seq" for every done(nil). It delivers every
// segment with an even ID completely, printing "S device:seq ..." before
// marking, so segments retire and device checkpoints (with frequent
// snapshots) are written while it runs. With padding, segments go to the
// value log (compressed or, random, as they are).
func crashChild() {
	store.SetSnapshotThresholds(4, 4096, 1024)
	var outMu sync.Mutex
	emit := func(line []byte) {
		outMu.Lock()
		os.Stdout.Write(line)
		outMu.Unlock()
	}
	segs := make(chan *store.Segment, 1<<12)
	windowed := os.Getenv(crashWindowEnv) != ""
	opts := store.Options{Dir: os.Getenv(crashEnv)}
	hooks := store.Hooks{OnCommit: func(seg *store.Segment) {
		if seg.ID%2 == 0 {
			segs <- seg
		}
	}}
	if windowed {
		opts.MaxCommitFrames = 32 // small segments: some retire while their seqs are in the window
	}
	s, err := store.Open(context.Background(), opts)
	if err == nil {
		err = s.Start(hooks)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	r, err := s.RouteID("crash")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go func() {
		for seg := range segs {
			line := []byte("S")
			var refs []store.Ref
			for i, f := range seg.Frames {
				line = fmt.Appendf(line, " %s:%d", f.Device, f.Seq)
				for j := range f.Records {
					refs = append(refs, store.Ref{Seg: seg.ID, Pos: seg.Pos(i, j)})
				}
			}
			emit(append(line, '\n'))
			s.MarkDelivered(r, refs)
		}
	}()
	acks := make(chan string, 1<<16)
	go func() {
		var buf []byte
		for line := range acks {
			buf = append(buf, line...)
			if len(acks) == 0 || len(buf) > 16<<10 {
				emit(buf)
				buf = buf[:0]
			}
		}
	}()
	var held []*store.Frame
	appendFrame := func(f *store.Frame) {
		s.Append(f, func(err error) {
			if err == nil {
				acks <- fmt.Sprintf("A %s %d\n", f.Device, f.Seq)
			}
		})
	}
	for seq := uint64(1); ; seq++ {
		if windowed && seq%13 == 0 {
			for _, f := range held {
				appendFrame(f)
			}
			held = held[:0]
		}
		for _, dev := range []string{"c0", "c1", "c2"} {
			if windowed && seq%11 == 0 {
				continue
			}
			routes := []uint16{r}
			if seq%4 == 0 && (!windowed || dev == "c2") {
				routes = nil // windowed: c0 and c1 depend on segments and their retirement alone
			}
			rec := fmt.Appendf(nil, `{"seq":%d}`, seq)
			switch os.Getenv(crashPadEnv) {
			case "text":
				rec = fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, seq, strings.Repeat("ab", 1<<10))
			case "random":
				pad := make([]byte, 2<<10)
				for i := range pad {
					pad[i] = 'a' + byte(rand.IntN(26))
				}
				rec = fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, seq, pad)
			}
			f := &store.Frame{Device: dev, Seq: seq, Routes: routes, Records: [][]byte{rec}, Window: windowed}
			if windowed && seq%7 == 0 {
				held = append(held, f)
				continue
			}
			appendFrame(f)
		}
	}
}

type crashKey struct {
	dev string
	seq uint64
}

// runCrashChild runs crashChild on dir with env added, kills it with SIGKILL once it printed
// killAt acknowledgements, and returns the frames it saw acknowledged and those it marked
// delivered.
func runCrashChild(t *testing.T, dir string, env []string, killAt int) (acked []crashKey, delivered map[crashKey]bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), crashEnv+"="+dir), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	delivered = map[crashKey]bool{}
	parse := func(s string) crashKey {
		dev, seqStr, ok := strings.Cut(s, ":")
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if !ok || err != nil {
			t.Fatalf("child printed frame %q", s)
		}
		return crashKey{dev, seq}
	}
	rd := bufio.NewReader(stdout)
	for {
		// A line cut short by the kill has no newline; it is dropped.
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "A":
			acked = append(acked, parse(f[1]+":"+f[2]))
			if len(acked) == killAt {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
		case len(f) > 1 && f[0] == "S":
			for _, fr := range f[1:] {
				delivered[parse(fr)] = true
			}
		default:
			t.Fatalf("child printed %q", line)
		}
	}
	_ = cmd.Wait()
	if len(acked) < killAt {
		t.Fatalf("child exited after %d acks, before the kill", len(acked))
	}
	return acked, delivered
}

// checkCrashPending checks that every acknowledged frame with routes (the child gives every
// fourth seq none) is delivered or still pending, and that no delivered watermark passes a
// pending frame.
func checkCrashPending(t *testing.T, s *store.Store, acked []crashKey, delivered map[crashKey]bool) {
	t.Helper()
	r, _ := s.RouteID("crash")
	pending := pendingSeqs(t, s, r)
	inPending := map[crashKey]bool{}
	for dev, seqs := range pending {
		for _, q := range seqs {
			inPending[crashKey{dev, q}] = true
		}
		if w := s.DeliveredSeq(dev); w >= slices.Min(seqs) {
			t.Errorf("%s: DeliveredSeq %d, but seq %d pending", dev, w, slices.Min(seqs))
		}
	}
	for _, k := range acked {
		if k.seq%4 != 0 && !delivered[k] && !inPending[k] {
			t.Errorf("%s: acked seq %d neither delivered nor in Pending after crash", k.dev, k.seq)
		}
	}
}

// TestCrashKeepsAcknowledgedFrames kills a process appending to a store with
// SIGKILL and checks that every frame it saw acknowledged is there after
// reopening.
func TestCrashKeepsAcknowledgedFrames(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for round := range 3 {
		dir := t.TempDir()
		killAt := 2000 + round*6000
		acked, delivered := runCrashChild(t, dir, []string{crashPadEnv + "=" + []string{"", "text", "random"}[round]}, killAt)
		s := open(t, dir)
		checkCrashPending(t, s, acked, delivered)
		for _, k := range acked {
			if last := s.LastSeq(k.dev); k.seq > last {
				t.Errorf("%s: acked seq %d > LastSeq %d after crash", k.dev, k.seq, last)
			}
		}
		st := s.Stats()
		t.Logf("round %d: %d acked frames checked after SIGKILL; %d frames marked delivered; %d segments live, %d checkpoint keys",
			round, len(acked), len(delivered), st.SegmentsLive, st.CheckpointKeys)
		mustClose(t, s)
	}
}

// TestCrashKeepsWindow is TestCrashKeepsAcknowledgedFrames for windowed frames, some appended
// late below the highest seq and some never: after SIGKILL every acknowledged seq counts as
// stored, and no seq that was never appended does (unless older than the window), so a resent
// datagram is neither stored twice nor acknowledged without being stored.
func TestCrashKeepsWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for round, killAt := range []int{3000, 12000} {
		dir := t.TempDir()
		acked, delivered := runCrashChild(t, dir, []string{crashWindowEnv + "=1"}, killAt)
		s := open(t, dir)
		checkCrashPending(t, s, acked, delivered)
		late := 0
		top := map[string]uint64{}
		for _, k := range acked {
			if ok, _ := s.WindowSeq(k.dev, k.seq); !ok {
				t.Errorf("%s: acked seq %d not stored after crash", k.dev, k.seq)
			}
			if k.seq < top[k.dev] {
				late++
			}
			top[k.dev] = max(top[k.dev], k.seq)
		}
		inWin := 0 // acked, in the window, and in a retired segment: the checkpoints must know it
		for _, k := range acked {
			if delivered[k] && k.seq+store.WindowSize > s.LastSeq(k.dev) {
				inWin++
			}
		}
		holes := 0
		for _, dev := range []string{"c0", "c1", "c2"} {
			last := s.LastSeq(dev)
			for seq := uint64(11); seq <= last; seq += 11 {
				if seq+store.WindowSize <= last {
					continue // older than the window: a resend
				}
				holes++
				if ok, _ := s.WindowSeq(dev, seq); ok {
					t.Errorf("%s: seq %d never appended but stored after crash (last seq %d)", dev, seq, last)
				}
			}
		}
		if late == 0 || holes == 0 || inWin == 0 {
			t.Fatalf("round %d: %d acked late, %d holes checked, %d retired in the window: the child did not do what it should",
				round, late, holes, inWin)
		}
		st := s.Stats()
		t.Logf("round %d: %d acked frames (%d below a higher one, %d retired in the window) and %d holes checked after SIGKILL; %d marked delivered; %d segments live, %d checkpoint keys",
			round, len(acked), late, inWin, holes, len(delivered), st.SegmentsLive, st.CheckpointKeys)
		mustClose(t, s)
	}
}
