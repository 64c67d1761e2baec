package control

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// Rejection is a row of an import that was not written, and why.
type Rejection struct {
	Line  int    `json:"line"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error"`
}

// Import writes the devices of one bulk import: each row is checked as a PUT of the device is
// checked (WriteDevice), and the good rows are written in chunks, each one registry.Apply, so
// one store transaction. A row is written whole or not at all; a chunk the registry refuses
// because of one of its rows is split until the row is found and rejected, the others written.
// An Import is not safe for concurrent use; the imports and the device writes of the API
// interleave chunk by chunk.
type Import struct {
	c        *Control
	account  string // the caller key's account ("" for a global key)
	rows     []importRow
	size     int // the rows' estimated size in the store
	upserted int
	rejected []Rejection
	event    string                 // the notification event of the whole import (notify.go)
	notes    []registry.OutboxEntry // its chunks' notification entries, emitted by Finish
}

type importKey struct{}

// importOf returns the import a write's context belongs to (nil: none).
func importOf(ctx context.Context) *Import {
	im, _ := ctx.Value(importKey{}).(*Import)
	return im
}

type importRow struct {
	line    int
	dev     config.Device
	token   *string // nil: the device keeps its token; "": it has none after
	hash    [32]byte
	unnamed format.Secrets // the custom fields the row does not name: a secret one keeps its value
}

// Bounds of one chunk, below the store's transaction limits: Badger takes at most 15% of its
// memtable (1 MiB: 157,286 bytes, keys and values and 12 bytes each) and fewer than 1,638
// entries (its memtable's node size, 96 bytes, into the same 15%). A typical device (an
// identity of 15 characters, an IMEI, a custom field, a tag, a group, an account: ≈230 bytes
// in the store) fills a chunk at ≈650 devices.
const (
	chunkBytes = 150_000
	chunkRows  = 1_600
)

// NewImport starts an import for a key of account ("" for a global key, which may name any
// account in the rows; an account's key imports into its own account only).
func (c *Control) NewImport(account string) *Import {
	return &Import{c: c, account: account, event: newHashID()}
}

// Add checks the device of one input line and queues it; a full chunk is written. token, when
// not nil, sets the device's token ("" removes it); nil keeps the one it has, as a PUT without
// one does (d.Token is ignored). A row that fails the checks is rejected (Rejected), not an
// error: Add's error means the store refused a write as a whole (the disk full, the relay
// closing) and the import cannot go on. The row names every custom field (see AddNaming).
func (im *Import) Add(ctx context.Context, line int, d config.Device, token *string) error {
	return im.AddNaming(ctx, line, d, token, [3]bool{true, true, true})
}

// AddNaming is Add for a row that may leave custom fields out: named[i] says it names
// custom<i+1>. A secret custom field (secrets.go) it does not name keeps the device's value,
// as a PUT without it does; any other field is the row's.
func (im *Import) AddNaming(ctx context.Context, line int, d config.Device, token *string, named [3]bool) error {
	d.ID, d.Token = strings.ToUpper(d.ID), ""
	problems := d.Check("")
	if token != nil && len(*token) > config.MaxDeviceToken {
		problems = append(problems, fmt.Sprintf("token: longer than %d bytes", config.MaxDeviceToken))
	}
	if len(problems) > 0 {
		im.reject(line, d.ID, joinFields(fields(problems)))
		return nil
	}
	row := importRow{line: line, dev: d, token: token}
	for i, n := range named {
		if !n {
			row.unnamed |= 1 << i
		}
	}
	im.rows = append(im.rows, row)
	hasToken := token != nil && *token != ""
	if token == nil {
		cur, ok := im.c.reg.Device(d.ID)
		hasToken = ok && cur.TokenHash != [32]byte{}
	}
	im.size += storedSize(&d, hasToken)
	if im.size >= chunkBytes || len(im.rows) >= chunkRows {
		return im.flush(ctx)
	}
	return nil
}

// Reject records a line that did not parse (id: what of the device's identity was read, if any).
func (im *Import) Reject(line int, id string, err error) {
	im.reject(line, strings.ToUpper(id), err.Error())
}

func (im *Import) reject(line int, id, why string) {
	im.rejected = append(im.rejected, Rejection{Line: line, ID: id, Error: why})
}

// Finish writes what is queued and returns how many rows were written and every rejected row,
// in input order. After an error the counts say what was written before it. The notification
// of the whole import (of what was written, error or not) is sent here: one event, one message
// per account unless it is large (notify.go).
func (im *Import) Finish(ctx context.Context) (upserted int, rejected []Rejection, err error) {
	err = im.flush(ctx)
	im.Notify()
	return im.upserted, im.rejected, err
}

// Notify sends the notification of what the import has written so far; Finish calls it. Call
// it when an import stops without Finish (its input broke off): the chunks it wrote are
// notified. Without it they would be at the next start.
func (im *Import) Notify() {
	if len(im.notes) > 0 {
		im.c.notices.emit(im.notes)
		im.notes = nil
	}
}

// Upserted is how many rows were written so far.
func (im *Import) Upserted() int { return im.upserted }

