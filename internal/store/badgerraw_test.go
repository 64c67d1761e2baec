package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4/options"
)

// smallStore writes a few frames into dir and returns the bytes of its
// memtable log while the store is open (as a crash would leave it, trailing
// zeros cut), then closes it (which writes a table).
func smallStore(t testing.TB, dir string, frames int) (mem []byte) {
	t.Helper()
	s, err := Open(t.Context(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(Hooks{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	for seq := range uint64(frames) {
		done := make(chan error, 1)
		rec := fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, seq, strings.Repeat("ab", int(seq%3)*600))
		s.Append(&Frame{Device: "d", Seq: seq + 1, Records: [][]byte{rec}, Routes: []uint16{r}}, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	if len(mems) > 0 {
		mem, _ = os.ReadFile(mems[0])
		mem = bytes.TrimRight(mem, "\x00")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return mem
}

func firstFile(t testing.TB, dir, pattern string) []byte {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The log parser (value logs, memtable logs) takes any bytes without
// panicking or allocating by a length it read, and reports only entries
// that lie inside the file.
func FuzzScanLog(f *testing.F) {
	dir := f.TempDir()
	mem := smallStore(f, dir, 6)
	vlog := firstFile(f, dir, "*.vlog")
	for _, b := range [][]byte{mem, vlog} {
		for i := range len(b) + 1 { // cut at every offset (a crash mid-write, a truncated file)
			f.Add(b[:i])
		}
		for i := rawLogHeaderSize; i < len(b); i += 7 { // a flipped byte
			c := bytes.Clone(b)
			c[i] ^= 0x5a
			f.Add(c)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := scanLog(data, func(r logRecord) {
			if int(r.offset)+int(r.size) > len(data) || len(r.key) < 8 {
				t.Fatalf("entry at %d of %d bytes in a %d-byte file", r.offset, r.size, len(data))
			}
		})
		if s.end > len(data) {
			t.Fatalf("end %d beyond %d bytes", s.end, len(data))
		}
		for _, d := range s.damage {
			if d.from < 0 || d.to > len(data) || d.from >= d.to {
				t.Fatalf("damage %+v in %d bytes", d, len(data))
			}
		}
	})
}

// The table parser takes any bytes without panicking: index, blocks, and
// the best-effort reading of a damaged block's keys.
func FuzzTable(f *testing.F) {
	dir := f.TempDir()
	smallStore(f, dir, 40)
	sst := firstFile(f, dir, "*.sst")
	f.Add(sst)
	for i := 0; i < len(sst); i += max(1, len(sst)/200) {
		f.Add(sst[:i])
		c := bytes.Clone(sst)
		c[i] ^= 0x5a
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range []options.CompressionType{options.None, options.Snappy} {
			tab, err := parseTable("000001.sst", data, c, c == options.Snappy)
			if err != nil {
				continue
			}
			for i := range tab.blocks {
				_ = tab.block(i, func(key []byte, _ uint64, _ byte, _ []byte) {
					if key == nil {
						t.Fatal("nil key")
					}
				})
				_ = salvageBlockKeys(tab, i)
			}
		}
	})
}

// A MANIFEST that lost its last change sets at a change-set boundary (no
// partial change set to see) does not list the tables they created: Badger
// would delete them. Open refuses when an unlisted table holds data newer
// than every listed one, and accepts an unlisted table with older data (a
// crash can leave one behind, replaced by a compaction).
func TestOrphanTables(t *testing.T) {
	dir := t.TempDir()
	smallStore(t, dir, 20)
	manifest1 := firstFile(t, dir, "MANIFEST")
	tables1, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables1) == 0 {
		t.Fatal("no table after the first session")
	}
	oldTable := firstFile(t, dir, filepath.Base(tables1[0]))
	smallStore(t, dir, 20) // a second session: a newer table (the first may be compacted away)
	tables2, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	var newer []string // the second session may write more than one
	for _, p := range tables2 {
		if !slices.Contains(tables1, p) {
			newer = append(newer, filepath.Base(p))
		}
	}
	if len(newer) == 0 {
		t.Fatalf("tables %v, then %v: want a new one", tables1, tables2)
	}

	// The current MANIFEST and an older table it does not list: accepted
	// (Badger deletes the table).
	leftover := t.TempDir()
	copyFiles(t, dir, leftover)
	if err := os.WriteFile(filepath.Join(leftover, "000099.sst"), oldTable, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), Options{Dir: leftover})
	if err != nil {
		t.Fatalf("Open with an older table the MANIFEST does not list = %v", err)
	}
	_ = s.Close()

	// The first session's MANIFEST, which does not know the newer table:
	// refused, naming it.
	lost := t.TempDir()
	copyFiles(t, dir, lost)
	if err := os.WriteFile(filepath.Join(lost, "MANIFEST"), manifest1, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lost, filepath.Base(tables1[0])), oldTable, 0o644); err != nil {
		t.Fatal(err) // the first session's table, which that MANIFEST lists
	}
	_, err = Open(t.Context(), Options{Dir: lost})
	if !errors.Is(err, ErrDamaged) || !slices.ContainsFunc(newer, func(n string) bool { return strings.Contains(err.Error(), n) }) {
		t.Fatalf("Open with a MANIFEST that lost a table = %v, want ErrDamaged naming one of %s", err, newer)
	}
}

func copyFiles(t *testing.T, from, to string) {
	t.Helper()
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

// The marker: written at the first Open, with the route table; a directory
// without it but with Badger's files gets one (a store written before
// markers); with it, a directory whose Badger files are all gone is refused.
func TestMarker(t *testing.T) {
	dir := t.TempDir()
	smallStore(t, dir, 3)
	m, err := readMarker(dir)
	if err != nil || m.routes["r"] != 1 || m.created.IsZero() {
		t.Fatalf("marker after Open: %+v, %v; want route r=1 and a creation time", m, err)
	}
	s, err := Open(t.Context(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RouteID(`odd "name" with spaces`); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if m, err := readMarker(dir); err != nil || m.routes[`odd "name" with spaces`] != 2 {
		t.Fatalf("marker after a new route: %+v, %v", m, err)
	}

	// Migration: a store without a marker opens and gets one.
	if err := os.Remove(filepath.Join(dir, markerName)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open without a marker = %v", err)
	}
	_ = s.Close()
	if m, err := readMarker(dir); err != nil || len(m.routes) != 2 {
		t.Fatalf("marker after migration: %+v, %v", m, err)
	}

	// Everything of Badger's gone, the marker left: refused.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != markerName {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	if _, err := Open(t.Context(), Options{Dir: dir}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "MANIFEST") {
		t.Fatalf("Open with only the marker left = %v, want ErrDamaged naming MANIFEST", err)
	}
}
