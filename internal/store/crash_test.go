package store_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
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
	s, err := store.Open(store.Options{Dir: os.Getenv(crashEnv), OnCommit: func(seg *store.Segment) {
		if seg.ID%2 == 0 {
			segs <- seg
		}
	}})
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
	for seq := uint64(1); ; seq++ {
		for _, dev := range []string{"c0", "c1", "c2"} {
			routes := []uint16{r}
			if seq%4 == 0 {
				routes = nil
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
			f := &store.Frame{Device: dev, Seq: seq, Routes: routes, Records: [][]byte{rec}}
			s.Append(f, func(err error) {
				if err == nil {
					acks <- fmt.Sprintf("A %s %d\n", dev, seq)
				}
			})
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
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashPadEnv+"="+[]string{"", "text", "random"}[round])
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		type key struct {
			dev string
			seq uint64
		}
		var acked []key
		delivered := map[key]bool{}
		parse := func(s string) key {
			dev, seqStr, ok := strings.Cut(s, ":")
			seq, err := strconv.ParseUint(seqStr, 10, 64)
			if !ok || err != nil {
				t.Fatalf("child printed frame %q", s)
			}
			return key{dev, seq}
		}
		rd := bufio.NewReader(stdout)
		killAt := 2000 + round*6000
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

		s := open(t, dir)
		r, _ := s.RouteID("crash")
		pending := pendingSeqs(t, s, r)
		inPending := map[key]bool{}
		for dev, seqs := range pending {
			for _, q := range seqs {
				inPending[key{dev, q}] = true
			}
			if w := s.DeliveredSeq(dev); w >= seqs[0] {
				t.Errorf("%s: DeliveredSeq %d, but seq %d pending", dev, w, seqs[0])
			}
		}
		for _, k := range acked {
			if last := s.LastSeq(k.dev); k.seq > last {
				t.Errorf("%s: acked seq %d > LastSeq %d after crash", k.dev, k.seq, last)
			}
			if k.seq%4 != 0 && !delivered[k] && !inPending[k] {
				t.Errorf("%s: acked seq %d neither delivered nor in Pending after crash", k.dev, k.seq)
			}
		}
		st := s.Stats()
		t.Logf("round %d: %d acked frames checked after SIGKILL; %d frames marked delivered; %d segments live, %d checkpoint keys",
			round, len(acked), len(delivered), st.SegmentsLive, st.CheckpointKeys)
		mustClose(t, s)
	}
}
