package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/fb"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/klauspost/compress/snappy"
	"golang.org/x/sys/unix"
)

// Reading a Badger directory without Badger, for the checks before Open
// (integrity.go), verify (verify.go) and salvage (salvage.go). Badger cannot
// be trusted with a damaged directory: without a MANIFEST it deletes every
// table, it cuts the last value log at the first bad entry, it skips a table
// whose checksum fails, and it panics in its own goroutines on a corrupt
// block. These parsers never allocate by a length read from a file without
// checking it against the file, check every checksum, and turn panics into
// errors.
//
// Badger v4's files (as of v4.9.6, the version in go.mod):
//
//   - MANIFEST: "Bdgr", u16 external magic, u16 version; then change sets,
//     each u32 BE length, u32 BE CRC32C, protobuf pb.ManifestChangeSet (read
//     with badger.ReplayManifestFile).
//   - NNNNNN.sst: blocks, the index (flatbuffer fb.TableIndex: block offsets
//     and first keys, max version), u32 BE index length, the index checksum
//     (protobuf pb.Checksum), u32 BE checksum length. A block, compressed as
//     the MANIFEST says: entries, their offsets (u32 each, native byte order),
//     u32 BE entry count, checksum of all that, u32 BE checksum length. An
//     entry: u16 overlap and u16 diff (native byte order), the key's bytes
//     after the overlap with the block's first key, then the value: meta
//     byte, user-meta byte, uvarint expiresAt, value bytes.
//   - NNNNNN.vlog (value log) and NNNNN.mem (the write-ahead log of a
//     memtable not yet written to a table): a 20-byte header (u64 BE key ID,
//     0 without encryption; 12-byte IV), then entries: meta byte, user-meta
//     byte, uvarint key length, uvarint value length, uvarint expiresAt, key,
//     value, u32 BE CRC32C of everything before it. The value log holds the
//     values of at least ValueThreshold bytes; a memtable log holds every
//     write, small values inline and value pointers for the others, in
//     transactions: entries with bitTxn, closed by a "!badger!txn" entry with
//     bitFinTxn whose value is the commit version in decimal.
//
// Keys carry their version: the user key, then u64 BE (MaxUint64 − version).
// A value pointer is u32 file ID, u32 length, u32 offset of the value-log
// entry, in native byte order.

// Badger's meta bits (value.go).
const (
	rawBitDelete       = 1 << 0
	rawBitValuePointer = 1 << 1
	rawBitTxn          = 1 << 6
	rawBitFinTxn       = 1 << 7
)

const (
	rawLogHeaderSize = 20 // value-log and memtable-log file header
	rawMaxHeaderSize = 22 // largest encoded entry header
	rawVptrSize      = 12
	rawMaxKeyLen     = 1 << 16 // Badger refuses longer keys
	rawManifestName  = "MANIFEST"
)

var rawBadgerPrefix = []byte("!badger!")

// rawEntry is one version of one key found in a file.
type rawEntry struct {
	key     []byte // user key, without the version
	version uint64
	meta    byte
	value   []byte // the value, or an encoded value pointer (rawBitValuePointer)
	where   string // file and offset, for reports
}

func (e *rawEntry) deleted() bool { return e.meta&rawBitDelete != 0 }

// rawVptr is a decoded value pointer.
type rawVptr struct{ fid, length, offset uint32 }

func decodeVptr(b []byte) (rawVptr, bool) {
	if len(b) != rawVptrSize {
		return rawVptr{}, false
	}
	return rawVptr{
		fid:    binary.NativeEndian.Uint32(b[0:4]),
		length: binary.NativeEndian.Uint32(b[4:8]),
		offset: binary.NativeEndian.Uint32(b[8:12]),
	}, true
}

