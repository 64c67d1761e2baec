package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Corruption is loud. Badger treats some damage as something to repair: a
// directory without MANIFEST gets a new, empty one and its tables are deleted
// as orphans; a MANIFEST cut short is cut at the last whole change set and
// the tables it no longer lists are deleted; the last value-log file is cut
// at its first bad entry, dropping every entry after it; a table whose
// checksum fails is skipped (with ChecksumVerificationMode) or read as it is
// (without), and a corrupt block panics in Badger's own goroutines, which
// nothing can recover. So Open checks the directory itself before Badger
// sees it (checkBeforeOpen), reads it with Badger only when nothing is wrong,
// and, should Badger or the store's own recovery still fail, looks at every
// file (verifyDir) to say which one is damaged. A damaged directory is
// refused with a *DamageError; it is never opened empty.
//
// What the check reads at every Open, and what it costs: the MANIFEST; every
// table, whole (the LSM tree holds keys, value pointers and small values: a
// few MB even for a large backlog); the memtable logs (a MiB or two each);
// and the newest value-log file (up to twice the value-log file size). The
// other value-log files are read by the store's own recovery (load reads
// every live segment), with Badger checking each value's checksum
// (badgerOptions: VerifyValueChecksum).
//
// The store knows whether it held data from its marker file, written at the
// first Open (and at the first Open of a directory written before markers
// existed): a directory with the marker, or with any of Badger's data files,
// must have a MANIFEST.

// lockName is Badger's pid file; Badger flocks the directory itself.
const lockName = "LOCK"

// lockDir takes the flock Badger takes on dir (shared for readers), so that
// nothing reads the files while a relay writes them. The error wraps
// ErrInUse when another process holds the directory.
func lockDir(dir string, shared bool) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "another process"
			if b, err := os.ReadFile(filepath.Join(dir, lockName)); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					who = "process " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("%s: held by %s (a running relay?): %w", dir, who, ErrInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// Problem is one piece of damage found in a store directory.
type Problem struct {
	File   string // the file's name in the directory
	Offset int64  // where in the file; -1 when it does not apply
	What   string
}

func (p Problem) String() string {
	if p.Offset >= 0 {
		return fmt.Sprintf("%s at offset %d: %s", p.File, p.Offset, p.What)
	}
	return p.File + ": " + p.What
}

// DamageError is Open's answer for a directory whose files are missing or
// damaged: it names them and the way out. errors.Is(err, ErrDamaged) holds.
type DamageError struct {
	Dir      string
	Problems []Problem
	Cause    error // what Badger or the store's recovery said, if they ran; may be nil
}

// maxListed is how many problems Error lists.
const maxListed = 3

func (e *DamageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store in %s is damaged: ", e.Dir)
	for i, p := range e.Problems {
		if i == maxListed {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	if e.Cause != nil {
		if len(e.Problems) > 0 {
			b.WriteString(" (")
		}
		b.WriteString(e.Cause.Error())
		if len(e.Problems) > 0 {
			b.WriteString(")")
		}
	}
	fmt.Fprintf(&b, ". Refusing to open it rather than start without its data: list every problem with "+
		"`fleetrelay store verify -data-dir %s`, copy out what is readable with "+
		"`fleetrelay store salvage -from %s -to NEW_DIR` and start the relay on NEW_DIR "+
		"(README, Store recovery)", e.Dir, e.Dir)
	return b.String()
}

func (e *DamageError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrDamaged}
	}
	return []error{ErrDamaged, e.Cause}
}

// preOpen is what Open learned about its directory before Badger opened it.
type preOpen struct {
	dir    string
	marked bool
}

// checkBeforeOpen refuses a directory that held data and whose files are
// missing or damaged (see structuralCheck). A new or empty directory passes.
func checkBeforeOpen(dir string) (*preOpen, error) {
	files, err := listRawFiles(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return &preOpen{dir: dir}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read store directory %q: %w", dir, err)
	}
	p := &preOpen{dir: dir, marked: hasMarker(dir)}
	if !p.marked && !files.holdsData() {
		return p, nil
	}
	unlock, err := lockDir(dir, false)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	defer unlock()
	c := structuralCheck(dir, files, p.marked, nil)
	if len(c.problems) > 0 {
		return nil, &DamageError{Dir: dir, Problems: c.problems}
	}
	return p, nil
}

// openBadgerGuarded is badger.Open with a panic on the calling goroutine
// turned into an error. (Badger also opens tables on goroutines of its own,
// where a panic cannot be recovered: checkBeforeOpen has read every table
// before.)
func openBadgerGuarded(bo badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("badger panicked while opening: %v", r)
		}
	}()
	return badger.Open(bo)
}

