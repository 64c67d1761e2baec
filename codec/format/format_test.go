package format_test

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
	"github.com/fleetrelay/fleetrelay/codec/format"
)

func TestLookup(t *testing.T) {
	for _, name := range format.Names() {
		opts := format.Options{}
		switch name {
		case format.NameSENSORO:
			opts.AppID = "app"
		case format.NameTemplate:
			opts.Template = `{"id":"$$msgId"}`
		}
		f, err := format.Lookup(name, opts)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", name, err)
		}
		if f.Name() != name || f.Body() != format.BodyJSONArray {
			t.Errorf("Lookup(%q) = %s, body %v", name, f.Name(), f.Body())
		}
	}
	if f, err := format.Lookup("", format.Options{}); err != nil || f.Name() != format.NameEnvelope {
		t.Errorf(`Lookup("") = %v, %v; want envelope`, f, err)
	}
	bad := func(name string, opts format.Options, sentinel error, text string) {
		t.Helper()
		f, err := format.Lookup(name, opts)
		if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), text) {
			t.Errorf("Lookup(%q, %+v) = %v, %v; want an error wrapping %v containing %q", name, opts, f, err, sentinel, text)
		}
	}
	bad("json", format.Options{}, format.ErrUnknownFormat, `"json" (known: envelope, raw,`)
	bad("Envelope", format.Options{}, format.ErrUnknownFormat, "Envelope")
	bad("sensoro", format.Options{}, format.ErrOption, "app_id")
	bad("template", format.Options{}, format.ErrOption, "needs a template")
	bad("raw", format.Options{AppID: "x", Template: "{}"}, format.ErrOption, "app_id, template not used by format raw")
	bad("bewhere", format.Options{DeviceType: "node"}, format.ErrOption, "device_type")
	bad("template", format.Options{Template: `{"a":"$$nope"}`}, format.ErrUnknownPlaceholder, "format template: unknown placeholder at offset 6 (a)")
	bad("template", format.Options{Template: `{"a":`}, format.ErrInvalidTemplate, "offset 5")
}

// TestEnvelope: the envelope format is codec/envelope's envelope, byte for byte.
func TestEnvelope(t *testing.T) {
	f, _ := format.Lookup(format.NameEnvelope, format.Options{})
	for _, tm := range loadMessages(t) {
		m := tm.message()
		bm := envelope.Message{Device: m.Device, Serial: m.Serial, IMEI: m.IMEI, ICCID: m.ICCID,
			Seq: m.Seq, Index: m.Index, ReceivedAt: m.ReceivedAt, Data: m.Data}
		want := envelope.Append(nil, &bm, m.Attempt)
		if got := f.Append(nil, m); string(got) != string(want) {
			t.Errorf("envelope(%s) =\n%s\nwant (codec/envelope)\n%s", tm.Name, got, want)
		}
		if n := f.SizeHint(m); n < len(want) {
			t.Errorf("envelope SizeHint(%s) = %d, below the real %d", tm.Name, n, len(want))
		}
	}
	// Without Device, the identity is the serial, else the IMEI.
	m := &format.Message{IMEI: "356307042441013", Seq: 1}
	if got := string(f.Append(nil, m)); !strings.HasPrefix(got, `{"msgId":"356307042441013-1-0",`) {
		t.Errorf("envelope without device = %s", got)
	}
}

func TestSENSORO(t *testing.T) {
	f, err := format.NewSENSORO(`app"1`, "node")
	if err != nil {
		t.Fatal(err)
	}
	m := &format.Message{Device: "SN1", Serial: "SN1", Seq: 2, Index: 1, ReceivedAt: 1700000000123, Data: []byte(`{"battery":90}`)}
	want := `{"appId":"app\"1","sn":"SN1","type":"text","deviceType":"node","createdTime":1700000000123,"msgId":"SN1-2-1","data":{"battery":90}}`
	if got := string(f.Append(nil, m)); got != want {
		t.Errorf("sensoro data =\n%s\nwant\n%s", got, want)
	}
	m.Kind, m.TaskID, m.ResultCode, m.Data = format.KindResult, "123", 1, nil
	want = `{"appId":"app\"1","sn":"SN1","taskId":"123","type":"event","createdTime":1700000000123,"msgId":"SN1-2-1","resultCode":1,"resultData":{}}`
	if got := string(f.Append(nil, m)); got != want {
		t.Errorf("sensoro event =\n%s\nwant\n%s", got, want)
	}
}

// report mirrors the measurement message for decoding.
type report struct {
	HashID       string          `json:"hashId"`
	Environment  *string         `json:"environmentHashId"`
	Observations []observation   `json:"observations"`
	DeviceHashID *string         `json:"deviceHashId"`
	DeviceID     *string         `json:"deviceIdentifier"`
	DeviceFields json.RawMessage `json:"deviceFields"`
	Fields       json.RawMessage `json:"fields"`
	GeneratedAt  string          `json:"generatedAt"`
	CreatedAt    string          `json:"createdAt"`
	Attempt      int             `json:"attempt"`
}

type observation struct {
	Quantity  string `json:"monitoringEnvironmentQuantityHashId"`
	Quantity2 string `json:"connectivityEnvironmentQuantityHashId"`
	Channel   int    `json:"channelIndex"`
	Order     int    `json:"orderOfMagnitude"`
	Sig       int64  `json:"significand"`
	Formatted string `json:"formattedValue"`
	Generated string `json:"generatedAt"`
}

