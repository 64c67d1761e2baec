package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SalvageOptions configures Salvage.
type SalvageOptions struct {
	From string // the damaged data directory; only read
	To   string // the new data directory: must not exist, or be empty
	// RouteNames names route IDs (name → ID) whose route-name keys are lost,
	// so that the relay delivers their records to the right routes. Only IDs
	// without a name in From are written; see SalvageReport.UnnamedRoutes.
	RouteNames map[string]uint16
	// Logger receives Badger's logs while the new directory is written and
	// checked. Nil discards them.
	Logger *slog.Logger
}

// SalvageReport says what Salvage copied and what it knows is lost.
type SalvageReport struct {
	From, To string
	// Problems is the damage found in From, as Verify reports it.
	Problems []Problem
	// Kept counts the keys copied by kind: "segments", "delivery bitmaps",
	// "cold-segment index", "device checkpoints", "route names", "dead
	// letters", "replaying dead letters", "meta", "other".
	Kept map[string]int
	// Records is the number of records in the copied segments; Pending the
	// records each route has not delivered yet, as the new store counts them
	// (by route name; IDs without a name as "#ID").
	Records int
	Pending map[string]int
	// Devices is the number of devices whose last stored seq the new store
	// knows.
	Devices int
	// Uncertain lists the copied keys whose newest version may have been in
	// an unreadable place (see Unreadable): what was copied is whole — from
	// a readable table or from the value log — but it may be older than what
	// was lost (a deletion, a newer delivery state), so their records may be
	// delivered again, and a segment deleted after delivery may be back.
	Uncertain []string
	// Unreadable lists the places (tables, table blocks, memtable-log
	// entries) that could not be read, with the keys they may have held. Keys
	// there whose values are small (delivery bitmaps, device checkpoints,
	// route names, small dead letters) are lost without a trace; values of
	// 1 KiB or more (segments, most dead letters) are recovered from the value
	// log (Uncertain). So records already delivered may be delivered
	// again, and a device whose newest frames had no route may be told an
	// older last seq (it then resends them; they are stored as new).
	Unreadable []string
	// Lost is what From held and the new directory does not: values that
	// cannot be read, segments known only by their delivery state.
	Lost []Loss
	// NamedRoutes are the route names Salvage wrote because their keys were
	// lost: "name=ID (source)", the source being SalvageOptions.RouteNames or
	// the copy of the route table in the store's marker file.
	NamedRoutes []string
	// UnnamedRoutes are route IDs that copied records go to but that have no
	// route name (its key was lost): records per ID. The relay does not
	// deliver them until they are named (SalvageOptions.RouteNames).
	UnnamedRoutes map[uint16]int
}

// Loss is one thing known lost, and why.
type Loss struct {
	What string // e.g. "segment 17"
	Why  string
}

func (l Loss) String() string { return l.What + ": " + l.Why }