// explainOpen is called when Badger or the store's recovery failed on a
// directory that passed checkBeforeOpen: it reads every file (verifyDir) and,
// if that finds damage, returns a *DamageError naming the files, with cause.
// Otherwise cause stands as it is (another process holds the directory, an
// unknown format version, ...).
func explainOpen(dir string, cause error) error {
	if errors.Is(cause, ErrVersion) { // a store of another format version: nothing to look for
		return cause
	}
	rep, err := verifyDir(dir, true) // ErrInUse (another process) leaves cause as it is
	if err != nil || len(rep.Problems) == 0 {
		return cause
	}
	return &DamageError{Dir: dir, Problems: rep.Problems, Cause: cause}
}

// structural is what structuralCheck found.
type structural struct {
	problems []Problem
	manifest *badger.Manifest // nil if missing or unreadable
	// tables to read: the MANIFEST's, plus tables it does not list but which
	// hold data found nowhere else; every table file when the MANIFEST is
	// missing or cut short (a MANIFEST that lost change sets lists tables
	// that were merged into ones it does not list).
	tables map[uint64]bool
	// missing is true when a table the MANIFEST lists is gone while the
	// MANIFEST itself is whole: that table's keys are lost.
	missing bool
	// read is the tables read (whole, all blocks checked), by ID; nil for
	// unreadable ones.
	read map[uint64]*rawTable
	// memVersions are the versions of committed memtable-log entries.
	memVersions map[uint64]bool
	// logScans of the memtable logs and the newest value log, by file name.
	logScans map[string]logScan
}

// structuralCheck checks what Badger relies on at Open: the MANIFEST and the
// tables it lists, tables it does not list (which Badger deletes), the
// memtable logs (which Badger replays up to their first bad entry) and the
// newest value-log file (which Badger cuts at its first bad entry). held says
// the marker is there. With a view (verify, salvage) it also scans every
// value-log file and hands the view every entry it reads; Open passes nil and
// leaves the other value-log files to load.
func structuralCheck(dir string, files rawFiles, held bool, v *rawView) *structural {
	c := &structural{
		tables:      map[uint64]bool{},
		read:        map[uint64]*rawTable{},
		memVersions: map[uint64]bool{},
		logScans:    map[string]logScan{},
	}
	add := func(file string, off int64, format string, args ...any) {
		c.problems = append(c.problems, Problem{File: file, Offset: off, What: fmt.Sprintf(format, args...)})
	}
	held = held || files.holdsData()

	// Memtable logs first: their versions explain tables a crash left
	// outside the MANIFEST.
	for _, fid := range files.mems {
		name := fmt.Sprintf("%05d.mem", fid)
		var recs []logRecord
		scan, ok := scanLogFile(filepath.Join(dir, name), func(r logRecord) {
			if _, ver, ok := splitVersion(r.key); ok {
				c.memVersions[ver] = true
			}
			if v != nil {
				r.key, r.value = bytes.Clone(r.key), bytes.Clone(r.value)
				recs = append(recs, r)
			}
		})
		if !ok {
			add(name, -1, "unreadable")
			continue
		}
		c.logScans[name] = scan
		c.logProblems(name, scan, true)
		if v != nil {
			v.memLog(name, recs, scan)
		}
	}
	vlogs := files.vlogs
	if v == nil && len(vlogs) > 1 {
		vlogs = vlogs[len(vlogs)-1:]
	}
	for i, fid := range vlogs {
		name := vlogName(int(fid))
		scan, ok := scanLogFile(filepath.Join(dir, name), func(r logRecord) {
			if v != nil {
				v.vlogRecord(fid, r)
			}
		})
		if !ok {
			add(name, -1, "unreadable")
			continue
		}
		c.logScans[name] = scan
		c.logProblems(name, scan, i == len(vlogs)-1)
	}

	if !files.manifest {
		if held {
			add(rawManifestName, -1, "missing, while the store held data (%s): Badger would start empty and delete the %d tables",
				heldBy(files, held), len(files.tables))
		}
		for _, id := range files.tables {
			c.tables[id] = true
		}
		c.readTables(dir, nil, v)
		return c
	}
	m, truncated, size, err := readManifest(dir)
	if err != nil {
		add(rawManifestName, -1, "unreadable: %v; Badger would not open the store", err)
		for _, id := range files.tables {
			c.tables[id] = true
		}
		c.readTables(dir, nil, v)
		return c
	}
	c.manifest = &m
	onDisk := map[uint64]bool{}
	for _, id := range files.tables {
		onDisk[id] = true
	}
	if truncated {
		add(rawManifestName, -1, "cut short: it ends inside a change set (%d bytes); Badger would forget the tables of the changes after it and delete them", size)
		for _, id := range files.tables {
			c.tables[id] = true
		}
	}
	for id := range m.Tables {
		if onDisk[id] {
			c.tables[id] = true
		} else if !truncated {
			add(tableName(id), -1, "missing: the MANIFEST lists it")
			c.missing = true
		}
	}
	c.readTables(dir, m.Tables, v)
	if truncated {
		return c
	}
	// Tables the MANIFEST does not list: Badger deletes them. A crash can
	// leave such a table behind legitimately — written by a flush (its data
	// is still in a memtable log) or a compaction (its data is still in the
	// tables it was made of, so it is not newer than them) before the
	// MANIFEST recorded it, or replaced by a compaction and not yet deleted.
	// A table newer than every listed one whose data is in no memtable log
	// is one the MANIFEST lost.
	var newest uint64
	for id := range m.Tables {
		if t := c.read[id]; t != nil {
			newest = max(newest, t.maxVersion)
		}
	}
	for _, id := range files.tables {
		if _, listed := m.Tables[id]; listed {
			continue
		}
		t, err := readTable(filepath.Join(dir, tableName(id)), 0, false)
		if err != nil {
			continue // an unreadable leftover; it holds nothing Badger would use
		}
		if t.maxVersion <= newest || c.memVersions[t.maxVersion] {
			t.close()
			continue
		}
		add(tableName(id), -1, "not listed in the MANIFEST, and holds newer data than the tables it lists (version %d > %d): the MANIFEST lost changes; Badger would delete this table",
			t.maxVersion, newest)
		c.tables[id] = true
		c.checkTable(t, v)
	}
	return c
}