// splitVersion splits a key as stored by Badger into user key and version.
func splitVersion(k []byte) (key []byte, version uint64, ok bool) {
	if len(k) < 8 {
		return nil, 0, false
	}
	return k[:len(k)-8], math.MaxUint64 - binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// Badger's file names.
func tableName(id uint64) string { return fmt.Sprintf("%06d.sst", id) }

// rawFiles lists the Badger files of a directory by kind, sorted by ID.
type rawFiles struct {
	manifest bool
	tables   []uint64
	vlogs    []uint32
	mems     []uint32
	other    []string
}

func listRawFiles(dir string) (rawFiles, error) {
	var f rawFiles
	entries, err := os.ReadDir(dir)
	if err != nil {
		return f, err
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		base, ext, _ := strings.Cut(name, ".")
		id, idErr := strconv.ParseUint(base, 10, 32)
		switch {
		case name == rawManifestName:
			f.manifest = true
		case ext == "sst" && idErr == nil:
			f.tables = append(f.tables, id)
		case ext == "vlog" && idErr == nil:
			f.vlogs = append(f.vlogs, uint32(id))
		case ext == "mem" && idErr == nil:
			f.mems = append(f.mems, uint32(id))
		default:
			f.other = append(f.other, name)
		}
	}
	sort.Slice(f.tables, func(i, j int) bool { return f.tables[i] < f.tables[j] })
	sort.Slice(f.vlogs, func(i, j int) bool { return f.vlogs[i] < f.vlogs[j] })
	sort.Slice(f.mems, func(i, j int) bool { return f.mems[i] < f.mems[j] })
	return f, nil
}

// holdsData reports whether the directory has files only a store that held
// data has.
func (f rawFiles) holdsData() bool {
	return f.manifest || len(f.tables) > 0 || len(f.vlogs) > 0 || len(f.mems) > 0
}

// readManifest replays dir's MANIFEST read-only. truncated is true when it
// ends inside a change set (Badger would cut it there and forget the rest).
func readManifest(dir string) (m badger.Manifest, truncated bool, size int64, err error) {
	fp, err := os.Open(filepath.Join(dir, rawManifestName))
	if err != nil {
		return m, false, 0, err
	}
	defer fp.Close()
	st, err := fp.Stat()
	if err != nil {
		return m, false, 0, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable (%v)", r)
		}
	}()
	m, end, err := badger.ReplayManifestFile(fp, 0, badger.DefaultOptions("").WithLogger(nil))
	if err != nil {
		return m, false, st.Size(), err
	}
	return m, end < st.Size(), st.Size(), nil
}

// mapFile maps a file read-only (the check at Open should not add a table's
// or a value log's size to the heap); unmap releases it. An empty file is
// an empty slice.
func mapFile(path string) (data []byte, unmap func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return []byte{}, func() {}, nil
	}
	if st.Size() > math.MaxInt32*2 {
		return nil, nil, fmt.Errorf("%d bytes: too large", st.Size())
	}
	data, err = unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return data, func() { _ = unix.Munmap(data) }, nil
}

// rawTable is one table file, its index read and checked. close unmaps it.
type rawTable struct {
	id          uint64
	name        string
	data        []byte
	unmap       func()
	blocks      []rawBlock
	maxVersion  uint64
	compression options.CompressionType
	known       bool // compression from the MANIFEST; else found by trying
}

type rawBlock struct {
	offset, length uint32
	firstKey       []byte // the block's first key, with version
}

// readTable reads a table file and checks its index. compression is the
// table's block compression from the MANIFEST, if known.
func readTable(path string, compression options.CompressionType, known bool) (t *rawTable, err error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	t, err = parseTable(filepath.Base(path), data, compression, known)
	if err != nil {
		unmap()
		return nil, err
	}
	t.unmap = unmap
	return t, nil
}