// Salvage copies every readable key of a store directory into a new one,
// reading the old one without Badger (see badgerraw.go), so that it works
// when Badger cannot open it at all (MANIFEST missing or cut short, tables
// missing or damaged, value logs truncated or damaged). For every key it
// takes the newest version found in any table, memtable log or (for keys in
// unreadable places) value log, a deletion winning when it is the newest;
// it resolves value pointers, checks each value (segments, checkpoints and
// dead letters must decode), and writes the keys with their stored bytes
// unchanged — journal segments, delivery bitmaps, device checkpoints, route
// names, dead letters, format and meta keys, and any key of a kind it does
// not know — into a new Badger directory. It then opens the new directory
// with Open, which must succeed, and reports what was kept, the pending
// records per route, and what is known lost. Like Verify it holds From's
// lock (shared) while it reads, and fails with ErrInUse while a relay holds
// it; To must not be in use either.
func Salvage(opts SalvageOptions) (*SalvageReport, error) {
	if opts.From == "" || opts.To == "" {
		return nil, ErrNoDir
	}
	if same(opts.From, opts.To) {
		return nil, fmt.Errorf("salvage %s into itself: give a new directory", opts.From)
	}
	if ents, err := os.ReadDir(opts.To); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("salvage into %s: the directory is not empty; give a new one: %w", opts.To, fs.ErrExist)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("salvage into %s: %w", opts.To, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, err := buildView(opts.From, true, true)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", opts.From, err)
	}
	defer v.close()
	rep := &SalvageReport{From: opts.From, To: opts.To, Kept: map[string]int{}, Pending: map[string]int{}, UnnamedRoutes: map[uint16]int{}}

	if err := os.MkdirAll(opts.To, 0o755); err != nil {
		return nil, err
	}
	db, err := openBadgerGuarded(badgerOptions(Options{Dir: opts.To}.withDefaults(), log))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", opts.To, err)
	}
	wb := db.NewWriteBatch()
	bad := newValueFailures()
	segments := map[uint64]bool{} // segments copied
	lostSegs := map[uint64]bool{} // segments reported lost
	routeRecords := map[uint16]int{}
	names := map[uint16]string{}
	taken := map[string]bool{}
	var writeErr error
	// Segments first: whether a delivery bitmap or cold-index key (which
	// sorts before them) is copied depends on its segment.
	keys := v.keys()
	sort.SliceStable(keys, func(i, j int) bool {
		return strings.HasPrefix(keys[i], string(prefixSegment)) && !strings.HasPrefix(keys[j], string(prefixSegment))
	})
	for _, k := range keys {
		e := v.live[k]
		desc := describeKey(e.key)
		val, err := v.value(e)
		if err != nil {
			bad.add(e, err)
			file, off := v.location(e)
			why := fmt.Sprintf("its value in %s", file)
			if off >= 0 {
				why += fmt.Sprintf(" at offset %d", off)
			}
			rep.Lost = append(rep.Lost, Loss{What: desc, Why: why + " is unreadable: " + err.Error()})
			if id, ok := parseIDKey(e.key); ok && bytes.HasPrefix(e.key, prefixSegment) {
				lostSegs[id] = true
			}
			continue
		}
		kind, records, err := salvageCheck(e.key, val, segments, routeRecords, names)
		if err != nil {
			rep.Lost = append(rep.Lost, Loss{What: desc, Why: err.Error()})
			if id, ok := parseIDKey(e.key); ok && bytes.HasPrefix(e.key, prefixSegment) {
				lostSegs[id] = true
			}
			continue
		}
		if kind == "" { // delivery state of a segment not copied
			_, seg, _ := parseBitmapKey(e.key)
			if !lostSegs[seg] {
				lostSegs[seg] = true
				rep.Lost = append(rep.Lost, Loss{What: fmt.Sprintf("segment %d", seg), Why: "its data is not in any readable file; only its delivery state is"})
			}
			continue
		}
		if v.inUnknown(e.key) {
			rep.Uncertain = append(rep.Uncertain, desc)
		}
		if writeErr = wb.Set(bytes.Clone(e.key), val); writeErr != nil {
			break
		}
		rep.Kept[kind]++
		rep.Records += records
	}
	// Route names lost with their keys: from opts.RouteNames, else from the
	// marker's copy of the route table (marker.go).
	for _, name := range names {
		taken[name] = true
	}
	var fromMarker map[string]uint16
	if m, err := readMarker(opts.From); err == nil {
		fromMarker = m.routes
	}
	for _, src := range []struct {
		names map[string]uint16
		from  string
	}{{opts.RouteNames, "given"}, {fromMarker, "the marker's copy"}} {
		for _, name := range sortedNames(src.names) {
			id := src.names[name]
			if _, ok := names[id]; ok || taken[name] || writeErr != nil {
				continue
			}
			writeErr = wb.Set(routeNameKey(name), binary.BigEndian.AppendUint16(nil, id))
			names[id], taken[name] = name, true
			rep.Kept["route names"]++
			rep.NamedRoutes = append(rep.NamedRoutes, fmt.Sprintf("%s=%d (%s)", name, id, src.from))
		}
	}
	for id, n := range routeRecords {
		if _, ok := names[id]; !ok {
			rep.UnnamedRoutes[id] = n
		}
	}
	if writeErr == nil {
		writeErr = wb.Flush()
	} else {
		wb.Cancel()
	}
	if err := db.Close(); writeErr == nil {
		writeErr = err
	}
	if writeErr != nil {
		return nil, fmt.Errorf("write %s: %w", opts.To, writeErr)
	}
	rep.Problems = append(v.problems, bad.problems()...)
	rep.Unreadable = v.unknownWhy
	for _, e := range v.lostInDamage() {
		if bytes.HasPrefix(e.key, prefixRouteName) && taken[string(e.key[len(prefixRouteName):])] {
			continue // restored
		}
		rep.Lost = append(rep.Lost, Loss{What: describeKey(e.key), Why: "its entry was in the damaged " + e.where + " and the value log has no copy"})
	}

	// The new directory must open as a store.
	st, err := Open(context.Background(), Options{Dir: opts.To, Logger: log}) // offline: nothing to cancel it
	if err != nil {
		return rep, fmt.Errorf("the salvaged store in %s does not open: %w", opts.To, err)
	}
	stats := st.Stats()
	rep.Devices = stats.Devices
	byID := map[uint16]string{}
	for name, id := range st.Routes() {
		byID[id] = name
	}
	for id := range routeRecords {
		name, ok := byID[id]
		if !ok {
			name = fmt.Sprintf("#%d", id)
		}
		rep.Pending[name] = st.Backlog(id)
	}
	if err := st.Close(); err != nil {
		return rep, err
	}
	sort.Strings(rep.Uncertain)
	return rep, nil
}

