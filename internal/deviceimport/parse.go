// Package deviceimport owns the bulk import of devices: the readers of the three input forms
// (NDJSON device objects, CSV with a header row of device fields, an Azure IoT Hub
// device-identity export), which stream rows of config.Device with their line numbers, and
// the client of `fleetrelay devices import`, which sends a file to the relay's
// POST /api/v1/devices:import. The checks of a row and the writes are internal/control's.
package deviceimport

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// Format is an input form.
type Format string

const (
	// NDJSON is one device object per line, the fields of PUT /api/v1/devices/{id} and its id
	// (a token left out keeps the device's, null removes it).
	NDJSON Format = "ndjson"
	// CSV is a header row naming device fields, then one device per row; tags and groups are
	// ';'-separated; an empty token cell keeps the device's token, an empty cell of a secret
	// custom field its value.
	CSV Format = "csv"
	// Azure is an Azure IoT Hub device-identity export: one JSON object per line, its deviceId
	// the device's identity and its authentication.symmetricKey.primaryKey put in a custom
	// field (Options.KeyField).
	Azure Format = "azure"
)

// Formats lists the input forms.
var Formats = []Format{NDJSON, CSV, Azure}

// MaxLine is the longest JSON line a reader takes; a longer one is a rejected row.
const MaxLine = 64 << 10

// Options say how to read an input.
type Options struct {
	Format Format
	// KeyField is the device field an Azure export's primary key goes to: custom1 (default),
	// custom2 or custom3.
	KeyField string
}

// Check reports a problem of o: an unknown format or key field.
func (o *Options) Check() error {
	if !slices.Contains(Formats, o.Format) {
		return fmt.Errorf("format %q: want ndjson, csv or azure: %w", o.Format, ErrInput)
	}
	switch o.KeyField {
	case "", "custom1", "custom2", "custom3":
	default:
		return fmt.Errorf("key field %q: want custom1, custom2 or custom3: %w", o.KeyField, ErrInput)
	}
	return nil
}

// ErrInput marks an input that cannot be read at all (an unknown format, a CSV header that
// names no device field); a bad row is a Row with Err, not an error of the input.
var ErrInput = errors.New("import input")

// Row is one device of an input. With Err the row was not read: Device holds what of it was
// (its ID when known).
type Row struct {
	Line   int // 1-based line of the input where the row starts
	Device config.Device
	// Token is the device's credential when the row gives one ("" removes the device's); nil
	// keeps the device's token, as a PUT without one does. Device.Token is never set.
	Token *string
	// Named says which of custom1..custom3 the row names: an NDJSON member (null too), a CSV
	// cell that is not empty, the Azure export's key field. A secret custom field the row does
	// not name keeps the device's value, as a PUT without it does (control.Import.AddNaming).
	Named [3]bool
	Err   error
}

// Read reads in as o says and calls fn with every row, in order, holding one row at a time.
// It stops at fn's first error and returns it, or at a problem of the input as a whole (a
// read error, ErrInput).
func Read(in io.Reader, o Options, fn func(Row) error) error {
	if err := o.Check(); err != nil {
		return err
	}
	switch o.Format {
	case CSV:
		return readCSV(in, fn)
	case Azure:
		field := o.KeyField
		if field == "" {
			field = "custom1"
		}
		return readLines(in, func(line int, b []byte) Row { return azureRow(line, b, field) }, fn)
	default:
		return readLines(in, ndjsonRow, fn)
	}
}

// readLines calls parse on each non-blank line (without its line break) and fn with its row.
func readLines(in io.Reader, parse func(line int, b []byte) Row, fn func(Row) error) error {
	br := bufio.NewReaderSize(in, MaxLine)
	for line := 1; ; line++ {
		b, err := br.ReadSlice('\n')
		long := errors.Is(err, bufio.ErrBufferFull)
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of a line too long
			_, err = br.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read line %d: %w", line, err)
		}
		var row Row
		switch {
		case long:
			row = Row{Line: line, Err: fmt.Errorf("line longer than %d bytes", MaxLine)}
		case len(bytes.TrimSpace(b)) == 0:
			if err != nil {
				return nil
			}
			continue
		default:
			row = parse(line, bytes.TrimSpace(b))
		}
		if ferr := fn(row); ferr != nil {
			return ferr
		}
		if err != nil {
			return nil
		}
	}
}

// jsonDevice is config.Device in the API's JSON.
type jsonDevice struct {
	ID      string   `json:"id"`
	IMEI    string   `json:"imei"`
	ICCID   string   `json:"iccid"`
	Custom1 named    `json:"custom1"`
	Custom2 named    `json:"custom2"`
	Custom3 named    `json:"custom3"`
	Tags    []string `json:"tags"`
	Groups  []string `json:"groups"`
	Account string   `json:"account"`
	// Token is write-only; null removes it.
	Token json.RawMessage `json:"token"`
}

func ndjsonRow(line int, b []byte) Row {
	var d jsonDevice
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&d)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	dev := config.Device{ID: d.ID, IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1.v, Custom2: d.Custom2.v, Custom3: d.Custom3.v,
		Tags: nilIfEmpty(d.Tags), Groups: nilIfEmpty(d.Groups), Account: d.Account}
	if err != nil {
		return Row{Line: line, Device: config.Device{ID: d.ID}, Err: jsonError(err)}
	}
	row := Row{Line: line, Device: dev, Named: [3]bool{d.Custom1.set, d.Custom2.set, d.Custom3.set}}
	if d.Token != nil {
		var t string
		if string(d.Token) != "null" && json.Unmarshal(d.Token, &t) != nil {
			return Row{Line: line, Device: config.Device{ID: d.ID}, Err: errors.New("/token: want a string, or null to remove it")}
		}
		row.Token = &t
	}
	return checkToken(row)
}

