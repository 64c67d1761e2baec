package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// VerifyReport is what Verify found in a store directory.
type VerifyReport struct {
	Dir      string
	Problems []Problem // damage; none for a healthy directory
	Marker   bool      // the store's marker file is there

	// What was read.
	Tables, ValueLogs, MemtableLogs int
	// What the directory holds (as far as it is readable).
	Keys        int               // live keys
	Segments    int               // journal segments not yet retired
	Records     int               // records in them (delivered or not)
	DeadLetters int               // dead letters, including those being replayed
	Checkpoints int               // device checkpoint keys
	Routes      map[string]uint16 // the route-name table
}

// Verify checks a store directory offline, without Badger: the MANIFEST and
// the tables it lists, every block of every table, every entry of the
// memtable and value logs (checksums), every value a live key points to, and
// that every segment, checkpoint and dead letter decodes. It reports every
// problem it finds; an error means it could not check (the directory does not
// exist, or a running relay holds it: ErrInUse). It holds the directory's
// lock (shared) while it reads, so a relay cannot start on it meanwhile;
// concurrent Verify and Salvage calls on one directory are safe.
func Verify(dir string) (*VerifyReport, error) {
	return verifyDir(dir, true)
}

func verifyDir(dir string, lock bool) (*VerifyReport, error) {
	v, err := buildView(dir, lock, false)
	if err != nil {
		return nil, err
	}
	defer v.close()
	rep := &VerifyReport{
		Dir:          dir,
		Marker:       hasMarker(dir),
		Tables:       len(v.st.read),
		ValueLogs:    len(v.files.vlogs),
		MemtableLogs: len(v.files.mems),
		Routes:       map[string]uint16{},
	}
	bad := newValueFailures()
	for _, k := range v.keys() {
		e := v.live[k]
		rep.Keys++
		val, err := v.value(e)
		if err != nil {
			bad.add(e, err)
			continue
		}
		if err := checkValue(e.key, val, rep); err != nil {
			file, off := v.location(e)
			v.problems = append(v.problems, Problem{File: file, Offset: off, What: fmt.Sprintf("%s: %v", describeKey(e.key), err)})
		}
	}
	rep.Problems = append(v.problems, bad.problems()...)
	// The marker's copy of the route table (marker.go): a name missing from
	// the store went with a damaged or missing file.
	if m, err := readMarker(dir); err == nil {
		for _, name := range sortedNames(m.routes) {
			if _, ok := rep.Routes[name]; !ok {
				rep.Problems = append(rep.Problems, Problem{File: markerName, Offset: -1, What: fmt.Sprintf(
					"route %q (ID %d) is in the marker's copy of the route table but its key is not in the store: lost with a damaged or missing file", name, m.routes[name])})
			}
		}
	}
	return rep, nil
}

// checkValue decodes a live value by its key's kind and counts it in rep.
func checkValue(key, val []byte, rep *VerifyReport) error {
	switch {
	case bytes.HasPrefix(key, prefixSegment):
		id, ok := parseIDKey(key)
		if !ok {
			return errors.New("malformed key")
		}
		enc, _, err := segmentValue(id, val, nil)
		if err != nil {
			return err
		}
		seg, err := DecodeSegment(id, enc)
		if err != nil {
			return err
		}
		rep.Segments++
		rep.Records += seg.Len()
	case bytes.HasPrefix(key, prefixCheckpoint):
		rep.Checkpoints++
		return decodeCheckpoint(val, func([]byte, uint64) {})
	case bytes.HasPrefix(key, prefixDead), bytes.HasPrefix(key, prefixReplay):
		if len(key) != deadKeyLen {
			return errors.New("malformed key")
		}
		rep.DeadLetters++
		_, err := decodeDeadLetter(binary.BigEndian.Uint16(key[2:4]), binary.BigEndian.Uint64(key[5:]), val)
		return err
	case bytes.HasPrefix(key, prefixRouteName):
		if len(val) != 2 {
			return fmt.Errorf("route ID of %d bytes", len(val))
		}
		rep.Routes[string(key[len(prefixRouteName):])] = binary.BigEndian.Uint16(val)
	case bytes.Equal(key, keyFormat):
		if len(val) != 1 {
			return fmt.Errorf("format of %d bytes", len(val))
		}
	}
	return nil
}