// salvageCheck checks a value by its key's kind and returns the kind for
// SalvageReport.Kept, "" for a delivery bitmap whose segment was not copied,
// and the records of a segment. It notes copied segments, the records per
// route of copied segments and dead letters, and route names.
func salvageCheck(key, val []byte, segments map[uint64]bool, routeRecords map[uint16]int, names map[uint16]string) (kind string, records int, err error) {
	switch {
	case bytes.HasPrefix(key, prefixSegment):
		id, ok := parseIDKey(key)
		if !ok {
			return "other", 0, nil
		}
		enc, _, err := segmentValue(id, val, nil)
		if err != nil {
			return "", 0, fmt.Errorf("does not decode: %w", err)
		}
		seg, err := DecodeSegment(id, enc)
		if err != nil {
			return "", 0, fmt.Errorf("does not decode: %w", err)
		}
		segments[id] = true
		for _, f := range seg.Frames {
			for _, r := range f.Routes {
				routeRecords[r] += len(f.Records)
			}
		}
		return "segments", seg.Len(), nil
	case bytes.HasPrefix(key, prefixBitmap), bytes.HasPrefix(key, prefixCold):
		_, seg, ok := parseBitmapKey(key) // the same shape: x/<route>/<segment>
		if !ok {
			return "other", 0, nil
		}
		if !segments[seg] {
			return "", 0, nil
		}
		if key[0] == prefixCold[0] {
			return "cold-segment index", 0, nil
		}
		return "delivery bitmaps", 0, nil
	case bytes.HasPrefix(key, prefixCheckpoint):
		if err := decodeCheckpoint(val, func([]byte, uint64) {}); err != nil {
			return "", 0, fmt.Errorf("does not decode: %w", err)
		}
		return "device checkpoints", 0, nil
	case bytes.HasPrefix(key, prefixDead), bytes.HasPrefix(key, prefixReplay):
		if len(key) != deadKeyLen {
			return "other", 0, nil
		}
		route := binary.BigEndian.Uint16(key[2:4])
		d, err := decodeDeadLetter(route, binary.BigEndian.Uint64(key[5:]), val)
		if err != nil {
			return "", 0, fmt.Errorf("does not decode: %w", err)
		}
		routeRecords[route] += d.Records()
		if key[0] == prefixReplay[0] {
			return "replaying dead letters", 0, nil
		}
		return "dead letters", 0, nil
	case bytes.HasPrefix(key, prefixRouteName):
		if len(val) != 2 {
			return "", 0, fmt.Errorf("route ID of %d bytes", len(val))
		}
		names[binary.BigEndian.Uint16(val)] = string(key[len(prefixRouteName):])
		return "route names", 0, nil
	case bytes.HasPrefix(key, []byte("m/")):
		return "meta", 0, nil
	}
	return "other", 0, nil
}

func sortedNames(m map[string]uint16) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// same reports whether a and b name the same directory.
func same(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	if aa == bb {
		return true
	}
	sa, err1 := os.Stat(aa)
	sb, err2 := os.Stat(bb)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
