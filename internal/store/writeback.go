package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Background writeback of the value log.
//
// Without SyncWrites, Badger writes the value log through a shared mapping
// and flushes it only when it rotates to the next file: it msyncs the whole
// file (16 MiB, see valueLogFileSize) inside its write path, so every commit
// queued behind that rotation waits for it. On the development machine that
// stalled commits for 60–200 ms about once a second at 120k messages/s, and
// the stall went straight into the devices' ACK latency (p99).
//
// The writeback loop takes that work out of the write path: every interval it
// asks the kernel to start writing the newest value-log file's dirty pages
// (sync_file_range with SYNC_FILE_RANGE_WRITE, which does not wait), so the
// msync at rotation finds little left to do. It changes no durability promise:
// without store.sync, acknowledged data survives a crash of the process, not
// of the machine, as before.
//
// With store.sync Badger writes synchronously and the loop only pages out the
// value log (see pageout.go).
const writebackInterval = 50 * time.Millisecond

// pageoutTicks is how often, in writeback ticks, the loop pages out the value
// log: first right after Open, which reads the whole value log, then every 5 s.
const pageoutTicks = 100

// runWriteback is the writeback loop; it ends when gcStop closes.
func (s *Store) runWriteback() {
	defer close(s.writebackDone)
	t := time.NewTicker(writebackInterval)
	defer t.Stop()
	var f *os.File
	fid := -1
	dir, pageout := mapsDir(s.opts.Dir), true
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for tick := 0; ; tick++ {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		// Badger numbers its value-log files in sequence: look for the next one each tick and
		// rescan the directory now and then (and while none is known).
		newest := fid
		if _, err := os.Stat(filepath.Join(s.opts.Dir, vlogName(fid+1))); err == nil {
			newest = fid + 1
		} else if fid < 0 || tick%40 == 0 {
			newest = newestVlog(s.opts.Dir)
		}
		if newest != fid {
			if f != nil {
				f.Close()
				f = nil
			}
			fid = newest
			if fid >= 0 {
				f, _ = os.Open(filepath.Join(s.opts.Dir, vlogName(fid)))
			}
		}
		if f != nil && !s.opts.Sync {
			// Errors are not fatal: this only moves work earlier.
			_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		}
		if pageout && tick%pageoutTicks == 0 {
			if ms, err := vlogMappings(dir, fid); err == nil && len(ms) > 0 {
				pageout = pageOut(ms)
			}
		}
	}
}

// newestVlog is the highest value-log file ID in dir, or -1.
func newestVlog(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	best := -1
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".vlog") {
			continue
		}
		if id, err := strconv.Atoi(strings.TrimSuffix(name, ".vlog")); err == nil && id > best {
			best = id
		}
	}
	return best
}

// vlogName is Badger's value-log file name for fid.
func vlogName(fid int) string { return fmt.Sprintf("%06d.vlog", fid) }