// rawView is the newest version of every key of a store directory, read from
// its files without Badger (see badgerraw.go).
type rawView struct {
	dir      string
	files    rawFiles
	st       *structural
	problems []Problem
	live     map[string]*rawEntry

	// Key ranges whose newest versions may have been in unreadable places
	// (table blocks, whole tables, memtable-log entries). unknownAll: any key.
	unknown    []keyRange
	unknownAll bool
	unknownWhy []string        // the unreadable places, for reports
	damaged    []rawEntry      // what damaged blocks seem to hold (keys, versions, meta; no values)
	found      map[string]bool // keys with a readable version, deletions included

	keepVlog bool
	vlog     []vlogRef // every readable value-log entry, when keepVlog

	vlogFiles map[uint32]*os.File
	unlock    func()
}

type keyRange struct{ from, to []byte } // user keys, inclusive; to nil: no end

type vlogRef struct {
	key     []byte
	version uint64
	vp      rawVptr
}

// buildView reads dir. lock takes the directory's lock (shared) first.
// keepVlog gathers the value-log entries so that keys whose newest version
// was in an unreadable place can be recovered from the value log (salvage).
func buildView(dir string, lock, keepVlog bool) (*rawView, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: %w", dir, fs.ErrInvalid)
	}
	v := &rawView{dir: dir, live: map[string]*rawEntry{}, keepVlog: keepVlog, vlogFiles: map[uint32]*os.File{}}
	if lock {
		if v.unlock, err = lockDir(dir, true); err != nil {
			return nil, err
		}
	}
	if v.files, err = listRawFiles(dir); err != nil {
		v.close()
		return nil, err
	}
	v.st = structuralCheck(dir, v.files, hasMarker(dir), v)
	v.problems = append(v.problems, v.st.problems...)
	for id, t := range v.st.read {
		if t == nil {
			v.lostAll(tableName(id) + " (unreadable)")
		}
	}
	if v.st.missing {
		for id := range v.st.manifest.Tables {
			if !v.st.tables[id] {
				v.lostAll(tableName(id) + " (missing)")
			}
		}
	}
	if keepVlog && (v.unknownAll || len(v.unknown) > 0) {
		for _, r := range v.vlog {
			if !v.inUnknown(r.key) {
				continue
			}
			if e := v.live[string(r.key)]; e != nil && e.version >= r.version {
				continue
			}
			v.live[string(r.key)] = &rawEntry{key: r.key, version: r.version, meta: rawBitValuePointer,
				value: encodeVptr(r.vp), where: vlogName(int(r.vp.fid))}
		}
	}
	v.found = make(map[string]bool, len(v.live))
	for k, e := range v.live {
		v.found[k] = true
		if e.deleted() || bytes.HasPrefix(e.key, rawBadgerPrefix) || bytes.HasPrefix(e.key, prefixPad) {
			delete(v.live, k)
		}
	}
	return v, nil
}

func (v *rawView) close() {
	for _, f := range v.vlogFiles {
		f.Close()
	}
	if v.unlock != nil {
		v.unlock()
	}
}

// put keeps e if it is the newest version of its key so far.
func (v *rawView) put(e *rawEntry) {
	if old := v.live[string(e.key)]; old == nil || e.version > old.version {
		v.live[string(e.key)] = e
	}
}

// lostAll notes that the newest version of any key may have been in where.
func (v *rawView) lostAll(where string) {
	v.unknownAll = true
	v.unknownWhy = append(v.unknownWhy, where+": any key")
}

// blockLost notes that the keys of block i of t are unknown.
func (v *rawView) blockLost(t *rawTable, i int) {
	from, _, _ := splitVersion(t.blocks[i].firstKey)
	r := keyRange{from: from}
	why := fmt.Sprintf("%s block %d: keys from %s", t.name, i, describeKey(from))
	if i+1 < len(t.blocks) {
		r.to, _, _ = splitVersion(t.blocks[i+1].firstKey)
		why += " to " + describeKey(r.to)
	} else {
		why += " on"
	}
	v.unknown = append(v.unknown, r)
	v.unknownWhy = append(v.unknownWhy, why)
	// What the block seems to hold: keys within its range (from the index,
	// whose checksum held) and in order; a key a flipped byte changed
	// usually is not.
	var prev []byte
	for _, e := range salvageBlockKeys(t, i) {
		if bytes.Compare(e.key, r.from) < 0 || (r.to != nil && bytes.Compare(e.key, r.to) > 0) || bytes.Compare(e.key, prev) < 0 {
			continue
		}
		prev = e.key
		e.where = fmt.Sprintf("%s block %d", t.name, i)
		v.damaged = append(v.damaged, e)
	}
}

