package format_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// templateMessage is the message the template tests render.
func templateMessage() *format.Message {
	return &format.Message{
		Device: "SN1", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944500102198304826",
		Custom1: "key-1", Tags: []string{"a", "b,c"}, Account: "acc",
		Seq: 7, Index: 2, ReceivedAt: 1795341600123, Attempt: 3,
		Data: []byte(`{"n":1.5,"i":-3,"s":"x\"y\u00e9","o":{"a":[1,{"b":true}],"k-1":"dash"},"nul":null,` +
			`"arr":[10,20,30],"t":true,"timestamp":"2026-11-22T09:59:50Z","lat\u0069tude":45.5,"0":"zero"}`),
	}
}

// renderf is the f-test helper: Compile(tmpl).Append(m) must be want, and valid JSON.
func renderf(t *testing.T, m *format.Message) func(tmpl, want string) {
	return func(tmpl, want string) {
		t.Helper()
		tp, err := format.Compile([]byte(tmpl))
		if err != nil {
			t.Fatalf("Compile(%q): %v", tmpl, err)
		}
		got := string(tp.Append(nil, m))
		if got != want {
			t.Errorf("Compile(%q).Append =\n%s\nwant\n%s", tmpl, got, want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("Compile(%q).Append = %s, not valid JSON", tmpl, got)
		}
	}
}

func TestTemplateTyped(t *testing.T) {
	f := renderf(t, templateMessage())
	// Record values keep their JSON type, exactly as written.
	f(`"$$data.n"`, `1.5`)
	f(`{"v":"$$data.i"}`, `{"v":-3}`)
	f(`{"v":"$$data.s"}`, `{"v":"x\"y\u00e9"}`)
	f(`{"v":"$$data.o"}`, `{"v":{"a":[1,{"b":true}],"k-1":"dash"}}`)
	f(`{"v":"$$data.t","w":"$$data.nul"}`, `{"v":true,"w":null}`)
	f(`{"v":"$$data"}`, `{"v":`+string(templateMessage().Data)+`}`)
	// Metadata: strings, numbers, arrays.
	f(`["$$serial","$$imei","$$iccid","$$custom1","$$account","$$device","$$serialNumber"]`,
		`["SN1","356307042441013","8944500102198304826","key-1","acc","SN1","SN1"]`)
	f(`["$$seq","$$index","$$attempt","$$received","$$receivedAt","$$msgId","$$kind"]`,
		`[7,2,3,1795341600123,"2026-11-22T10:00:00.123Z","SN1-7-2","data"]`)
	f(`{"tags":"$$tags","groups":"$$groups"}`, `{"tags":["a","b,c"],"groups":[]}`)
	// Times: the record's timestamp (RFC 3339 here) in ms and seconds.
	f(`["$$timestamp","$$timestamp_seconds"]`, `[1795341590000,1795341590]`)
	// A BeWhere name reads the record's top-level field; escaped keys are matched.
	f(`["$$latitude","$$sim","$$battery_capacity_counter"]`, `[45.5,"8944500102198304826",null]`)
}

func TestTemplateMissing(t *testing.T) {
	f := renderf(t, templateMessage())
	// Missing record fields, paths through scalars, indexes out of range or malformed,
	// empty metadata and result-only values become null.
	f(`{"a":"$$data.nope","b":"$$data.arr.3","c":"$$data.n.x","d":"$$data.arr.01","e":"$$data.arr.x"}`,
		`{"a":null,"b":null,"c":null,"d":null,"e":null}`)
	f(`["$$custom2","$$custom3","$$speed","$$gpsTimestamp","$$gpsTimestamp_seconds"]`, `[null,null,null,null,null]`)
	f(`["$$taskId","$$resultCode","$$resultData"]`, `[null,null,null]`)
	m := templateMessage()
	m.Serial, m.IMEI, m.ICCID = "", "", ""
	renderf(t, m)(`["$$serial","$$imei","$$sim"]`, `[null,null,null]`)
}

func TestTemplateNested(t *testing.T) {
	f := renderf(t, templateMessage())
	f(`"$$data.o.a.1.b"`, `true`)
	f(`"$$data.o.a.0"`, `1`)
	f(`"$$data.arr.2"`, `30`)
	f(`"$$data.o.k-1"`, `"dash"`)
	f(`"$$data.0"`, `"zero"`) // a digit segment on an object is a key
	f(`"$$data.latitude"`, `45.5`)
	f(`{"deep":{"er":["$$data.o.a"]}}`, `{"deep":{"er":[[1,{"b":true}]]}}`)
}

func TestTemplateText(t *testing.T) {
	f := renderf(t, templateMessage())
	f(`"n=$$data.n i=$$data.i s=$$data.s t=$$data.t nul=$$data.nul miss=$$data.nope"`,
		`"n=1.5 i=-3 s=x\"y\u00e9 t=true nul= miss="`)
	f(`"o=$$data.o"`, `"o={\"a\":[1,{\"b\":true}],\"k-1\":\"dash\"}"`)
	f(`"$$serial/$$seq/$$index at $$receivedAt tags=$$tags"`, `"SN1/7/2 at 2026-11-22T10:00:00.123Z tags=a,b,c"`)
	f(`"id:$$msgId"`, `"id:SN1-7-2"`)
	// Keys are substituted as text.
	f(`{"$$serial":"$$seq","x-$$data.n":1}`, `{"SN1":7,"x-1.5":1}`)
	// A placeholder ends where the name does: punctuation after it is text.
	f(`"$$serial. $$data.n."`, `"SN1. 1.5."`)
	// "$$" not followed by a name, and escaped dollars, are literal.
	f(`["$$","$$5","$$ x","US$$","\u0024$serial"]`, `["$$","$$5","$$ x","US$$","\u0024$serial"]`)
	f(`"$$$serial"`, `"$SN1"`)
	// Whitespace between tokens is dropped; inside strings it is kept.
	f("{ \"a b\" :\n[ 1 , 2 ] ,\t\"c\" : \" x \" }", `{"a b":[1,2],"c":" x "}`)
}

func TestTemplateEscaping(t *testing.T) {
	m := templateMessage()
	m.Serial = "a\"b\\c\n\t\x01</script>\u2028é\xff"
	m.Tags = []string{`q"t`}
	f := renderf(t, m)
	const esc = `a\"b\\c\n\t\u0001</script>\u2028é\ufffd`
	f(`{"s":"$$serial","t":"<$$serial>"}`, `{"s":"`+esc+`","t":"<`+esc+`>"}`)
	f(`["$$tags","$$tags!"]`, `[["q\"t"],"q\"t!"]`)
	// The substituted string decodes to the original (invalid UTF-8 replaced).
	tp := format.MustCompile(`{"s":"[$$serial]"}`)
	var out struct{ S string }
	if err := json.Unmarshal(tp.Append(nil, m), &out); err != nil {
		t.Fatal(err)
	}
	if want := "[" + strings.ToValidUTF8(m.Serial, "\uFFFD") + "]"; out.S != want {
		t.Errorf("decoded %q, want %q", out.S, want)
	}
}

func TestTemplateResult(t *testing.T) {
	m := &format.Message{Device: "SN1", Serial: "SN1", Kind: format.KindResult, TaskID: "t-9", ResultCode: 1,
		Data: []byte(`{"error":"busy"}`)}
	renderf(t, m)(`{"k":"$$kind","id":"$$taskId","code":"$$resultCode","d":"$$resultData","e":"$$data.error"}`,
		`{"k":"result","id":"t-9","code":1,"d":{"error":"busy"},"e":"busy"}`)
}

// TestTemplateBadRecord: a record that is not one valid JSON object reads as empty.
func TestTemplateBadRecord(t *testing.T) {
	tmpl := `{"d":"$$data","n":"$$data.n","t":"$$timestamp","x":"<$$data.n>","s":"$$serial"}`
	for _, data := range []string{``, `{"n":1`, `{"n":1}x`, `[1]`, `"n"`, `{"n":01}`, "{\"n\":\"\x01\"}"} {
		m := &format.Message{Serial: "S", ReceivedAt: 5, Data: []byte(data)}
		renderf(t, m)(tmpl, `{"d":null,"n":null,"t":5,"x":"<>","s":"S"}`)
	}
	// Surrounding whitespace is fine, and not copied.
	m := &format.Message{Serial: "S", ReceivedAt: 5, Data: []byte(" {\"n\":1}\n")}
	renderf(t, m)(tmpl, `{"d":{"n":1},"n":1,"t":5,"x":"<1>","s":"S"}`)
}

func TestCompileErrors(t *testing.T) {
	f := func(tmpl string, sentinel error, offset int, path, detail string) {
		t.Helper()
		tp, err := format.Compile([]byte(tmpl))
		if err == nil {
			t.Fatalf("Compile(%q) = %v, want an error", tmpl, tp)
		}
		var te *format.TemplateError
		if !errors.As(err, &te) || !errors.Is(err, sentinel) {
			t.Fatalf("Compile(%q) error %v (%T), want a *TemplateError wrapping %v", tmpl, err, err, sentinel)
		}
		if te.Offset != offset || te.Path != path || !strings.Contains(te.Detail, detail) {
			t.Errorf("Compile(%q) = offset %d path %q detail %q, want %d %q %q", tmpl, te.Offset, te.Path, te.Detail, offset, path, detail)
		}
	}
	inv, unk := format.ErrInvalidTemplate, format.ErrUnknownPlaceholder
	f(``, inv, 0, "", "empty")
	f(" \n", inv, 2, "", "empty")
	f(`{"a":}`, inv, 5, "a", "expected a value")
	f(`{"a":1,}`, inv, 7, "", "expected a string key")
	f(`{"x":{"a":1,}}`, inv, 12, "x", "expected a string key")
	f(`{"a" 1}`, inv, 5, "a", "expected ':'")
	f(`{1:2}`, inv, 1, "", "expected a string key")
	f(`{"a":[1,2}`, inv, 9, "a[1]", "expected ',' or ']'")
	f(`{"a":[1,2]`, inv, 10, "a", "unexpected end, expected ',' or '}'")
	f(`{"a":1} x`, inv, 8, "", "unexpected data")
	f(`[1,tru]`, inv, 3, "[1]", "expected a value")
	f("{\"a\":\"x\x01\"}", inv, 7, "a", "invalid string")
	f(`{"a b":{"c":[0,{"d":-}]}}`, inv, 21, `["a b"].c[1].d`, "expected a value")
	f(strings.Repeat("[", format.MaxTemplateDepth+1), inv, format.MaxTemplateDepth, strings.Repeat("[0]", format.MaxTemplateDepth), "nested deeper")
	f(`{"sensorData":{"speed":"$$sped"}}`, unk, 24, "sensorData.speed", "$$sped")
	f(`["ok","at $$receivedAt by $$nobody"]`, unk, 26, "[1]", "$$nobody")
	f(`{"$$nope":1}`, unk, 2, "", "$$nope")
	f(`{"a":"$$Serial"}`, unk, 6, "a", "$$Serial") // names are case-sensitive
	f(`"$$datas.x"`, unk, 1, "", "$$datas")

	// The message names the offset and the path.
	_, err := format.Compile([]byte(`{"sensorData":{"speed":"$$sped"}}`))
	if want := "unknown placeholder at offset 24 (sensorData.speed): $$sped is not a built-in placeholder (record fields are $$data.sped)"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// TestTemplateBuiltins: every built-in placeholder compiles and renders, typed and as text, for
// data and result messages, with and without metadata.
func TestTemplateBuiltins(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i, name := range format.Placeholders() {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"` + name + `":"$$` + name + `","` + name + `_text":"<$$` + name + `>"`)
	}
	b.WriteString("}")
	tp, err := format.Compile([]byte(b.String()))
	if err != nil {
		t.Fatalf("every built-in placeholder must compile: %v", err)
	}
	for _, m := range []*format.Message{templateMessage(), {}, {Kind: format.KindResult, Data: []byte(`{}`)}} {
		out := tp.Append(nil, m)
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("Append = %s: %v", out, err)
		}
		if len(v) != 2*len(format.Placeholders()) {
			t.Errorf("Append has %d keys, want %d", len(v), 2*len(format.Placeholders()))
		}
	}
}
