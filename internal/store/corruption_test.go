package store_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// recKey names one record: frame (device, seq) and its index.
type recKey struct {
	dev string
	seq uint64
	idx int
}

type frameKey struct {
	dev string
	seq uint64
}

// ledger is what a test wrote through the store's API and saw acknowledged.
type ledger struct {
	routes    map[string]uint16
	records   map[recKey][]byte          // every acknowledged record
	frameSeg  map[frameKey]uint64        // segment of each acknowledged frame with routes
	segRoutes map[uint64][]uint16        // routes with records in each segment
	pending   map[uint16]map[recKey]bool // per route: acknowledged, not delivered, not dead-lettered
	retired   map[uint64]bool            // segments delivered on every route
	lastSeq   map[string]uint64
	dead      map[uint16]int // dead letters per route
}

// liveSegments are the segments not retired.
func (l *ledger) liveSegments() map[uint64]bool {
	live := map[uint64]bool{}
	for _, seg := range l.frameSeg {
		if !l.retired[seg] {
			live[seg] = true
		}
	}
	return live
}

// buildCorruptionStore writes a store in dir through its API: 8 devices,
// frames of 2–3 records of ≈600 random letters (every segment lands in the
// value log), every fifth frame without routes (device checkpoints), group
// commits of at most 16 KiB (≈330 segments, ≈5 MiB); then it delivers part of it
// (delivery bitmaps), delivers a few segments completely (they retire) and
// dead-letters one segment's records on route a. Value-log files are 1 MiB
// (the smallest Badger allows; the caller sets it), so there are several, and value-log GC does not run.
func buildCorruptionStore(t *testing.T, dir string) *ledger {
	t.Helper()
	l := &ledger{
		records: map[recKey][]byte{}, frameSeg: map[frameKey]uint64{}, segRoutes: map[uint64][]uint16{},
		pending: map[uint16]map[recKey]bool{}, retired: map[uint64]bool{}, lastSeq: map[string]uint64{}, dead: map[uint16]int{},
	}
	var mu sync.Mutex
	var segs []*store.Segment
	s := openHooked(t, dir, store.Hooks{OnCommit: func(seg *store.Segment) {
		mu.Lock()
		segs = append(segs, seg)
		mu.Unlock()
	}}, func(o *store.Options) {
		o.GCInterval, o.MaxCommitBytes, o.MaxResident = time.Hour, 16<<10, 4000 // some segments cold (c/ keys)
	})
	ra, _ := s.RouteID("a")
	rb, _ := s.RouteID("b")
	l.routes = map[string]uint16{"a": ra, "b": rb}
	rnd := rand.New(rand.NewPCG(7, 11))
	var frames []*store.Frame
	for seq := uint64(1); seq <= 400; seq++ {
		for d := range 8 {
			dev := fmt.Sprintf("dev%d", d)
			f := &store.Frame{Device: dev, Serial: dev, Seq: seq, ReceivedAt: int64(seq)}
			switch {
			case (int(seq)+d)%5 == 0:
			case d%2 == 0:
				f.Routes = []uint16{ra, rb}
			default:
				f.Routes = []uint16{ra}
			}
			for i := range 2 + int(seq)%2 {
				pad := make([]byte, 600) // two records are over 1 KiB: every segment goes to the value log
				for j := range pad {
					pad[j] = 'a' + byte(rnd.IntN(26))
				}
				f.Records = append(f.Records, fmt.Appendf(nil, `{"d":%q,"s":%d,"i":%d,"p":%q}`, dev, seq, i, pad))
			}
			frames = append(frames, f)
		}
	}
	done := make(chan error, len(frames))
	for _, f := range frames {
		s.Append(f, func(err error) { done <- err })
	}
	for range frames {
		if err := <-done; err != nil {
			t.Fatalf("Append done = %v", err)
		}
	}
	for _, f := range frames { // all acknowledged
		for i, r := range f.Records {
			l.records[recKey{f.Device, f.Seq, i}] = r
		}
		l.lastSeq[f.Device] = max(l.lastSeq[f.Device], f.Seq)
	}
	mu.Lock()
	sort.Slice(segs, func(i, j int) bool { return segs[i].ID < segs[j].ID })
	mu.Unlock()
	for _, r := range []uint16{ra, rb} {
		l.pending[r] = map[recKey]bool{}
	}
	type mark struct {
		route uint16
		refs  []store.Ref
	}
	var marks []mark
	var deadSeg *store.Segment
	for n, seg := range segs {
		routes := map[uint16]bool{}
		for fi, f := range seg.Frames {
			l.frameSeg[frameKey{f.Device, f.Seq}] = seg.ID
			for _, r := range f.Routes {
				routes[r] = true
				for ri := range f.Records {
					k := recKey{f.Device, f.Seq, ri}
					// Delivery: every third segment on route a, the first half of
					// every fourth on route b, all of every 40th (they retire).
					full := n%40 == 5
					delivered := full || (r == ra && n%3 == 0) || (r == rb && n%4 == 1 && seg.Pos(fi, ri) < uint32(seg.Len()/2))
					if delivered {
						marks = append(marks, mark{r, []store.Ref{{Seg: seg.ID, Pos: seg.Pos(fi, ri)}}})
					} else {
						l.pending[r][k] = true
					}
				}
			}
		}
		for r := range routes {
			l.segRoutes[seg.ID] = append(l.segRoutes[seg.ID], r)
		}
		if n == 10 {
			deadSeg = seg
		}
	}
	for _, m := range marks {
		s.MarkDelivered(m.route, m.refs)
	}
	// Segment 10's records on route a go to its dead-letter list.
	d := &store.DeadLetter{Route: ra, Status: 503, Error: "test", Attempts: 3, At: 1}
	for fi, f := range deadSeg.Frames {
		if !slices.Contains(f.Routes, ra) {
			continue
		}
		for ri := range f.Records {
			k := recKey{f.Device, f.Seq, ri}
			if l.pending[ra][k] {
				d.Items = append(d.Items, store.DeadItem{Frame: f, Record: ri})
				d.Refs = append(d.Refs, store.Ref{Seg: deadSeg.ID, Pos: deadSeg.Pos(fi, ri)})
				delete(l.pending[ra], k)
			}
		}
	}
	if err := s.DeadLetter(d, nil); err != nil {
		t.Fatal(err)
	}
	l.dead[ra] = 1
	// A segment retires once no route has a record of it to deliver.
	live := map[uint64]bool{}
	for _, pending := range l.pending {
		for k := range pending {
			live[l.frameSeg[frameKey{k.dev, k.seq}]] = true
		}
	}
	for _, seg := range segs {
		if !live[seg.ID] {
			l.retired[seg.ID] = true
		}
	}
	appendWait(t, s, &store.Frame{Device: "flush", Seq: 1, Records: [][]byte{[]byte(`{}`)}}) // commits the marks
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != len(segs)-len(l.retired) {
			return fmt.Errorf("%d segments live, want %d", n, len(segs)-len(l.retired))
		}
		return nil
	})
	appendWait(t, s, &store.Frame{Device: "flush", Seq: 2, Records: [][]byte{[]byte(`{}`)}}) // commits the retirements
	if st := s.Stats(); st.VlogGCRewrites != 0 {
		t.Fatalf("value-log GC ran (%d rewrites): the test's damage targets assume it did not", st.VlogGCRewrites)
	}
	mustClose(t, s)
	l.lastSeq["flush"] = 2
	return l
}