// TestMeasurement checks each observation against the record decoded by encoding/json: the
// significand and order of magnitude give the number, the formatted value reads back as it,
// and every record member is either observed or in fields.
func TestMeasurement(t *testing.T) {
	f, _ := format.Lookup(format.NameMeasurement, format.Options{})
	for _, tm := range loadMessages(t) {
		m := tm.message()
		var r report
		out := f.Append(nil, m)
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("measurement(%s) = %s: %v", tm.Name, out, err)
		}
		var rec map[string]any
		if len(m.Data) > 0 {
			dec := json.NewDecoder(strings.NewReader(string(m.Data)))
			dec.UseNumber()
			if err := dec.Decode(&rec); err != nil {
				t.Fatal(err)
			}
		}
		var fields map[string]any
		if err := json.Unmarshal(r.Fields, &fields); err != nil {
			t.Fatalf("measurement(%s) fields %s: %v", tm.Name, r.Fields, err)
		}
		if r.HashID == "" || r.Attempt != m.Attempt || r.CreatedAt != string(envelope.AppendTimestamp(nil, m.ReceivedAt)) {
			t.Errorf("measurement(%s) report = %+v", tm.Name, r)
		}
		observed := map[string]bool{}
		for _, o := range r.Observations {
			if o.Quantity != o.Quantity2 || o.Generated != r.GeneratedAt {
				t.Errorf("measurement(%s) observation %+v", tm.Name, o)
			}
			key, sub, _ := strings.Cut(o.Quantity, ".")
			observed[key] = true
			v := rec[key]
			switch x := v.(type) {
			case []any:
				v = x[o.Channel]
			case map[string]any:
				v = x[sub]
			}
			want, err := strconv.ParseFloat(string(v.(json.Number)), 64)
			if err != nil {
				t.Fatal(err)
			}
			got := float64(o.Sig) * math.Pow10(o.Order)
			if !near(got, want) {
				t.Errorf("measurement(%s) %s = %d × 10^%d = %g, want %g", tm.Name, o.Quantity, o.Sig, o.Order, got, want)
			}
			if fv, err := strconv.ParseFloat(strings.ReplaceAll(o.Formatted, ",", ""), 64); err != nil || !near(fv, got) {
				t.Errorf("measurement(%s) %s formattedValue %q, want %g", tm.Name, o.Quantity, o.Formatted, got)
			}
			if o.Sig%10 == 0 && o.Sig != 0 || o.Sig >= 1e15 || o.Sig <= -1e15 {
				t.Errorf("measurement(%s) %s significand %d not normalized", tm.Name, o.Quantity, o.Sig)
			}
		}
		for k := range rec {
			_, inFields := fields[k]
			if observed[k] == inFields {
				t.Errorf("measurement(%s) member %q: observed %v, in fields %v; want exactly one", tm.Name, k, observed[k], inFields)
			}
		}
	}
}

func near(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-14*math.Max(math.Abs(a), math.Abs(b))
}

func TestBuilder(t *testing.T) {
	f, _ := format.Lookup(format.NameRaw, format.Options{})
	var b format.Builder // the zero value is an envelope batch
	if got := string(b.Bytes()); got != "[]" || b.Size() != 2 || b.Len() != 0 {
		t.Errorf("empty batch = %q (size %d, len %d)", got, b.Size(), b.Len())
	}
	m := &format.Message{Device: "d", Data: []byte(`{"a":1}`)}
	b.Add(m)
	if got := string(b.Bytes()); !strings.HasPrefix(got, `[{"msgId":"d-0-0",`) || b.Size() != len(got) {
		t.Errorf("zero Builder = %s", got)
	}
	b.Reset(f)
	for i := 0; i < 5; i++ {
		if !b.AddWithin(m, 20) {
			break
		}
	}
	// [{"a":1},{"a":1}] is 17 bytes; a third would make 25.
	if got := string(b.Bytes()); got != `[{"a":1},{"a":1}]` || b.Len() != 2 || b.Size() != len(got) {
		t.Errorf("AddWithin(20) = %s (len %d)", got, b.Len())
	}
	// The first message always goes in.
	b.Reset(f)
	if !b.AddWithin(m, 1) || string(b.Bytes()) != `[{"a":1}]` {
		t.Errorf("AddWithin(1) on an empty batch = %s", b.Bytes())
	}
	if got := format.NewBuilder(nil).Format().Name(); got != format.NameEnvelope {
		t.Errorf("NewBuilder(nil) format %s", got)
	}
}

// TestSizeHint: the estimates are within a factor of four of the real size for the test
// messages that have a record (measurement's depends on how many numbers the record holds).
func TestSizeHint(t *testing.T) {
	msgs := loadMessages(t)
	for _, c := range goldenCases(t) {
		f, _ := format.Lookup(c.format, c.opts)
		for _, tm := range msgs {
			m := tm.message()
			if len(m.Data) == 0 {
				continue
			}
			n, hint := len(f.Append(nil, m)), f.SizeHint(m)
			if hint < n/4 || hint > 4*n {
				t.Errorf("%s(%s): SizeHint %d, real size %d", c.name, tm.Name, hint, n)
			}
		}
	}
}
