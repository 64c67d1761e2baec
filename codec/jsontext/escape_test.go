package jsontext_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// encodingJSON is what a json.Encoder with SetEscapeHTML(false) writes for s: the reference.
func encodingJSON(t testing.TB, s string) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}))
}

func TestAppendQuoted(t *testing.T) {
	f := func(s, want string) {
		t.Helper()
		if got := string(jsontext.AppendQuoted([]byte("x"), s)); got != "x"+want {
			t.Errorf("AppendQuoted(%q) = %s, want %s", s, got, "x"+want)
		}
		if got := string(jsontext.AppendQuoted([]byte("x"), []byte(s))); got != "x"+want {
			t.Errorf("AppendQuoted([]byte(%q)) = %s, want %s", s, got, "x"+want)
		}
		if ref := encodingJSON(t, s); ref != want {
			t.Errorf("test table says %q is %s, encoding/json says %s", s, want, ref)
		}
		if n, got := jsontext.EscapedLenBound(s), len(want)-2; n < got {
			t.Errorf("EscapedLenBound(%q) = %d, below the real %d", s, n, got)
		}
	}
	f("", `""`)
	f("SN1", `"SN1"`)
	f(`a"b\c/`, `"a\"b\\c/"`)
	f("\n\r\t\b\f", `"\n\r\t\b\f"`)
	f("\x00\x1f\x7f", `"\u0000\u001f`+"\x7f"+`"`)
	f("<&>é😀", `"<&>é😀"`)
	f("x\xffy\xe2\x82", `"x\ufffdy\ufffd\ufffd"`)
	f("\u2028\u2029\u2027", `"\u2028\u2029`+"\u2027"+`"`)
}

// Escaping appends to the caller's buffer: nothing else is allocated.
func TestAppendEscapedAllocs(t *testing.T) {
	s := "a\"b\\c\n\x01é\u2028\xff plain"
	b := []byte(s)
	dst := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() {
		dst = jsontext.AppendEscaped(dst[:0], s)
		dst = jsontext.AppendEscaped(dst[:0], b)
	}); n != 0 {
		t.Errorf("AppendEscaped allocates %v times per run, want 0", n)
	}
}

// FuzzAppendQuoted checks escaping against encoding/json, for strings and byte slices, and that
// EscapedLenBound bounds it.
func FuzzAppendQuoted(f *testing.F) {
	for _, s := range []string{"", "SN1", `a"b\c`, "\n\x00\x1f\x7f", "é😀\u2028\u2029", "x\xffy\xe2\x82", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := encodingJSON(t, s)
		if got := jsontext.AppendQuoted(nil, s); string(got) != want {
			t.Fatalf("AppendQuoted(%q) = %s, encoding/json says %s", s, got, want)
		}
		if got := jsontext.AppendQuoted(nil, []byte(s)); string(got) != want {
			t.Fatalf("AppendQuoted([]byte(%q)) = %s, encoding/json says %s", s, got, want)
		}
		if n := jsontext.EscapedLenBound(s); n < len(want)-2 {
			t.Fatalf("EscapedLenBound(%q) = %d, below the real %d", s, n, len(want)-2)
		}
	})
}

func BenchmarkAppendEscaped(b *testing.B) {
	for _, c := range []struct{ name, s string }{
		{"plain", "356938035643809-1795346400-12"},
		{"escapes", `a "quoted" \ name` + "\n\té\u2028"},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst := make([]byte, 0, 128)
			b.SetBytes(int64(len(c.s)))
			b.ReportAllocs()
			for b.Loop() {
				dst = jsontext.AppendEscaped(dst[:0], c.s)
			}
		})
	}
}