// flush writes the queued rows: the checks that read the registry (config ownership, another
// account's device, the account) under the control's write lock, then one Apply.
func (im *Import) flush(ctx context.Context) error {
	if len(im.rows) == 0 {
		return nil
	}
	rows := im.rows
	im.rows, im.size = im.rows[:0], 0
	c := im.c
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	good := make([]importRow, 0, len(rows))
	var rejected []Rejection
	hashes := map[string][32]byte{} // the tokens of the chunk's earlier rows: the index has not got them yet
	kept := map[string][3]string{}  // their custom fields, likewise
	secrets := c.sys.Secrets()
	for _, r := range rows {
		cur, _, err := c.visibleDevice(r.dev.ID, im.account)
		if err != nil {
			rejected = append(rejected, Rejection{Line: r.line, ID: r.dev.ID, Error: rowError(err)})
			continue
		}
		if bad := c.checkAccount(&r.dev.Account, im.account); len(bad) > 0 {
			rejected = append(rejected, Rejection{Line: r.line, ID: r.dev.ID, Error: joinFields(bad)})
			continue
		}
		h, ok := hashes[r.dev.ID]
		switch {
		case r.token != nil && *r.token != "":
			h = actors.TokenHash([]byte(*r.token))
		case r.token != nil:
			h = [32]byte{}
		case !ok:
			h = cur.TokenHash
		}
		r.hash, hashes[r.dev.ID] = h, h
		if keep := r.unnamed & secrets; keep != 0 {
			prev, ok := kept[r.dev.ID]
			if !ok {
				prev = [3]string{cur.Custom1, cur.Custom2, cur.Custom3}
			}
			for i, f := range [3]*string{&r.dev.Custom1, &r.dev.Custom2, &r.dev.Custom3} {
				if keep&(1<<i) != 0 {
					*f = prev[i]
				}
			}
		}
		kept[r.dev.ID] = [3]string{r.dev.Custom1, r.dev.Custom2, r.dev.Custom3}
		good = append(good, r)
	}
	err := im.apply(ctx, good, &rejected)
	if len(rejected) > 0 { // in line order: a chunk's rejections interleave with its rows
		slices.SortStableFunc(rejected, func(a, b Rejection) int { return cmp.Compare(a.Line, b.Line) })
		im.rejected = mergeByLine(im.rejected, rejected)
	}
	return err
}

// apply writes rows in one Apply; when the registry refuses it because of a row (a resource of
// the config file, a conflict) or because it is larger than a transaction takes, it writes each
// half on its own. A single row's own error rejects it; a store error stops the import.
func (im *Import) apply(ctx context.Context, rows []importRow, rejected *[]Rejection) error {
	if len(rows) == 0 {
		return nil
	}
	changes := make([]any, len(rows))
	for i := range rows {
		d := &rows[i].dev
		changes[i] = &registry.Device{ID: d.ID, IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2,
			Custom3: d.Custom3, Tags: d.Tags, Groups: d.Groups, Account: d.Account, TokenHash: rows[i].hash}
	}
	err := im.c.reg.Apply(context.WithValue(ctx, importKey{}, im), changes...)
	switch {
	case err == nil:
		im.upserted += len(rows)
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("import: %w", ctx.Err())
	case len(rows) == 1 && isRowError(err):
		*rejected = append(*rejected, Rejection{Line: rows[0].line, ID: rows[0].dev.ID, Error: rowError(err)})
		return nil
	case len(rows) == 1:
		return fmt.Errorf("import line %d: %w", rows[0].line, err)
	}
	half := len(rows) / 2
	if err := im.apply(ctx, rows[:half], rejected); err != nil {
		return err
	}
	return im.apply(ctx, rows[half:], rejected)
}

// isRowError reports whether the registry refused a write because of what a row holds (rather
// than because the store failed).
func isRowError(err error) bool {
	for _, e := range []error{registry.ErrStatic, registry.ErrNotFound, registry.ErrConflict, registry.ErrExists, registry.ErrInvalid, ErrConfigOwned} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// rowError is the reason a row is rejected, as the device's PUT would answer it.
func rowError(err error) string {
	switch {
	case errors.Is(err, ErrConfigOwned), errors.Is(err, registry.ErrStatic):
		return "owned by the config file, which declares the device"
	case errors.Is(err, registry.ErrNotFound):
		return "not found" // another account's device, as PUT answers it (404)
	}
	return err.Error()
}

// storedSize estimates what d takes in a store transaction: its key, its JSON with the
// registry's meta (times, revision, source), Badger's per-entry bytes. Text that JSON escapes
// takes more; a chunk that turns out too large is split (apply).
func storedSize(d *config.Device, token bool) int {
	n := 165 + 2*len(d.ID)                         // key prefix and version, meta, braces, "id"
	n += noteOverhead + len(d.ID) + len(d.Account) // its change in the chunk's notification entry (notify.go)
	if token {
		n += 15 + 32*4 // "token_hash": 32 numbers up to 255
	}
	for _, f := range []string{d.IMEI, d.ICCID, d.Custom1, d.Custom2, d.Custom3, d.Account} {
		if f != "" {
			n += 12 + len(f) // name, quotes
		}
	}
	for _, l := range [][]string{d.Tags, d.Groups} {
		if len(l) > 0 {
			n += 12
			for _, s := range l {
				n += 3 + len(s)
			}
		}
	}
	return n
}

// mergeByLine merges two lists each in line order.
func mergeByLine(a, b []Rejection) []Rejection {
	if len(a) == 0 || a[len(a)-1].Line <= b[0].Line {
		return append(a, b...)
	}
	out := make([]Rejection, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i].Line <= b[j].Line {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	return append(append(out, a[i:]...), b[j:]...)
}