// parseTable reads the footer and index of the table file held by data.
func parseTable(name string, data []byte, compression options.CompressionType, known bool) (t *rawTable, err error) {
	t = &rawTable{name: name, data: data, compression: compression, known: known}
	t.id, _ = strconv.ParseUint(strings.TrimSuffix(t.name, ".sst"), 10, 64)
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("index unreadable (%v)", r)
		}
	}()
	pos := len(data)
	if pos < 8 {
		return nil, fmt.Errorf("%d bytes, too short for a table", pos)
	}
	pos -= 4
	chkLen := int(binary.BigEndian.Uint32(data[pos:]))
	if chkLen > pos-4 {
		return nil, errors.New("index checksum length beyond the file")
	}
	pos -= chkLen
	chk, err := parseChecksum(data[pos : pos+chkLen])
	if err != nil {
		return nil, fmt.Errorf("index checksum: %w", err)
	}
	pos -= 4
	indexLen := int(binary.BigEndian.Uint32(data[pos:]))
	if indexLen > pos {
		return nil, errors.New("index length beyond the file")
	}
	index := data[pos-indexLen : pos]
	if err := verifyChecksum(index, chk); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	idx := fb.GetRootAsTableIndex(index, 0)
	t.maxVersion = idx.MaxVersion()
	var bo fb.BlockOffset
	dataEnd := uint64(pos - indexLen)
	for i := range idx.OffsetsLength() {
		if !idx.Offsets(&bo, i) {
			return nil, fmt.Errorf("index: block %d missing", i)
		}
		b := rawBlock{offset: bo.Offset(), length: bo.Len(), firstKey: bytes.Clone(bo.KeyBytes())}
		if uint64(b.offset)+uint64(b.length) > dataEnd {
			return nil, fmt.Errorf("index: block %d beyond the data", i)
		}
		t.blocks = append(t.blocks, b)
	}
	return t, nil
}

// close releases the table's file; its blocks cannot be read after.
func (t *rawTable) close() {
	if t.unmap != nil {
		t.unmap()
		t.unmap, t.data = nil, nil
	}
}