// lostInDamage returns the keys that damaged blocks seem to hold (not as
// deletions) and that no readable file has any version of, deletions
// included. (A damaged block's versions cannot be trusted, so a key found
// elsewhere counts as recovered: see SalvageReport.Uncertain.)
func (v *rawView) lostInDamage() []*rawEntry {
	var lost []*rawEntry
	seen := map[string]bool{}
	for i := range v.damaged {
		e := &v.damaged[i]
		if e.deleted() || seen[string(e.key)] || bytes.HasPrefix(e.key, rawBadgerPrefix) || bytes.HasPrefix(e.key, prefixPad) ||
			bytes.HasPrefix(e.key, prefixCold) { // the cold-segment index: Open rebuilds it
			continue
		}
		if v.found[string(e.key)] {
			continue
		}
		seen[string(e.key)] = true
		lost = append(lost, e)
	}
	return lost
}

func (v *rawView) inUnknown(key []byte) bool {
	if v.unknownAll {
		return true
	}
	for _, r := range v.unknown {
		if bytes.Compare(key, r.from) >= 0 && (r.to == nil || bytes.Compare(key, r.to) <= 0) {
			return true
		}
	}
	return false
}

// memLog applies the committed entries of a memtable log. Badger writes a
// transaction's entries, then an entry that closes it; entries after the
// last such closing entry belong to a transaction that was not committed
// (and not acknowledged) when the process stopped.
func (v *rawView) memLog(name string, recs []logRecord, scan logScan) {
	if len(scan.damage) > 0 {
		v.lostAll(name + " (damaged entries)") // they may have held newer versions of any key
	}
	lastFin := -1
	for i, r := range recs {
		if r.meta&rawBitFinTxn != 0 {
			lastFin = i
		}
	}
	for i, r := range recs {
		if r.meta&rawBitFinTxn != 0 || (r.meta&rawBitTxn != 0 && i > lastFin) {
			continue
		}
		key, version, ok := splitVersion(r.key)
		if !ok {
			continue
		}
		v.put(&rawEntry{key: key, version: version, meta: r.meta, value: r.value,
			where: fmt.Sprintf("%s at offset %d", name, r.offset)})
	}
}

func (v *rawView) vlogRecord(fid uint32, r logRecord) {
	if !v.keepVlog {
		return
	}
	key, version, ok := splitVersion(r.key)
	if !ok {
		return
	}
	v.vlog = append(v.vlog, vlogRef{key: bytes.Clone(key), version: version, vp: rawVptr{fid: fid, length: r.size, offset: r.offset}})
}