// named is a JSON string member that says whether it was there: null is "", named.
type named struct {
	v   string
	set bool
}

func (n *named) UnmarshalJSON(b []byte) error {
	n.set = true
	if string(b) == "null" {
		n.v = ""
		return nil
	}
	return json.Unmarshal(b, &n.v)
}

// checkToken refuses a row whose token is longer than a device token may be.
func checkToken(r Row) Row {
	if r.Token != nil && len(*r.Token) > config.MaxDeviceToken {
		return Row{Line: r.Line, Device: config.Device{ID: r.Device.ID}, Err: fmt.Errorf("/token: longer than %d bytes", config.MaxDeviceToken)}
	}
	return r
}

// jsonError words a decoding error of one line.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("/%s: want %s", strings.ReplaceAll(te.Field, ".", "/"), te.Type)
	}
	return fmt.Errorf("not a device object: %w", err)
}

// azureDevice is what the import reads of an IoT Hub device identity.
type azureDevice struct {
	DeviceID       string `json:"deviceId"`
	Authentication struct {
		Type         string `json:"type"`
		SymmetricKey struct {
			PrimaryKey string `json:"primaryKey"`
		} `json:"symmetricKey"`
	} `json:"authentication"`
}

func azureRow(line int, b []byte, field string) Row {
	var a azureDevice
	if err := json.Unmarshal(b, &a); err != nil {
		return Row{Line: line, Err: jsonError(err)}
	}
	d := config.Device{ID: a.DeviceID}
	key := a.Authentication.SymmetricKey.PrimaryKey
	switch {
	case a.DeviceID == "":
		return Row{Line: line, Err: errors.New("no deviceId")}
	case key == "":
		return Row{Line: line, Device: d, Err: fmt.Errorf("no authentication.symmetricKey.primaryKey (authentication type %q)", a.Authentication.Type)}
	}
	*customField(&d, field) = key
	row := Row{Line: line, Device: d}
	row.Named[customIndex(field)] = true
	return row
}

// customIndex is the index of custom field name (0 for custom1) in Row.Named.
func customIndex(name string) int {
	switch name {
	case "custom2":
		return 1
	case "custom3":
		return 2
	}
	return 0
}

func customField(d *config.Device, name string) *string {
	switch name {
	case "custom2":
		return &d.Custom2
	case "custom3":
		return &d.Custom3
	}
	return &d.Custom1
}

// csvColumns are the fields a CSV header may name.
var csvColumns = []string{"id", "imei", "iccid", "custom1", "custom2", "custom3", "tags", "groups", "account", "token"}

func readCSV(in io.Reader, fn func(Row) error) error {
	r := csv.NewReader(bufio.NewReaderSize(in, MaxLine))
	r.ReuseRecord = true
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("csv: no header row: %w", ErrInput)
	}
	if err != nil {
		return fmt.Errorf("csv header: %v: %w", err, ErrInput)
	}
	cols := make([]string, len(header))
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\uFEFF"))) // a spreadsheet's byte-order mark
		if !slices.Contains(csvColumns, h) {
			return fmt.Errorf("csv header: column %d %q is not a device field (want %s): %w", i+1, header[i], strings.Join(csvColumns, ", "), ErrInput)
		}
		if slices.Contains(cols[:i], h) {
			return fmt.Errorf("csv header: column %q twice: %w", h, ErrInput)
		}
		cols[i] = h
	}
	if !slices.Contains(cols, "id") {
		return fmt.Errorf("csv header: no id column: %w", ErrInput)
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var row Row
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe) && !errors.Is(err, csv.ErrFieldCount):
			row = Row{Line: pe.StartLine, Err: fmt.Errorf("csv: %w", pe.Err)}
		case err != nil && !errors.Is(err, csv.ErrFieldCount):
			return fmt.Errorf("csv: %w", err)
		case len(rec) != len(cols):
			line, _ := r.FieldPos(0) // the record's fields, returned with ErrFieldCount
			row = Row{Line: line, Err: fmt.Errorf("%d fields, the header names %d", len(rec), len(cols))}
		default:
			line, _ := r.FieldPos(0)
			row = csvRow(line, cols, rec)
		}
		if err := fn(row); err != nil {
			return err
		}
	}
}

func csvRow(line int, cols, rec []string) Row {
	var d config.Device
	var token *string
	var named [3]bool
	for i, c := range cols {
		v := strings.TrimSpace(rec[i])
		switch c {
		case "id":
			d.ID = v
		case "imei":
			d.IMEI = v
		case "iccid":
			d.ICCID = v
		case "custom1", "custom2", "custom3":
			*customField(&d, c) = rec[i]         // free fields are taken as they are
			named[customIndex(c)] = rec[i] != "" // an empty cell keeps a secret field, as the token
		case "tags":
			d.Tags = splitList(v)
		case "groups":
			d.Groups = splitList(v)
		case "account":
			d.Account = v
		case "token":
			if rec[i] != "" { // an empty cell keeps the device's token
				t := rec[i]
				token = &t
			}
		}
	}
	return checkToken(Row{Line: line, Device: d, Token: token, Named: named})
}

// splitList splits a ';'-separated list, dropping empty items; nil for none.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ";") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