// block decodes block i and calls fn for each of its entries; fn's slices
// are only valid during the call. An error means the block is unreadable
// (fn may have been called for some of its entries before: callers that care
// collect and commit only on success).
func (t *rawTable) block(i int, fn func(key []byte, version uint64, meta byte, value []byte)) (err error) {
	b := t.blocks[i]
	raw := t.data[b.offset : b.offset+b.length]
	if t.known {
		data, err := decompressBlock(raw, t.compression)
		if err != nil {
			return err
		}
		return parseBlock(data, fn)
	}
	// Without a MANIFEST the compression is unknown: the store writes
	// uncompressed tables, older stores wrote Snappy ones.
	var first error
	for _, c := range []options.CompressionType{options.None, options.Snappy} {
		data, err := decompressBlock(raw, c)
		if err == nil {
			err = checkBlock(data)
		}
		if err == nil {
			t.compression, t.known = c, true
			return parseBlock(data, fn)
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func decompressBlock(raw []byte, c options.CompressionType) ([]byte, error) {
	switch c {
	case options.None:
		return raw, nil
	case options.Snappy:
		n, err := snappy.DecodedLen(raw)
		if err != nil || n > 64<<20 {
			return nil, errors.New("snappy block unreadable")
		}
		return snappy.Decode(make([]byte, n), raw)
	default:
		return nil, fmt.Errorf("compression %d not supported", c)
	}
}

// blockLayout finds the parts of a decompressed block.
func blockLayout(data []byte) (entries []byte, offsets []uint32, chk *pb.Checksum, covered []byte, err error) {
	pos := len(data) - 4
	if pos < 4 {
		return nil, nil, nil, nil, errors.New("block too short")
	}
	chkLen := int(binary.BigEndian.Uint32(data[pos:]))
	if chkLen > pos-4 {
		return nil, nil, nil, nil, errors.New("block checksum length beyond the block")
	}
	pos -= chkLen
	if chk, err = parseChecksum(data[pos : pos+chkLen]); err != nil {
		return nil, nil, nil, nil, err
	}
	pos -= 4
	covered = data[:pos+4]
	n := int(binary.BigEndian.Uint32(data[pos:]))
	if n == 0 || n > pos/4 {
		return nil, nil, nil, nil, errors.New("block entry count out of range")
	}
	start := pos - 4*n
	offsets = make([]uint32, n)
	for i := range offsets {
		offsets[i] = binary.NativeEndian.Uint32(data[start+4*i:])
	}
	return data[:start], offsets, chk, covered, nil
}

func checkBlock(data []byte) error {
	_, _, chk, covered, err := blockLayout(data)
	if err != nil {
		return err
	}
	return verifyChecksum(covered, chk)
}

func parseBlock(data []byte, fn func(key []byte, version uint64, meta byte, value []byte)) error {
	entries, offsets, chk, covered, err := blockLayout(data)
	if err != nil {
		return err
	}
	if err := verifyChecksum(covered, chk); err != nil {
		return err
	}
	var base, key []byte
	for i, start := range offsets {
		end := len(entries)
		if i+1 < len(offsets) {
			end = int(offsets[i+1])
		}
		if int(start) > end || end > len(entries) || end-int(start) < 4 {
			return fmt.Errorf("entry %d out of range", i)
		}
		e := entries[start:end]
		overlap := int(binary.NativeEndian.Uint16(e[0:2]))
		diff := int(binary.NativeEndian.Uint16(e[2:4]))
		if 4+diff > len(e) {
			return fmt.Errorf("entry %d: key beyond the entry", i)
		}
		if i == 0 {
			if overlap != 0 {
				return errors.New("first entry overlaps")
			}
			base = e[4 : 4+diff]
		}
		if overlap > len(base) {
			return fmt.Errorf("entry %d: overlap beyond the first key", i)
		}
		key = append(append(key[:0], base[:overlap]...), e[4:4+diff]...)
		v := e[4+diff:]
		if len(v) < 3 {
			return fmt.Errorf("entry %d: value too short", i)
		}
		_, n := binary.Uvarint(v[2:])
		if n <= 0 {
			return fmt.Errorf("entry %d: bad expiry", i)
		}
		user, version, ok := splitVersion(key)
		if !ok {
			return fmt.Errorf("entry %d: key without version", i)
		}
		fn(user, version, v[0], v[2+n:])
	}
	return nil
}

// salvageBlockKeys reads what it can of the entries of a block whose
// checksum fails, for the report of what the block held: its keys cannot be
// trusted, its values even less, so nothing of it is kept. It stops at the
// first entry that does not parse.
func salvageBlockKeys(t *rawTable, i int) (entries []rawEntry) {
	defer func() { _ = recover() }()
	b := t.blocks[i]
	data, err := decompressBlock(t.data[b.offset:b.offset+b.length], t.compression)
	if err != nil {
		return nil
	}
	ents, offsets, _, _, err := blockLayout(data)
	if err != nil {
		return nil
	}
	var base []byte
	for j, start := range offsets {
		end := len(ents)
		if j+1 < len(offsets) {
			end = int(offsets[j+1])
		}
		if int(start)+4 > end || end > len(ents) {
			return entries
		}
		e := ents[start:end]
		overlap := int(binary.NativeEndian.Uint16(e[0:2]))
		diff := int(binary.NativeEndian.Uint16(e[2:4]))
		if j == 0 {
			base = e[4 : 4+diff]
		}
		if overlap > len(base) || 4+diff+3 > len(e) {
			return entries
		}
		key := append(append([]byte(nil), base[:overlap]...), e[4:4+diff]...)
		user, version, ok := splitVersion(key)
		if !ok {
			return entries
		}
		entries = append(entries, rawEntry{key: user, version: version, meta: e[4+diff]})
	}
	return entries
}

// parseChecksum decodes a protobuf pb.Checksum (field 1 algorithm, field 2
// sum, both varints) without the protobuf runtime.
func parseChecksum(b []byte) (*pb.Checksum, error) {
	c := &pb.Checksum{}
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 || tag&7 != 0 {
			return nil, errors.New("checksum unreadable")
		}
		b = b[n:]
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("checksum unreadable")
		}
		b = b[n:]
		switch tag >> 3 {
		case 1:
			c.Algo = pb.Checksum_Algorithm(v)
		case 2:
			c.Sum = v
		}
	}
	if c.Algo != pb.Checksum_CRC32C && c.Algo != pb.Checksum_XXHash64 {
		return nil, fmt.Errorf("checksum algorithm %d unknown", c.Algo)
	}
	return c, nil
}

var errChecksum = errors.New("checksum mismatch")

func verifyChecksum(data []byte, c *pb.Checksum) error {
	if y.CalculateChecksum(data, c.Algo) != c.Sum {
		return errChecksum
	}
	return nil
}

// logRecord is one entry of a value log or memtable log.
type logRecord struct {
	offset uint32
	size   uint32 // header + key + value + CRC
	meta   byte
	key    []byte // with version
	value  []byte
}

// decodeLogRecord decodes the entry at off in data (a whole log file).
// plausible is false when even its header cannot be an entry's; size is
// then 0. An error with plausible true means the entry's header reads but
// its bytes do not (cut short, or checksum mismatch).
func decodeLogRecord(data []byte, off int) (r logRecord, plausible bool, err error) {
	b := data[off:]
	if len(b) < 2 {
		return r, false, errors.New("cut short")
	}
	h := 2
	klen, n := binary.Uvarint(b[h:])
	if n <= 0 {
		return r, false, errors.New("bad header")
	}
	h += n
	vlen, n := binary.Uvarint(b[h:])
	if n <= 0 {
		return r, false, errors.New("bad header")
	}
	h += n
	_, n = binary.Uvarint(b[h:])
	if n <= 0 {
		return r, false, errors.New("bad header")
	}
	h += n
	if klen < 8 || klen > rawMaxKeyLen || vlen > math.MaxUint32 {
		return r, false, errors.New("bad header")
	}
	size := uint64(h) + klen + vlen + 4
	if size > math.MaxUint32 {
		return r, false, errors.New("bad header")
	}
	r = logRecord{offset: uint32(off), size: uint32(size), meta: b[0]}
	if size > uint64(len(b)) {
		return r, true, errors.New("cut short")
	}
	body := b[:size-4]
	if crc32.Checksum(body, y.CastagnoliCrcTable) != binary.BigEndian.Uint32(b[size-4:size]) {
		return r, true, errChecksum
	}
	r.key = body[h : h+int(klen)]
	r.value = body[h+int(klen):]
	return r, true, nil
}

// logDamage is a stretch of a log file that holds no readable entry.
type logDamage struct {
	from, to int // byte range; to == len(file) when nothing readable follows
	why      string
}

// logScan is the result of walking a log file.
type logScan struct {
	size     int
	encrypt  bool        // the header names an encryption key: not readable here
	damage   []logDamage // unreadable stretches followed by readable data, or trailing garbage
	cutShort *logDamage  // the file ends inside an entry (its last bytes; a torn write or a cut)
	end      int         // offset after the last readable entry
}

// scanLog walks a value-log or memtable-log file and calls fn for every
// readable entry, in file order. At an unreadable entry it looks for the
// next readable one: if there is none, the log ends there — zeros (Badger
// preallocates and zero-fills its log files), or an entry a crash
// interrupted while it was being copied in (cutShort; Go's memmove may
// write the head of a large copy last, so such an entry can lack its
// header, and always lacks its checksum, copied last); if there is one, the
// stretch between is damage, and the walk resumes after it. Damage is what
// Badger would cut away with readable entries after it, or a last entry that
// is whole but does not match its checksum. fn's slices are only valid
// during the call.
func scanLog(data []byte, fn func(r logRecord)) logScan {
	s := logScan{size: len(data), end: rawLogHeaderSize}
	if len(data) < rawLogHeaderSize {
		s.cutShort = &logDamage{from: 0, to: len(data), why: "shorter than the file header"}
		s.end = len(data)
		return s
	}
	if binary.BigEndian.Uint64(data[:8]) != 0 {
		s.encrypt = true
		return s
	}
	off := rawLogHeaderSize
	for off < len(data) {
		r, plausible, err := decodeLogRecord(data, off)
		if err == nil {
			fn(r)
			off += int(r.size)
			s.end = off
			continue
		}
		if allZero(data[off:]) {
			return s
		}
		next := resync(data, off+1)
		if end := off + int(r.size); next == len(data) && plausible && end <= len(data) && !allZero(data[end-4:end]) {
			// The last entry is whole, checksum included (a crash leaves the
			// checksum, copied last, zero), and does not match it: damage.
			s.damage = append(s.damage, logDamage{from: off, to: end, why: err.Error() + " in the last entry"})
			return s
		}
		if next == len(data) {
			why := "last entry incomplete: " + err.Error()
			if plausible && off+int(r.size) > len(data) {
				why = "the file ends inside the entry"
			} else if !plausible {
				why = "last entry incomplete: no header"
			}
			s.cutShort = &logDamage{from: off, to: len(data), why: why}
			return s
		}
		why := err.Error()
		if !plausible {
			why = "unreadable entry header"
		}
		s.damage = append(s.damage, logDamage{from: off, to: next, why: why})
		off = next
	}
	return s
}

// resync returns the first offset at or after from where a readable entry of
// the kind the store writes starts (no user meta, no expiry, a key of the
// store's or Badger's), or len(data).
func resync(data []byte, from int) int {
	for off := from; off+rawMaxHeaderSize < len(data); off++ {
		b := data[off:]
		// An entry's key length (b[2]) is never 0: skip zeros a word at a time.
		if binary.NativeEndian.Uint64(b[2:10]) == 0 {
			off += 7
			continue
		}
		// meta: only Badger's known bits; user meta 0.
		if b[0]&^(rawBitDelete|rawBitValuePointer|1<<2|1<<3|rawBitTxn|rawBitFinTxn) != 0 || b[1] != 0 {
			continue
		}
		// Cheap checks before the checksum: a short key of the store's or
		// Badger's, no expiry, an entry that fits the file.
		klen, n := binary.Uvarint(b[2:])
		if n <= 0 || klen < 10 || klen > 1024 {
			continue
		}
		h := 2 + n
		vlen, n := binary.Uvarint(b[h:])
		if n <= 0 || vlen > uint64(len(b)) {
			continue
		}
		h += n
		if b[h] != 0 { // expiresAt 0
			continue
		}
		h++
		if uint64(h)+klen+vlen+4 > uint64(len(b)) {
			continue
		}
		k := b[h : h+int(klen)-8]
		if k[1] != '/' && !bytes.HasPrefix(k, rawBadgerPrefix) {
			continue
		}
		if _, _, err := decodeLogRecord(data, off); err == nil {
			return off
		}
	}
	return len(data)
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// readVptr reads the value-log entry vp points to, in file path, and checks
// it: its checksum and that it holds key (with version). It returns the value.
func readVptr(f *os.File, vp rawVptr, key []byte) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if int64(vp.offset)+int64(vp.length) > st.Size() {
		return nil, fmt.Errorf("the value at offset %d (%d bytes) is beyond the end of the file (%d bytes): truncated", vp.offset, vp.length, st.Size())
	}
	if vp.length < 4+3+8 {
		return nil, fmt.Errorf("value pointer to offset %d with length %d", vp.offset, vp.length)
	}
	buf := make([]byte, vp.length)
	if _, err := f.ReadAt(buf, int64(vp.offset)); err != nil {
		return nil, err
	}
	r, _, err := decodeLogRecord(buf, 0)
	if err != nil {
		return nil, fmt.Errorf("the value at offset %d: %w", vp.offset, err)
	}
	if r.size != vp.length || !bytes.Equal(r.key, key) {
		return nil, fmt.Errorf("the entry at offset %d holds another key", vp.offset)
	}
	return r.value, nil
}