func heldBy(files rawFiles, marker bool) string {
	var what []string
	if marker {
		what = append(what, markerName+" marker")
	}
	if n := len(files.tables); n > 0 {
		what = append(what, fmt.Sprintf("%d tables", n))
	}
	if n := len(files.vlogs); n > 0 {
		what = append(what, fmt.Sprintf("%d value-log files", n))
	}
	if n := len(files.mems); n > 0 {
		what = append(what, fmt.Sprintf("%d memtable logs", n))
	}
	return strings.Join(what, ", ")
}

// readTables reads every table in c.tables, checking every block.
func (c *structural) readTables(dir string, listed map[uint64]badger.TableManifest, v *rawView) {
	for id := range c.tables {
		tm, known := listed[id]
		t, err := readTable(filepath.Join(dir, tableName(id)), tm.Compression, known)
		if err != nil {
			c.problems = append(c.problems, Problem{File: tableName(id), Offset: -1, What: "unreadable: " + err.Error()})
			c.read[id] = nil
			continue
		}
		c.checkTable(t, v)
	}
}

// checkTable checks every block of t, records it as read, and hands its
// entries to v (if not nil), a whole block at a time. It closes t.
func (c *structural) checkTable(t *rawTable, v *rawView) {
	defer t.close()
	c.read[t.id] = t
	var block []rawEntry
	for i, b := range t.blocks {
		block = block[:0]
		err := t.block(i, func(key []byte, version uint64, meta byte, value []byte) {
			if v != nil {
				block = append(block, rawEntry{key: bytes.Clone(key), version: version, meta: meta, value: bytes.Clone(value)})
			}
		})
		if err != nil {
			c.problems = append(c.problems, Problem{File: t.name, Offset: int64(b.offset),
				What: fmt.Sprintf("block %d of %d unreadable: %v", i, len(t.blocks), err)})
			if v != nil {
				v.blockLost(t, i)
			}
			continue
		}
		if v != nil {
			where := fmt.Sprintf("%s block %d", t.name, i)
			for _, e := range block {
				e.where = where
				v.put(&e)
			}
		}
	}
}

// logProblems records the damage of a log scan. last is true for a file
// Badger still writes (a memtable log, the newest value log), where an
// incomplete last entry is a write a crash interrupted, not damage.
func (c *structural) logProblems(name string, s logScan, last bool) {
	if s.encrypt {
		c.problems = append(c.problems, Problem{File: name, Offset: -1, What: "encrypted: the store does not encrypt its files"})
		return
	}
	for _, d := range s.damage {
		what := fmt.Sprintf("%s; %d bytes unreadable", d.why, d.to-d.from)
		if d.to == s.size {
			what += " up to the end of the file"
		} else {
			what += ", readable entries follow"
		}
		if last {
			what += " (Badger would cut the file here)"
		}
		c.problems = append(c.problems, Problem{File: name, Offset: int64(d.from), What: what})
	}
	if s.cutShort != nil && !last {
		c.problems = append(c.problems, Problem{File: name, Offset: int64(s.cutShort.from),
			What: "cut short: " + s.cutShort.why + " (the file was truncated)"})
	}
}

// scanLogFile reads and scans one log file; ok is false if it cannot be read.
func scanLogFile(path string, fn func(r logRecord)) (logScan, bool) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return logScan{}, false
	}
	defer unmap()
	return scanLog(data, fn), true
}
