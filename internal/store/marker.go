package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The store's marker file. It tells that the directory held data, whatever
// happens to Badger's files (see integrity.go), and it keeps a copy of the
// route-name table: the n/ keys are a few bytes in the LSM tree, so a lost
// table can take them along, and without them no record could be delivered
// to the right route again. Salvage falls back on the copy; Verify compares
// the two. Open writes the marker once the store is loaded (and again when
// the route table has names the marker lacks), RouteID after each new route.
// The file is written durably (temporary file, fsync, rename, fsync of the
// directory) and is a few lines of text:
//
//	fleetrelay store
//	...
//	created 2026-12-02T17:00:00Z
//	route "name" 1
const markerName = "FLEETRELAY-STORE"

const markerText = `fleetrelay store
This directory holds a fleetrelay journal. While this file exists, the relay refuses to start here
if Badger's files are missing or damaged, instead of starting empty. See "Store recovery" in the
README: fleetrelay store verify, fleetrelay store salvage. The route lines below copy the store's
route-name table.
`

// marker is the content of the marker file.
type marker struct {
	created time.Time
	routes  map[string]uint16
}

func hasMarker(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, markerName))
	return err == nil || !errors.Is(err, fs.ErrNotExist) // unreadable counts as present
}

// readMarker reads the marker; a missing file is fs.ErrNotExist.
func readMarker(dir string) (*marker, error) {
	b, err := os.ReadFile(filepath.Join(dir, markerName))
	if err != nil {
		return nil, err
	}
	m := &marker{routes: map[string]uint16{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "created "); ok {
			m.created, _ = time.Parse(time.RFC3339, rest)
		}
		rest, ok := strings.CutPrefix(line, "route ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			continue
		}
		name, err1 := strconv.Unquote(rest[:i])
		id, err2 := strconv.ParseUint(rest[i+1:], 10, 16)
		if err1 == nil && err2 == nil {
			m.routes[name] = uint16(id)
		}
	}
	return m, nil
}

// writeMarker writes the marker durably: a temporary file, fsynced, renamed,
// and the directory fsynced.
func writeMarker(dir string, m *marker) error {
	var b bytes.Buffer
	b.WriteString(markerText)
	fmt.Fprintf(&b, "created %s\n", m.created.UTC().Format(time.RFC3339))
	names := make([]string, 0, len(m.routes))
	for name := range m.routes {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return m.routes[names[i]] < m.routes[names[j]] })
	for _, name := range names {
		fmt.Fprintf(&b, "route %s %d\n", strconv.Quote(name), m.routes[name])
	}
	tmp := filepath.Join(dir, markerName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, markerName))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mark brings the marker up to date with routes (the store's route table)
// after Open loaded the store: it writes it if missing (a new directory, or
// one written before markers existed) or if it lacks a route.
func (p *preOpen) mark(routes map[string]uint16) error {
	m, err := readMarker(p.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read store marker in %q: %w", p.dir, err)
	}
	if m == nil {
		m = &marker{created: time.Now(), routes: map[string]uint16{}}
	} else if covers(m.routes, routes) {
		return nil
	}
	for name, id := range routes {
		m.routes[name] = id
	}
	if err := writeMarker(p.dir, m); err != nil {
		return fmt.Errorf("write store marker in %q: %w", p.dir, err)
	}
	return nil
}

func covers(have, want map[string]uint16) bool {
	for name, id := range want {
		if got, ok := have[name]; !ok || got != id {
			return false
		}
	}
	return true
}

// markRoute adds a new route to the marker. RouteID calls it with routesMu
// held, after persisting the route's key; routes is the route table.
func (s *Store) markRoute(routes map[string]uint16) error {
	return (&preOpen{dir: s.opts.Dir}).mark(routes)
}
