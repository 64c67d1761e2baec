package store

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseMapsLine(t *testing.T) {
	f := func(line string, want mapping, ok bool) {
		t.Helper()
		got, gotOK := parseMapsLine([]byte(line))
		if gotOK != ok || got != want {
			t.Errorf("parseMapsLine(%q) = %+v, %v, want %+v, %v", line, got, gotOK, want, ok)
		}
	}
	f("7f0a1c000000-7f0a1e000000 rw-s 00000000 fd:01 1234  /data/000001.vlog",
		mapping{start: 0x7f0a1c000000, end: 0x7f0a1e000000, path: "/data/000001.vlog"}, true)
	f("7f0a1c000000-7f0a1e000000 rw-s 00000000 fd:01 1234  /data dir/000001.vlog",
		mapping{start: 0x7f0a1c000000, end: 0x7f0a1e000000, path: "/data dir/000001.vlog"}, true)
	f("7ffd3c5e2000-7ffd3c603000 rw-p 00000000 00:00 0                          [stack]",
		mapping{start: 0x7ffd3c5e2000, end: 0x7ffd3c603000, path: "[stack]"}, true)
	f("7f0a1c000000-7f0a1e000000 rw-p 00000000 00:00 0", mapping{}, false) // anonymous
	f("zz-7f0a1e000000 rw-s 00000000 fd:01 1234 /x.vlog", mapping{}, false)
	f("", mapping{}, false)
}

// rssOf sums the resident kilobytes of the mappings of path in /proc/self/smaps.
func rssOf(t *testing.T, paths map[string]bool) int {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, kb := false, 0
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			m, _ := parseMapsLine([]byte(line)) // a mapping's first line; anonymous ones have no path
			in = paths[m.path]
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			kb += n
		}
	}
	return kb
}

// TestPageOut: the value-log files behind the one being written leave the resident set.
func TestPageOut(t *testing.T) {
	old := valueLogFileSize
	valueLogFileSize = 1 << 20
	defer func() { valueLogFileSize = old }()
	dir := t.TempDir()
	s, err := Open(t.Context(), Options{Dir: dir, MaxCommitFrames: 64})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(Hooks{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		pad := make([]byte, 1000)
		for j := range pad {
			pad[j] = byte(r.Uint32())
		}
		rec := []byte(fmt.Sprintf(`{"pad":"%x"}`, pad)) // incompressible
		done := make(chan error, 1)
		s.Append(&Frame{Device: "d", Seq: uint64(i + 1), Records: [][]byte{rec}, Routes: []uint16{1}}, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	newest := newestVlog(dir)
	ms, err := vlogMappings(mapsDir(dir), newest)
	if err != nil || len(ms) < 2 {
		t.Fatalf("vlogMappings = %d mappings, %v; want the older value-log files", len(ms), err)
	}
	// Measure the files before the two newest: Badger creates the next file before it
	// finishes writing the last one.
	paths := map[string]bool{}
	for _, m := range ms {
		if !strings.HasSuffix(m.path, vlogName(newest-1)) {
			paths[m.path] = true
		}
	}
	// Dirty pages are not reclaimed until written back (the kernel does it within its
	// dirty_expire interval, Badger when it rotates a file): write them back now.
	unix.Sync()
	before := rssOf(t, paths)
	if !pageOut(ms) {
		t.Skip("kernel without MADV_PAGEOUT")
	}
	after := rssOf(t, paths)
	// Pages still being written back stay; the loop pages out again every few seconds.
	for i := 0; i < 10 && after > before/4; i++ {
		time.Sleep(100 * time.Millisecond)
		pageOut(ms)
		after = rssOf(t, paths)
	}
	t.Logf("older value-log files: %d KiB resident before paging out, %d KiB after", before, after)
	if before < 256 || after > before/4 {
		t.Errorf("resident KiB of older value-log files: %d before, %d after paging out; want most of it gone", before, after)
	}
}
