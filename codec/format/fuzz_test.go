package format_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// fuzzRecords seed the record inputs: the golden records, and the sensor record cut at every
// offset.
func fuzzRecords(t testing.TB) []string {
	var out []string
	for _, tm := range loadMessages(t) {
		out = append(out, string(tm.Data))
	}
	s := out[0]
	for i := range s {
		out = append(out, s[:i])
	}
	return append(out, `{"a":{"b":[1,{"c":"d"}]},"a":2}`, `[1,2]`, `"x"`, ` {} `, `{"\u0074imestamp":1}`)
}

// fuzzMessage is a message with awkward metadata around the record data.
func fuzzMessage(data string, kind format.Kind) *format.Message {
	return &format.Message{
		Device: "d\"\x00", Serial: "s\xff\u2028", IMEI: "", ICCID: "i\\", Custom1: "<&>", Tags: []string{"", "t\n"},
		Seq: 1<<64 - 1, Index: -1, ReceivedAt: -62135596800001, Attempt: 1 << 40,
		Kind: kind, TaskID: "\"", ResultCode: -1, Data: []byte(data),
	}
}

// FuzzTemplate compiles arbitrary templates and renders arbitrary records: Compile either fails
// with a *TemplateError or succeeds on valid JSON only, and a compiled template always renders
// valid JSON, alone and as a batch.
func FuzzTemplate(f *testing.F) {
	golden, err := os.ReadFile("testdata/template.json")
	if err != nil {
		f.Fatal(err)
	}
	templates := []string{string(golden), format.BeWhereFullTemplate, `"$$data"`, `["$$data.a.0","x$$data.a$$seq"]`,
		`{"$$serial":"$$tags"}`, `"$$$$"`, `{"a":"\u0024$x $$timestamp_seconds"}`, `[]`, `{}`, `1`, `null`}
	tmpl := string(golden)
	for i := range tmpl {
		templates = append(templates, tmpl[:i])
	}
	records := fuzzRecords(f)
	for i, tp := range templates {
		f.Add(tp, records[i%len(records)])
	}
	f.Fuzz(func(t *testing.T, tmpl, data string) {
		tp, err := format.Compile([]byte(tmpl))
		if err != nil {
			var te *format.TemplateError
			if !errors.As(err, &te) || te.Offset < 0 || te.Offset > len(tmpl) {
				t.Fatalf("Compile(%q) error %v (%T) is not a *TemplateError within the template", tmpl, err, err)
			}
			if errors.Is(err, format.ErrInvalidTemplate) && json.Valid([]byte(tmpl)) && !strings.HasPrefix(te.Detail, "nested") {
				t.Fatalf("Compile(%q) = %v, but encoding/json finds it valid", tmpl, err)
			}
			return
		}
		if !json.Valid([]byte(tmpl)) {
			t.Fatalf("Compile(%q) succeeded on invalid JSON", tmpl)
		}
		for _, kind := range []format.Kind{format.KindData, format.KindResult} {
			b := format.NewBuilder(tp)
			m := fuzzMessage(data, kind)
			out := tp.Append(nil, m)
			if !json.Valid(out) {
				t.Fatalf("Compile(%q).Append(%q) = %s, not valid JSON", tmpl, data, out)
			}
			b.Add(m)
			b.Add(m)
			if body := b.Bytes(); !json.Valid(body) {
				t.Fatalf("Compile(%q) batch of %q = %s, not valid JSON", tmpl, data, body)
			}
		}
	})
}

// FuzzRecord renders arbitrary records in the formats that read them (measurement, bewhere):
// the output is always valid JSON, whatever the record.
func FuzzRecord(f *testing.F) {
	for _, r := range fuzzRecords(f) {
		f.Add(r)
	}
	var formats []format.Format
	for _, name := range []string{format.NameMeasurement, format.NameBeWhere, format.NameBeWhereFull} {
		fm, err := format.Lookup(name, format.Options{})
		if err != nil {
			f.Fatal(err)
		}
		formats = append(formats, fm)
	}
	f.Fuzz(func(t *testing.T, data string) {
		for _, fm := range formats {
			for _, kind := range []format.Kind{format.KindData, format.KindResult} {
				b := format.NewBuilder(fm)
				m := fuzzMessage(data, kind)
				b.Add(m)
				b.Add(m)
				if body := b.Bytes(); !json.Valid(body) {
					t.Fatalf("%s batch of %q = %s, not valid JSON", fm.Name(), data, body)
				}
			}
		}
	})
}

// TestDepthLimit: records nested up to encoding/json's limit stay valid JSON once embedded in a
// batch (the batch array, the report or the template add containers): a record that would end
// up too deep is rendered as an empty record instead.
func TestDepthLimit(t *testing.T) {
	deepTemplate := strings.Repeat(`{"a":`, 50) + `"$$data"` + strings.Repeat(`}`, 50)
	formats := []format.Format{format.MustCompile(deepTemplate), format.MustCompile(`["$$data.a","<$$data>"]`)}
	for _, name := range []string{format.NameMeasurement, format.NameBeWhere} {
		f, _ := format.Lookup(name, format.Options{})
		formats = append(formats, f)
	}
	for _, depth := range []int{9940, 9947, 9948, 9949, 9950, 9990, 9996, 9997, 9998, 9999} {
		// The record holds depth containers at its deepest, itself included.
		data := `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
		for _, f := range formats {
			b := format.NewBuilder(f)
			b.Add(&format.Message{Data: []byte(data)})
			if body := b.Bytes(); !json.Valid(body) {
				t.Errorf("%s: record %d deep: batch is not valid JSON", f.Name(), depth)
			}
		}
		// The deep template: the batch array and 50 objects around the record.
		out := formats[0].Append(nil, &format.Message{Data: []byte(data)})
		if embedded, fits := strings.Contains(string(out), "[["), 1+50+depth <= 10000; embedded != fits {
			t.Errorf("record %d deep in a template 50 deep: embedded %v, want %v", depth, embedded, fits)
		}
	}
}
