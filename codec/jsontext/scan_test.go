package jsontext_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// jsonObject is the reference for ValidObject: encoding/json.Valid and an object at the top.
func jsonObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && json.Valid(b)
}

// nest returns a member value holding depth containers (arrays, or objects if obj), so that
// `{"a":` + nest(d) + `}` holds d+1 containers at its deepest.
func nest(depth int, obj bool) string {
	if obj {
		return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	}
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

// validCases are objects and near-objects; the expected results are those of encoding/json.
var validCases = []struct {
	in   string
	want bool
}{
	// Objects, whitespace, the three literals.
	{`{}`, true}, {` {} `, true}, {"\t{\r\n}\n", true}, {`{"a":1}`, true}, {`{ "a" : 1 , "b" : [ ] }`, true},
	{`{"a":true,"b":false,"c":null}`, true}, {`{"a":{"b":{}}}`, true},
	{`{"a":-0.5e+10,"b":[1,2,{"c":null}],"d":"x\"y\\u00e9\n"}`, true},
	{`{"a":tru}`, false}, {`{"a":nul}`, false}, {`{"a":nulll}`, false}, {`{"a":True}`, false},
	{"{\f}", false}, {"{\v}", false}, {"\u00a0{}", false},
	// Not exactly one object.
	{``, false}, {` `, false}, {`{`, false}, {`}`, false}, {`[]`, false}, {`"x"`, false}, {`1`, false},
	{`null`, false}, {`{}{}`, false}, {`{} x`, false}, {`{"a":1}}`, false}, {`{"a":"b"`, false},
	// Members.
	{`{"a":1,}`, false}, {`{,}`, false}, {`{"a"}`, false}, {`{"a":}`, false}, {`{a:1}`, false},
	{`{"a" 1}`, false}, {`{"a":1 "b":2}`, false}, {`{1:1}`, false}, {`{"a":1,"a":2}`, true},
	// Arrays.
	{`{"a":[1,2,]}`, false}, {`{"a":[,]}`, false}, {`{"a":[}`, false}, {`{"a":{]}`, false},
	{`{"a":[1 2]}`, false}, {`{"a":{"b":1]}`, false}, {`{"a":[[],[[]],{}]}`, true},
	// Numbers.
	{`{"a":-0}`, true}, {`{"a":0}`, true}, {`{"a":1e5}`, true}, {`{"a":1E+2}`, true}, {`{"a":1e-2}`, true},
	{`{"a":0.0e-0}`, true}, {`{"a":-1.5e+3}`, true}, {`{"a":12345678901234567890123}`, true},
	{`{"a":01}`, false}, {`{"a":-01}`, false}, {`{"a":00}`, false}, {`{"a":1.}`, false}, {`{"a":.5}`, false},
	{`{"a":1e}`, false}, {`{"a":1e+}`, false}, {`{"a":-}`, false}, {`{"a":+1}`, false}, {`{"a":- 1}`, false},
	{`{"a":1.5.2}`, false}, {`{"a":0x10}`, false}, {`{"a":NaN}`, false}, {`{"a":Infinity}`, false},
	{`{"a":-`, false}, {`{"a":1`, false}, {`{"a":1.`, false}, {`{"a":1e`, false},
	// Strings: escapes, control characters, invalid UTF-8 (accepted, as by encoding/json).
	{`{"a":"\"\\\/\b\f\n\r\t"}`, true}, {`{"a":"\u00e9\uD83D\uDE00\ud83d"}`, true}, {`{"\u0000":""}`, true},
	{`{"a":"\x01"}`, false}, {`{"a":"\u12"}`, false}, {`{"a":"\u12g4"}`, false}, {`{"a":"\q"}`, false},
	{`{"a":"\U00e9"}`, false}, {`{"a":"\'"}`, false}, {`{"a":"\`, false}, {`{"a":"\u00e`, false},
	{"{\"a\":\"\x00\"}", false}, {"{\"a\":\"\x1f\"}", false}, {"{\"a\":\"\t\"}", false}, {"{\"a\":\"\x7f\"}", true},
	{"{\"a\":\"\xff\xfe\"}", true}, {"{\"\xff\":1}", true}, {"{\"a\":\"\xed\xa0\x80\"}", true},
	{"{\"a\":\"\xe2\x82\"}", true},
	// Nesting: the top-level object counts, encoding/json allows 10000 containers at once.
	{`{"a":` + nest(9998, false) + `}`, true}, {`{"a":` + nest(9999, false) + `}`, true},
	{`{"a":` + nest(10000, false) + `}`, false}, {`{"a":` + nest(10001, false) + `}`, false},
	{`{"a":` + nest(9999, true) + `}`, true}, {`{"a":` + nest(10000, true) + `}`, false},
	{`{"a":` + nest(255, false) + `}`, true}, {`{"a":` + nest(256, true) + `}`, true},
	{`{"a":` + strings.Repeat("[", 20000) + `}`, false},
}

func TestValidObject(t *testing.T) {
	f := func(in string, want bool) {
		t.Helper()
		if ref := jsonObject([]byte(in)); ref != want {
			t.Fatalf("test table says %.60q is %v, encoding/json says %v", in, want, ref)
		}
		if got := jsontext.ValidObject([]byte(in)); got != want {
			t.Errorf("ValidObject(%.60q) = %v, want %v", in, got, want)
		}
	}
	for _, c := range validCases {
		f(c.in, c.want)
	}
}

func TestSkipValue(t *testing.T) {
	f := func(in string, i, depth, wantEnd int, wantOK bool) {
		t.Helper()
		end, ok := jsontext.SkipValue([]byte(in), i, depth)
		if ok != wantOK || (ok && end != wantEnd) {
			t.Errorf("SkipValue(%.40q, %d, %d) = %d, %v, want %d, %v", in, i, depth, end, ok, wantEnd, wantOK)
		}
	}
	f(`1,2`, 0, 0, 1, true)
	f(`-0 `, 0, 0, 2, true)
	f(`1e5]`, 0, 0, 3, true)
	f(`01`, 0, 0, 1, true) // the value is 0; what follows is the caller's business
	f(`"a\"b" x`, 0, 0, 6, true)
	f(`true,`, 0, 0, 4, true)
	f(`falsey`, 0, 0, 5, true)
	f(`nul`, 0, 0, 0, false)
	f(`[ 1 , {"a" : [ ] } ] x`, 0, 0, 20, true)
	f(`x {"a":{}}`, 2, 0, 10, true)
	f(`{"a":1,}`, 0, 0, 0, false)
	f(` 1`, 0, 0, 0, false) // no leading whitespace
	f(``, 0, 0, 0, false)
	f(`[`, 1, 0, 0, false)
	// depth counts containers already open: MaxDepth in total.
	f(`[[]]`, 0, jsontext.MaxDepth-2, 4, true)
	f(`[[]]`, 0, jsontext.MaxDepth-1, 0, false)
	f(`[]`, 0, jsontext.MaxDepth-1, 2, true)
	f(`[]`, 0, jsontext.MaxDepth, 0, false)
	f(`1`, 0, jsontext.MaxDepth, 1, true)
	f(nest(jsontext.MaxDepth, false), 0, 0, 2*jsontext.MaxDepth, true)
	f(nest(jsontext.MaxDepth+1, false), 0, 0, 0, false)
	f(nest(300, true)+"x", 0, 0, 6*300+1, true)
}

// ScanValue and ScanString say why a value is invalid, and where.
func TestScanProblem(t *testing.T) {
	f := func(in string, depth, wantEnd int, want jsontext.Problem) {
		t.Helper()
		end, p := jsontext.ScanValue([]byte(in), 0, depth)
		if p != want || end != wantEnd {
			t.Errorf("ScanValue(%.40q, 0, %d) = %d, %v, want %d, %v", in, depth, end, p, wantEnd, want)
		}
		if _, ok := jsontext.SkipValue([]byte(in), 0, depth); ok != (want == jsontext.None) {
			t.Errorf("SkipValue(%.40q) ok = %v, ScanValue says %v", in, ok, p)
		}
	}
	f(`{"a":[1,{}]}`, 0, 12, jsontext.None)
	f(``, 0, 0, jsontext.UnexpectedEnd)
	f(`[1,`, 0, 3, jsontext.UnexpectedEnd)
	f(`{"a"`, 0, 4, jsontext.UnexpectedEnd)
	f(`{"a":1`, 0, 6, jsontext.UnexpectedEnd)
	f(`[[]]`, jsontext.MaxDepth-1, 1, jsontext.TooDeep)
	f(`[1,]`, 0, 3, jsontext.NoValue)
	f(`{"a":}`, 0, 5, jsontext.NoValue)
	f(`+1`, 0, 0, jsontext.NoValue)
	f(`[tru]`, 0, 1, jsontext.BadLiteral)
	f(`nul`, 0, 0, jsontext.BadLiteral)
	f(`[1.]`, 0, 3, jsontext.BadNumber)
	f(`-x`, 0, 1, jsontext.BadNumber)
	f(`1e+`, 0, 3, jsontext.BadNumber)
	f(`{"a":"b`, 0, 7, jsontext.UnterminatedString)
	f(`"\`, 0, 1, jsontext.UnterminatedString)
	f(`["\x"]`, 0, 2, jsontext.BadEscape)
	f(`"a\u12G4"`, 0, 2, jsontext.BadUnicodeEscape)
	f("\"a\x01\"", 0, 2, jsontext.ControlChar)
	f(`{1:2}`, 0, 1, jsontext.NoKey)
	f(`{"a",1}`, 0, 4, jsontext.NoColon)
	f(`{"a":1]`, 0, 6, jsontext.NoObjectEnd)
	f(`[1}`, 0, 2, jsontext.NoArrayEnd)
	f(`{"a":[1 2]}`, 0, 8, jsontext.NoArrayEnd)

	for p := jsontext.None; p <= jsontext.NoArrayEnd; p++ {
		if s := p.String(); s == "" || s == "unknown problem" {
			t.Errorf("Problem(%d).String() = %q", p, s)
		}
	}
	if _, _, p := jsontext.ScanString([]byte(`"a\q"`), 0); p != jsontext.BadEscape {
		t.Errorf("ScanString(%q) = %v, want %v", `"a\q"`, p, jsontext.BadEscape)
	}
}

func TestSkipString(t *testing.T) {
	f := func(in string, wantEnd int, wantEsc, wantOK bool) {
		t.Helper()
		end, esc, ok := jsontext.SkipString([]byte(in), 0)
		if ok != wantOK || (ok && (end != wantEnd || esc != wantEsc)) {
			t.Errorf("SkipString(%q) = %d, %v, %v, want %d, %v, %v", in, end, esc, ok, wantEnd, wantEsc, wantOK)
		}
	}
	f(`""`, 2, false, true)
	f(`"abc"def"`, 5, false, true)
	f(`"a\"b"`, 6, true, true)
	f(`"\\"`, 4, true, true)
	f(`"\/"`, 4, true, true)
	f(`"\u00E9"`, 8, true, true)
	f("\"\xff\"", 3, false, true)
	f("\"\x7f\"", 3, false, true)
	f(`"`, 0, false, false)
	f(`"abc`, 0, false, false)
	f(`"\"`, 0, false, false)
	f(`"\`, 0, false, false)
	f(`"\u00"`, 0, false, false)
	f(`"\x41"`, 0, false, false)
	f("\"\n\"", 0, false, false)
	f("\"\x00\"", 0, false, false)
}

// ScanString's plain: a body without escapes and with only ASCII is its own value.
func TestScanStringPlain(t *testing.T) {
	f := func(in string, want bool) {
		t.Helper()
		end, plain, p := jsontext.ScanString([]byte(in), 0)
		if p != jsontext.None || end != len(in) || plain != want {
			t.Errorf("ScanString(%q) = %d, %v, %v, want %d, %v, valid", in, end, plain, p, len(in), want)
		}
		if ref, ok := unquoteRef([]byte(in)); plain && (!ok || ref != in[1:len(in)-1]) {
			t.Errorf("ScanString(%q) says plain, but its value is %q", in, ref)
		}
	}
	f(`""`, true)
	f(`"SN000123 and more than four bytes"`, true)
	f(`"a\"b"`, false)
	f(`"\u0041"`, false)
	f(`"é"`, false)
	f("\"\xff\"", false)
	f("\"abcd\x7f\"", true)
}

func TestSkipWS(t *testing.T) {
	f := func(in string, i, want int) {
		t.Helper()
		if got := jsontext.SkipWS([]byte(in), i); got != want {
			t.Errorf("SkipWS(%q, %d) = %d, want %d", in, i, got, want)
		}
	}
	f(``, 0, 0)
	f(" \t\r\n", 0, 4)
	f(" \t\r\nx ", 1, 4)
	f("\f\v\u00a0x", 0, 0) // not JSON whitespace
	f("x  ", 1, 3)
	f("x", 1, 1)
}

// unquoteRef is encoding/json's value of the string literal q, and whether it is one.
func unquoteRef(q []byte) (string, bool) {
	var s string
	err := json.Unmarshal(q, &s)
	return s, err == nil
}

func TestAppendUnquoted(t *testing.T) {
	f := func(body, want string) {
		t.Helper()
		q := `"` + body + `"`
		if end, _, ok := jsontext.SkipString([]byte(q), 0); !ok || end != len(q) {
			t.Fatalf("SkipString(%q) = %d, %v: not a test case", q, end, ok)
		}
		if ref, ok := unquoteRef([]byte(q)); !ok || ref != want {
			t.Fatalf("test table says %q is %q, encoding/json says %q, %v", q, want, ref, ok)
		}
		if got := jsontext.AppendUnquoted([]byte("pre"), []byte(body)); string(got) != "pre"+want {
			t.Errorf("AppendUnquoted(%q) = %q, want %q", body, got[min(3, len(got)):], want)
		}
	}
	f(``, "")
	f(`abc`, "abc")
	f(`\"\\\/\b\f\n\r\t`, "\"\\/\b\f\n\r\t")
	f(`\u0041\u00e9\u00E9\u20ac`, "Aéé€")
	f(`\u0000`, "\x00")
	f(`\ud83d\ude00`, "😀")
	f(`\uD83D\uDE00x`, "😀x")
	f(`\ud83d`, "\ufffd")             // unpaired high surrogate
	f(`\ude00`, "\ufffd")             // unpaired low surrogate
	f(`\ud83dx`, "\ufffdx")           // high surrogate, then no escape
	f(`\ude00\ud83d`, "\ufffd\ufffd") // reversed pair
	f(`\ud83d\ud83d\ude00`, "\ufffd😀")
	f(`\ud83d\u0041`, "\ufffdA")
	f(`\ud83d\n`, "\ufffd\n")
	f(`\ufffd`, "\ufffd")
	f("a\xffb", "a\ufffdb")                            // invalid UTF-8: each bad byte is U+FFFD
	f("\xed\xa0\x80", "\ufffd\ufffd\ufffd")            // a surrogate encoded in UTF-8 is invalid
	f("\xe2\x82", "\ufffd\ufffd")                      // truncated sequence
	f("\xc0\xaf", "\ufffd\ufffd")                      // overlong
	f("\xf4\x90\x80\x80", strings.Repeat("\ufffd", 4)) // beyond U+10FFFF
	f("é😀\x7f", "é😀\x7f")
}

// Plain inputs cost no allocations; escaped ones only what dst lacks.
func TestAllocs(t *testing.T) {
	rec := sampleRecord()
	deep := []byte(`{"a":` + nest(250, false) + `,"b":` + nest(250, true) + `}`)
	body := []byte(`S\u004e\ud83d\ude00\n` + "\xff")
	dst := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		if !jsontext.ValidObject(rec) || !jsontext.ValidObject(deep) {
			t.Fatal("invalid")
		}
		if got := jsontext.AppendUnquoted(dst[:0], body); !utf8.Valid(got) {
			t.Fatal("invalid UTF-8")
		}
	}); n != 0 {
		t.Errorf("ValidObject and AppendUnquoted allocate %v times per run, want 0", n)
	}
}

func FuzzValidObject(f *testing.F) {
	for _, c := range validCases {
		if len(c.in) < 200 {
			f.Add([]byte(c.in))
		}
	}
	// A record cut at every offset: all prefixes but the whole are invalid.
	rec := sampleRecord()
	for i := range rec {
		f.Add(rec[:i])
	}
	f.Add(rec)
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := jsontext.ValidObject(b), jsonObject(b); got != want {
			t.Fatalf("ValidObject(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

// FuzzAppendUnquoted checks SkipString and AppendUnquoted against encoding/json.Unmarshal into a
// string: the quoted body is a string exactly when encoding/json says so, with the same value.
func FuzzAppendUnquoted(f *testing.F) {
	for _, s := range []string{``, `abc`, `\"\\\/\b\f\n\r\t`, `\u00e9\ud83d\ude00`, `\ud83d`, `\ude00\ud83d`,
		`\ud83d\u0041`, "a\xffb", "\xed\xa0\x80", `\u12`, `\x`, `a"b`, "\x01", `\`, `S\u004e1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		q := append(append([]byte{'"'}, body...), '"')
		end, esc, ok := jsontext.SkipString(q, 0)
		ref, refOK := unquoteRef(q)
		if whole := ok && end == len(q); whole != refOK {
			t.Fatalf("SkipString(%q) = %d, %v; encoding/json says valid is %v", q, end, ok, refOK)
		}
		if !refOK {
			return
		}
		if !esc && bytes.IndexByte(body, '\\') >= 0 {
			t.Fatalf("SkipString(%q) says no escapes", q)
		}
		if got := jsontext.AppendUnquoted(nil, body); string(got) != ref {
			t.Fatalf("AppendUnquoted(%q) = %q, encoding/json says %q", body, got, ref)
		}
	})
}

func sampleRecord() []byte {
	return []byte(`{"ts":1700000000123,"lat":52.370216,"lon":4.895168,"speed":42.5,"heading":271,"alt":12.1,"sats":9,"battery":87,"temp":21.5,"ignition":true,"odometer":123456.7,"event":"position","fix":"3d"}`)
}

func sampleLine() []byte {
	return []byte(`{"serial":"SN000123","ts":"2026-11-22T10:00:00.123Z","lat":52.520008,"lon":13.404954,` +
		`"speed":48.5,"heading":271,"ignition":true,"fuel":{"level":0.62,"rate":3.1},"tags":["a","b"],"t":21.5}`)
}

func BenchmarkValidObject(b *testing.B) {
	for _, c := range []struct {
		name string
		in   []byte
	}{{"record", sampleRecord()}, {"line", sampleLine()}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				if !jsontext.ValidObject(c.in) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

func BenchmarkAppendUnquoted(b *testing.B) {
	body := []byte(`S\"N\\4\/\u00e9\ud83d\ude00 plain text after the escapes`)
	dst := make([]byte, 0, 128)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dst = jsontext.AppendUnquoted(dst[:0], body)
	}
}