// TestCorruption damages a store's files in the ways a disk or an operator
// does, and checks for each: Open refuses, naming the file (no panic, no
// empty start); Verify reports it; Salvage copies out what is readable into
// a directory the store opens, and what it copied matches what was
// acknowledged: every acknowledged, undelivered record is there, byte for
// byte, unless the damage destroyed it — and then Salvage reports its
// segment lost, exactly the segments the damage reached.
func TestCorruption(t *testing.T) {
	defer store.SetValueLogFileSize(1 << 20)()
	base := t.TempDir()
	if d := os.Getenv("CORRUPTION_BASE"); d != "" { // debugging: keep the base store
		base = d
	}
	l := buildCorruptionStore(t, base)
	files := func(dir, ext string) []string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ext) {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		return names
	}
	tables, vlogs := files(base, ".sst"), files(base, ".vlog")
	if len(tables) == 0 || len(vlogs) < 3 {
		t.Fatalf("base store has tables %v and value logs %v: want tables and at least 3 value logs", tables, vlogs)
	}
	t.Logf("base store: %d tables %v, %d value-log files, %d records acknowledged, %d segments (%d retired)",
		len(tables), tables, len(vlogs), len(l.records), len(l.segRoutes), len(l.retired))
	largest := func(dir string, names []string) string {
		best, size := "", int64(-1)
		for _, n := range names {
			if st, err := os.Stat(filepath.Join(dir, n)); err == nil && st.Size() > size {
				best, size = n, st.Size()
			}
		}
		return best
	}
	live := l.liveSegments()
	// segKeys finds the live segment keys in a value-log file: where each
	// segment's key is (the key follows the entry's few header bytes).
	segKeys := func(path string) map[uint64]int {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		at := map[uint64]int{}
		for i := 0; ; {
			j := bytes.Index(b[i:], []byte("j/"))
			if j < 0 || i+j+10 > len(b) {
				return at
			}
			i += j
			if seg := binary.BigEndian.Uint64(b[i+2:]); live[seg] {
				if _, seen := at[seg]; !seen {
					at[seg] = i
				}
			}
			i += 2
		}
	}
	flip := func(path string, off int64) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range int64(4) {
			b[off+i] ^= 0x55
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A value-log file in the middle (not the newest), and the live segment
	// in the middle of a file.
	midVlog := vlogs[len(vlogs)/2]
	middle := func(at map[uint64]int) (uint64, int) {
		segs := keysOf(map[uint64]bool{})
		for s := range at {
			segs = append(segs, s)
		}
		if len(segs) == 0 {
			return 0, -1
		}
		sort.Slice(segs, func(i, j int) bool { return at[segs[i]] < at[segs[j]] })
		seg := segs[len(segs)/2]
		return seg, at[seg]
	}

	for _, c := range []struct {
		name string
		// damage damages dir and returns the file to be named and the
		// segments it destroys (nil: none).
		damage func(t *testing.T, dir string) (file string, destroyed map[uint64]bool)
		// lsmDamage: the LSM tree is damaged, so delivery state may be lost
		// (delivered records may come back) and retired segments may return.
		lsmDamage bool
	}{
		{name: "MANIFEST deleted", damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
				t.Fatal(err)
			}
			return "MANIFEST", nil
		}},
		{name: "MANIFEST truncated", damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			p := filepath.Join(dir, "MANIFEST")
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, st.Size()-3); err != nil {
				t.Fatal(err)
			}
			return "MANIFEST", nil
		}},
		{name: "table deleted", lsmDamage: true, damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			name := largest(dir, tables)
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			return name, nil
		}},
		{name: "bytes flipped in a table", lsmDamage: true, damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			name := largest(dir, tables)
			p := filepath.Join(dir, name)
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			flip(p, st.Size()/3) // in a block of segment keys (before them: the cold-segment index, dead letters)
			return name, nil
		}},
		{name: "value log truncated", damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			p := filepath.Join(dir, midVlog)
			at := segKeys(p)
			_, cut := middle(at)
			if cut < 0 {
				t.Fatalf("no live segment in %s", midVlog)
			}
			// Cut inside a live segment's value: it and every segment
			// after it in the file are gone.
			destroyed := map[uint64]bool{}
			for seg, off := range at {
				if off >= cut {
					destroyed[seg] = true
				}
			}
			if err := os.Truncate(p, int64(cut+300)); err != nil {
				t.Fatal(err)
			}
			return midVlog, destroyed
		}},
		{name: "bytes flipped in the value log", damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			p := filepath.Join(dir, midVlog)
			seg, off := middle(segKeys(p))
			if off < 0 {
				t.Fatalf("no live segment in %s", midVlog)
			}
			flip(p, int64(off+300)) // inside that segment's value
			return midVlog, map[uint64]bool{seg: true}
		}},
		{name: "bytes flipped in the newest value log", damage: func(t *testing.T, dir string) (string, map[uint64]bool) {
			// Badger would cut this file at the damaged entry, dropping the
			// readable ones after it.
			name := vlogs[len(vlogs)-1]
			p := filepath.Join(dir, name)
			seg, off := middle(segKeys(p))
			if off < 0 {
				t.Fatalf("no live segment in %s", name)
			}
			flip(p, int64(off+300))
			return name, map[uint64]bool{seg: true}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			copyDir(t, base, dir)
			file, destroyed := c.damage(t, dir)

			// Open refuses, naming the file.
			s, err := store.Open(context.Background(), store.Options{Dir: dir})
			if err == nil {
				mustClose(t, s)
				t.Fatalf("Open of a store with %s succeeded", c.name)
			}
			if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "fleetrelay store salvage") {
				t.Fatalf("Open = %v, want ErrDamaged naming %s and the salvage command", err, file)
			}
			t.Logf("Open: %v", err)

			// Verify reports it.
			rep, err := store.Verify(dir)
			if err != nil {
				t.Fatalf("Verify = %v", err)
			}
			named := false
			for _, p := range rep.Problems {
				named = named || p.File == file
			}
			if !named {
				t.Fatalf("Verify problems %v: none names %s", rep.Problems, file)
			}

			// Salvage recovers what is readable.
			to := filepath.Join(t.TempDir(), "salvaged")
			srep, err := store.Salvage(store.SalvageOptions{From: dir, To: to})
			if err != nil {
				t.Fatalf("Salvage = %v", err)
			}
			lost := map[uint64]bool{}
			for _, loss := range srep.Lost {
				var seg uint64
				if _, err := fmt.Sscanf(loss.What, "segment %d", &seg); err != nil {
					// Small values (delivery bitmaps, checkpoints, meta keys)
					// are only in the LSM tree.
					if !c.lsmDamage {
						t.Errorf("Salvage lost %q, not a segment", loss)
					}
					continue
				}
				lost[seg] = true
			}
			t.Logf("Salvage: kept %v, %d lost, unreadable %v, %d keys uncertain, route names restored %v",
				srep.Kept, len(srep.Lost), srep.Unreadable, len(srep.Uncertain), srep.NamedRoutes)
			if !mapsEqual(lost, destroyed) {
				t.Errorf("Salvage reports segments %v lost, the damage destroyed %v", keysOf(lost), keysOf(destroyed))
			}
			checkSalvaged(t, to, l, lost, c.lsmDamage, srep)
		})
	}
}

