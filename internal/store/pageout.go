package store

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Paging out the value log.
//
// Badger maps every value-log file into the process (shared, read-write) and
// keeps the mapping until the file is collected. Pages written or read through
// it stay in the process's resident set (RssFile) until the kernel needs the
// memory, so during a long endpoint outage the relay's RSS grows with the
// backlog by the size of its value log even though its heap does not (see
// resident.go). The pages are clean once written back, and rereading one is
// a page fault served from the page cache or the disk.
//
// The writeback loop therefore asks the kernel, every pageoutInterval, to
// reclaim the pages of every value-log file but the one being written
// (madvise MADV_PAGEOUT over its mapping, found in /proc/self/maps). The
// advice never changes what the memory holds — dirty pages are written back
// first, anonymous ones are left alone without swap — so a mapping that
// changed between reading the map and the call comes to no harm. Kernels
// without MADV_PAGEOUT (before 5.4) refuse it, and the loop stops trying.

// mapping is an address range of the process mapped from a file.
type mapping struct {
	start, end uintptr
	path       string
}

// vlogMappings returns the mappings of value-log files in dir, other than
// the file numbered skip.
func vlogMappings(dir string, skip int) ([]mapping, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		m, ok := parseMapsLine(sc.Bytes())
		if !ok || filepath.Dir(m.path) != dir || !strings.HasSuffix(m.path, ".vlog") {
			continue
		}
		if id, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(m.path), ".vlog")); err != nil || id == skip {
			continue
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// parseMapsLine parses one line of /proc/<pid>/maps:
// "start-end perms offset dev inode   path".
func parseMapsLine(line []byte) (mapping, bool) {
	fields := bytes.Fields(line)
	if len(fields) < 6 {
		return mapping{}, false
	}
	addr := bytes.SplitN(fields[0], []byte("-"), 2)
	if len(addr) != 2 {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(string(addr[0]), 16, 64)
	end, err2 := strconv.ParseUint(string(addr[1]), 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return mapping{}, false
	}
	// The path is the rest of the line after the inode (it may contain spaces).
	i := bytes.Index(line, fields[5])
	return mapping{start: uintptr(start), end: uintptr(end), path: string(line[i:])}, true
}

// pageOut advises the kernel to reclaim the pages of ms. It reports false if
// the kernel does not know the advice.
func pageOut(ms []mapping) bool {
	for _, m := range ms {
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_PAGEOUT)
		if errno == unix.EINVAL {
			return false
		}
	}
	return true
}

// mapsDir is dir as /proc/self/maps names it: absolute, symbolic links
// resolved.
func mapsDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return dir
}