// keys returns the live keys in order.
func (v *rawView) keys() []string {
	ks := make([]string, 0, len(v.live))
	for k := range v.live {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// value returns e's value, reading it from the value log if e holds a
// pointer. The error says why it cannot be read; a *valueError says where.
func (v *rawView) value(e *rawEntry) ([]byte, error) {
	if e.meta&rawBitValuePointer == 0 {
		return e.value, nil
	}
	vp, ok := decodeVptr(e.value)
	if !ok {
		return nil, &valueError{file: e.file(), offset: -1, err: errors.New("malformed value pointer")}
	}
	name := vlogName(int(vp.fid))
	f := v.vlogFiles[vp.fid]
	if f == nil {
		var err error
		f, err = os.Open(filepath.Join(v.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &valueError{file: name, offset: -1, err: errors.New("the value-log file is missing")}
		}
		if err != nil {
			return nil, &valueError{file: name, offset: -1, err: err}
		}
		v.vlogFiles[vp.fid] = f
	}
	val, err := readVptr(f, vp, append(append([]byte(nil), e.key...), versionSuffix(e.version)...))
	if err != nil {
		return nil, &valueError{file: name, offset: int64(vp.offset), err: err}
	}
	return val, nil
}

// valueError is a value that cannot be read, with where it should be.
type valueError struct {
	file   string
	offset int64
	err    error
}

func (e *valueError) Error() string { return e.err.Error() }
func (e *valueError) Unwrap() error { return e.err }

func versionSuffix(version uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, ^version)
}

func encodeVptr(vp rawVptr) []byte {
	b := make([]byte, rawVptrSize)
	binary.NativeEndian.PutUint32(b[0:4], vp.fid)
	binary.NativeEndian.PutUint32(b[4:8], vp.length)
	binary.NativeEndian.PutUint32(b[8:12], vp.offset)
	return b
}

// file names where e was found (its table, memtable log or value log).
func (e *rawEntry) file() string {
	name, _, _ := strings.Cut(e.where, " ")
	return name
}

// location is where e's value is: its value-log entry, or where e was found.
func (v *rawView) location(e *rawEntry) (file string, offset int64) {
	if e.meta&rawBitValuePointer != 0 {
		if vp, ok := decodeVptr(e.value); ok {
			return vlogName(int(vp.fid)), int64(vp.offset)
		}
	}
	return e.file(), -1
}

// valueFailures gathers unreadable values per file, so that a truncated
// value log is one problem, not one per segment.
type valueFailures struct {
	byFile map[string]*fileFailures
	order  []string
}

type fileFailures struct {
	first  *valueError
	keys   []string
	others int
}

func newValueFailures() *valueFailures { return &valueFailures{byFile: map[string]*fileFailures{}} }

func (b *valueFailures) add(e *rawEntry, err error) {
	var ve *valueError
	if !errors.As(err, &ve) {
		ve = &valueError{file: e.file(), offset: -1, err: err}
	}
	f := b.byFile[ve.file]
	if f == nil {
		f = &fileFailures{first: ve}
		b.byFile[ve.file] = f
		b.order = append(b.order, ve.file)
	}
	if len(f.keys) < 8 {
		f.keys = append(f.keys, describeKey(e.key))
	} else {
		f.others++
	}
}

func (b *valueFailures) problems() []Problem {
	var ps []Problem
	for _, name := range b.order {
		f := b.byFile[name]
		n := len(f.keys) + f.others
		what := fmt.Sprintf("%d live values unreadable (%s", n, strings.Join(f.keys, ", "))
		if f.others > 0 {
			what += fmt.Sprintf(" and %d more", f.others)
		}
		what += "); the first: " + f.first.err.Error()
		ps = append(ps, Problem{File: name, Offset: f.first.offset, What: what})
	}
	return ps
}

// describeKey names a store key for people.
func describeKey(k []byte) string {
	switch {
	case bytes.HasPrefix(k, prefixSegment) && len(k) == segKeyLen:
		return fmt.Sprintf("segment %d", binary.BigEndian.Uint64(k[2:]))
	case bytes.HasPrefix(k, prefixBitmap) && len(k) == bitmapKeyLen:
		route, seg, _ := parseBitmapKey(k)
		return fmt.Sprintf("delivery bitmap of route %d in segment %d", route, seg)
	case bytes.HasPrefix(k, prefixCold) && len(k) == bitmapKeyLen:
		route, seg, _ := parseBitmapKey(k)
		return fmt.Sprintf("cold-segment index of route %d for segment %d", route, seg)
	case bytes.HasPrefix(k, prefixCheckpoint) && len(k) == ckKeyLen:
		return fmt.Sprintf("device checkpoint %d", binary.BigEndian.Uint64(k[2:]))
	case bytes.HasPrefix(k, prefixDead) && len(k) == deadKeyLen:
		return fmt.Sprintf("dead letter %d of route %d", binary.BigEndian.Uint64(k[5:]), binary.BigEndian.Uint16(k[2:4]))
	case bytes.HasPrefix(k, prefixReplay) && len(k) == deadKeyLen:
		return fmt.Sprintf("replayed dead letter %d of route %d", binary.BigEndian.Uint64(k[5:]), binary.BigEndian.Uint16(k[2:4]))
	case bytes.HasPrefix(k, prefixRouteName):
		return fmt.Sprintf("route name %q", k[len(prefixRouteName):])
	default:
		return fmt.Sprintf("key %q", k)
	}
}