// checkSalvaged opens a salvaged store and checks it against the ledger.
func checkSalvaged(t *testing.T, dir string, l *ledger, lost map[uint64]bool, lsmDamage bool, rep *store.SalvageReport) {
	t.Helper()
	s := open(t, dir)
	if got := s.Routes(); !mapsEqual(got, l.routes) {
		t.Errorf("salvaged routes %v, want %v", got, l.routes)
	}
	uncertain := map[uint64]bool{}
	for _, k := range rep.Uncertain {
		var seg uint64
		if _, err := fmt.Sscanf(k, "segment %d", &seg); err == nil {
			uncertain[seg] = true
		}
	}
	maxSeq := map[string]uint64{}
	for name, r := range l.routes {
		got := map[recKey]bool{}
		extra := 0
		err := s.Pending(r, 0, func(seg *store.Segment, pos []uint32) bool {
			for _, p := range pos {
				fi, ri, _ := seg.Locate(p)
				f := seg.Frames[fi]
				k := recKey{f.Device, f.Seq, ri}
				want, ok := l.records[k]
				if !ok || !bytes.Equal(want, seg.Record(p)) {
					t.Errorf("route %s: salvaged record %v was not acknowledged as it is", name, k)
					continue
				}
				got[k] = true
				maxSeq[f.Device] = max(maxSeq[f.Device], f.Seq)
				if !l.pending[r][k] {
					extra++
					// Delivered (or retired, or dead-lettered) records come back
					// only when the LSM tree was damaged, and only from segments
					// the report calls uncertain.
					if !lsmDamage || !uncertain[seg.ID] {
						t.Errorf("route %s: record %v of segment %d was delivered, and is pending again", name, k, seg.ID)
					}
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("Pending(%s) = %v", name, err)
		}
		missing := 0
		for k := range l.pending[r] {
			if !got[k] && !lost[l.frameSeg[frameKey{k.dev, k.seq}]] {
				if missing++; missing <= 5 {
					t.Errorf("route %s: acknowledged record %v missing from the salvaged store, its segment not reported lost", name, k)
				}
			}
		}
		t.Logf("route %s: %d records pending after salvage (%d acknowledged and undelivered, %d delivered again), %d missing",
			name, len(got), len(l.pending[r]), extra, missing)
	}
	// Device state: every device's last seq covers what the store holds of it;
	// unless the LSM tree (checkpoints) was damaged, it is what it was.
	for dev, want := range l.lastSeq {
		got := s.LastSeq(dev)
		if got < maxSeq[dev] || got > want || (!lsmDamage && len(lost) == 0 && got != want) {
			t.Errorf("LastSeq(%s) = %d after salvage, was %d, salvaged frames up to %d", dev, got, want, maxSeq[dev])
		}
	}
	for r, n := range l.dead {
		if got := s.DeadLetterCount(r); (got == 0) != (n == 0) {
			t.Errorf("route %d: %d dead-letter records after salvage, want some", r, got)
		}
	}
	mustClose(t, s)
	if rep, err := store.Verify(dir); err != nil || len(rep.Problems) > 0 {
		t.Errorf("Verify of the salvaged store: %v, problems %v", err, rep.Problems)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keysOf(m map[uint64]bool) []uint64 {
	ks := make([]uint64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestSalvageAfterCrash kills a process appending to a store (see
// crashChild) and checks the directory it leaves: a crash is not damage, so
// Verify finds no problem and Open succeeds; and Salvage, which reads the
// memtable logs Badger would replay (transactions committed before the kill,
// not the one it interrupted), keeps every acknowledged frame.
func TestSalvageAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for round, pad := range []string{"", "random"} {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashPadEnv+"="+pad)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[frameKey]bool{}
		delivered := map[frameKey]bool{}
		rd := bufio.NewReader(stdout)
		killAt := 3000 + 2000*round
		for n := 0; ; {
			line, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "A":
				seq, _ := strconv.ParseUint(f[2], 10, 64)
				acked[frameKey{f[1], seq}] = true
				if n++; n == killAt {
					if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
				}
			case len(f) > 1 && f[0] == "S":
				for _, fr := range f[1:] {
					dev, seqStr, _ := strings.Cut(fr, ":")
					seq, _ := strconv.ParseUint(seqStr, 10, 64)
					delivered[frameKey{dev, seq}] = true
				}
			}
		}
		_ = cmd.Wait()

		rep, err := store.Verify(dir)
		if err != nil {
			t.Fatalf("Verify after a crash = %v", err)
		}
		if len(rep.Problems) > 0 {
			t.Errorf("Verify after a crash: %d problems, want none: %v", len(rep.Problems), rep.Problems)
		}
		mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
		to := filepath.Join(t.TempDir(), "salvaged")
		srep, err := store.Salvage(store.SalvageOptions{From: dir, To: to})
		if err != nil {
			t.Fatalf("Salvage after a crash = %v", err)
		}
		if len(srep.Lost) > 0 || len(srep.Unreadable) > 0 {
			t.Errorf("Salvage after a crash: lost %v, unreadable %v", srep.Lost, srep.Unreadable)
		}
		s := open(t, to)
		r, _ := s.RouteID("crash")
		pending := map[frameKey]bool{}
		for dev, seqs := range pendingSeqs(t, s, r) {
			for _, q := range seqs {
				pending[frameKey{dev, q}] = true
			}
		}
		missing := 0
		for k := range acked {
			if s.LastSeq(k.dev) < k.seq {
				t.Errorf("%s: acknowledged seq %d above LastSeq %d after salvage", k.dev, k.seq, s.LastSeq(k.dev))
			}
			if k.seq%4 != 0 && !delivered[k] && !pending[k] {
				if missing++; missing <= 5 {
					t.Errorf("%s: acknowledged seq %d neither delivered nor pending after salvage", k.dev, k.seq)
				}
			}
		}
		mustClose(t, s)
		t.Logf("round %d: %d acknowledged frames, %d memtable logs in the crashed directory, salvage kept %v, %d missing",
			round, len(acked), len(mems), srep.Kept, missing)
		// And the crashed directory itself opens.
		mustClose(t, open(t, dir))
	}
}
