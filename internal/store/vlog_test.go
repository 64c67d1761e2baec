package store_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// vlogBytes returns the disk space taken by Badger's value-log files in dir
// (allocated blocks, as du counts them: Badger creates each file at twice
// its size and only writes part of it).
func vlogBytes(t testing.TB, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".vlog") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // deleted by GC meanwhile
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += info.Size()
		}
	}
	return n
}

// TestValueLogReclaim stores 16 MiB of segments in 1 MiB value-log files,
// delivers seven eighths of them and checks that GC gives the space back
// without anything else being written (the store makes Badger flush the
// memtable holding the deletions), and that the segments GC moved are
// intact, also after a restart.
func TestValueLogReclaim(t *testing.T) {
	defer store.SetValueLogFileSize(1 << 20)()
	dir := t.TempDir()
	opt := func(o *store.Options) { o.GCInterval = 10 * time.Millisecond; o.MaxCommitBytes = 64 << 10 }
	s := open(t, dir, opt)
	r, _ := s.RouteID("delivered")
	keep, _ := s.RouteID("kept")

	rnd := rand.New(rand.NewPCG(1, 2))
	kept := map[uint64][]byte{} // seq of device "k" -> record
	var seqD, seqK uint64
	for batch := range 64 {
		var frames []*store.Frame
		for range 16 {
			rec := make([]byte, 16<<10)
			for i := range rec {
				rec[i] = 'a' + byte(rnd.IntN(26)) // hardly compressible
			}
			if batch%8 == 7 {
				seqK++
				kept[seqK] = rec
				frames = append(frames, &store.Frame{Device: "k", Seq: seqK, Records: [][]byte{rec}, Routes: []uint16{keep}})
			} else {
				seqD++
				frames = append(frames, &store.Frame{Device: "d", Seq: seqD, Records: [][]byte{rec}, Routes: []uint16{r}})
			}
		}
		appendWait(t, s, frames...)
	}
	before := vlogBytes(t, dir)
	if before < 12<<20 {
		t.Fatalf("value log takes %d bytes after storing 16 MiB of segments", before)
	}
	// The segments left once "delivered" is done: those holding the kept frames. (Not a fixed
	// share of all segments: how many frames a commit takes depends on timing.)
	keptSegs := map[uint64]bool{}
	for _, ref := range pendingRefs(t, s, keep) {
		keptSegs[ref.Seg] = true
	}
	s.MarkDelivered(r, pendingRefs(t, s, r))
	var after int64
	start := time.Now()
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		st := s.Stats()
		if st.SegmentsLive != len(keptSegs) {
			return fmt.Errorf("SegmentsLive = %d, want %d", st.SegmentsLive, len(keptSegs))
		}
		// Left: the kept segments, the file being written, and files
		// with less than half of garbage.
		after = vlogBytes(t, dir)
		if limit := st.LiveBytes + 3<<20; after > limit {
			return fmt.Errorf("value log takes %d bytes (%d before delivery), want at most %d (%d bytes live); %d files rewritten",
				after, before, limit, st.LiveBytes, st.VlogGCRewrites)
		}
		if st.VlogGCRewrites == 0 {
			return fmt.Errorf("no value-log file rewritten")
		}
		return nil
	})
	t.Logf("value log: %d bytes before delivery, %d bytes %v after", before, after, time.Since(start).Round(time.Millisecond))

	checkKept := func(s *store.Store) {
		t.Helper()
		n := 0
		err := s.Pending(keep, 0, func(seg *store.Segment, pos []uint32) bool {
			for _, p := range pos {
				i, j, _ := seg.Locate(p)
				f := seg.Frames[i]
				if f.Device != "k" || !bytes.Equal(f.Records[j], kept[f.Seq]) {
					t.Errorf("segment %d position %d: device %q seq %d, record differs from the one stored", seg.ID, p, f.Device, f.Seq)
				}
				n++
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != len(kept) {
			t.Errorf("%d kept records pending, want %d", n, len(kept))
		}
	}
	checkKept(s)
	mustClose(t, s)
	s = open(t, dir, opt)
	defer mustClose(t, s)
	checkKept(s)
	if got := s.LastSeq("d"); got != seqD {
		t.Errorf("LastSeq(d) = %d after restart, want %d", got, seqD)
	}
}

// TestSegmentCompression stores a compressible and an incompressible segment
// (which is stored as is) and reads both back, before and after a restart.
func TestSegmentCompression(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	rnd := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 8<<10)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	want := map[uint64][]byte{
		1: bytes.Repeat([]byte(`{"temperature":21.5,"humidity":40}`), 300),
		2: random,
		3: []byte(`{"small":true}`),
	}
	for seq := uint64(1); seq <= 3; seq++ {
		appendWait(t, s, &store.Frame{Device: "d", Seq: seq, Records: [][]byte{want[seq]}, Routes: []uint16{r}})
	}
	if st := s.Stats(); st.Bytes >= uint64(len(want[1])+len(want[2])) {
		t.Errorf("Stats.Bytes = %d: segments not compressed", st.Bytes)
	}
	check := func(s *store.Store) {
		t.Helper()
		n := 0
		err := s.Pending(r, 0, func(seg *store.Segment, pos []uint32) bool {
			for _, p := range pos {
				i, j, _ := seg.Locate(p)
				f := seg.Frames[i]
				if !bytes.Equal(f.Records[j], want[f.Seq]) {
					t.Errorf("seq %d: record of %d bytes read back, stored %d", f.Seq, len(f.Records[j]), len(want[f.Seq]))
				}
				n++
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != len(want) {
			t.Errorf("%d records pending, want %d", n, len(want))
		}
	}
	check(s)
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	check(s)
}

// TestOpenAfterCrashWithLargerMemtables opens a directory left by a crash of
// a Badger with larger memtables (as the store used before it set its own
// size): replaying the memtable log into the store's small memtables would
// make Badger exit the process.
func TestOpenAfterCrashWithLargerMemtables(t *testing.T) {
	dir, crashed := t.TempDir(), t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueLogFileSize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	const keys = 40000 // ≈4 MiB of memtable, more than the store's
	val := bytes.Repeat([]byte("v"), 64)
	wb := db.NewWriteBatch()
	for i := range keys {
		if err := wb.Set(fmt.Appendf(nil, "x/%08d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	// The files as a crash would leave them: the memtable not flushed.
	copyDir(t, dir, crashed)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := open(t, crashed)
	mustClose(t, s)
	db, err = badger.Open(badger.DefaultOptions(crashed).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte("x/")
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != keys {
		t.Errorf("%d keys after recovery, wrote %d", n, keys)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := os.Create(filepath.Join(to, d.Name()))
		if err != nil {
			return err
		}
		if _, err := io.Copy(dst, src); err != nil {
			dst.Close()
			return err
		}
		return dst.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenDropsManyOrphans drops more orphan keys (bitmaps of segments that
// do not exist, padding left by a crash) than one transaction of the store's
// small memtables can hold.
func TestOpenDropsManyOrphans(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	appendWait(t, s, frame("d", 1, 2, r))
	mustClose(t, s)

	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	wb := db.NewWriteBatch()
	for i := range 5000 {
		k := binary.BigEndian.AppendUint16([]byte("r/"), r)
		k = binary.BigEndian.AppendUint64(append(k, '/'), uint64(1000+i))
		if err := wb.Set(k, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := wb.Set(binary.BigEndian.AppendUint32([]byte("p/"), uint32(i)), make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	if got := pendingSeqs(t, s, r); len(got["d"]) != 1 {
		t.Errorf("pending after reopen: %v, want d:1", got)
	}
	mustClose(t, s)
	if n := segmentKeys(t, dir); n != 1 {
		t.Errorf("%d segment and bitmap keys after Open dropped orphans, want 1", n)
	}
	db, err = badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte("p/")
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			return fmt.Errorf("padding key %q left after Open", it.Item().Key())
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
