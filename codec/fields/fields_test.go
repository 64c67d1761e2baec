package fields_test

import (
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/fields"
)

var vals = fields.Values{
	Serial: "SN1", IMEI: "356307042441013", ICCID: "8944500102198304826",
	Custom1: "c 1", Custom2: "a/b?c=d&e#f", Custom3: "tok\r\nX-Evil: 1",
}

func TestCompile(t *testing.T) {
	f := func(tmpl string, v *fields.Values, want string, static bool, uses ...string) {
		t.Helper()
		tp, err := fields.Compile(tmpl)
		if err != nil {
			t.Fatalf("Compile(%q) error %v", tmpl, err)
		}
		if got := string(tp.Append([]byte("x"), v)); got != "x"+want {
			t.Errorf("Compile(%q).Append = %q, want %q", tmpl, got, "x"+want)
		}
		if tp.Static() != static {
			t.Errorf("Compile(%q).Static() = %v, want %v", tmpl, tp.Static(), static)
		}
		if got := tp.Uses(); !slices.Equal(got, uses) {
			t.Errorf("Compile(%q).Uses() = %q, want %q", tmpl, got, uses)
		}
	}
	f("", &vals, "", true)
	f("Bearer abc", &vals, "Bearer abc", true)
	f("[SERIAL]", &vals, "SN1", false, "SERIAL")
	f("Bearer [CUSTOM1]", &vals, "Bearer c 1", false, "CUSTOM1")
	f("[IMEI]/[ICCID]/[SERIAL]/[IMEI]", &vals, "356307042441013/8944500102198304826/SN1/356307042441013", false, "IMEI", "ICCID", "SERIAL")
	f("[CUSTOM2][CUSTOM3]", &vals, "a/b?c=d&e#ftokX-Evil: 1", false, "CUSTOM2", "CUSTOM3") // no header splitting
	f("[SERIAL]", nil, "", false, "SERIAL")
	f("[serial] [] [ [SERIAL [1] a[]=1 [::1]", &vals, "[serial] [] [ [SERIAL [1] a[]=1 [::1]", true)
	f("[[SERIAL]]", &vals, "[SN1]", false, "SERIAL")
}

func TestCompileURL(t *testing.T) {
	f := func(tmpl string, v *fields.Values, want string) {
		t.Helper()
		tp, err := fields.CompileURL(tmpl)
		if err != nil {
			t.Fatalf("CompileURL(%q) error %v", tmpl, err)
		}
		got := string(tp.Append(nil, v))
		if got != want {
			t.Errorf("CompileURL(%q).Append = %q, want %q", tmpl, got, want)
		}
		if _, err := url.Parse(got); err != nil {
			t.Errorf("CompileURL(%q).Append = %q does not parse: %v", tmpl, got, err)
		}
	}
	f("https://example.com/ingest", &vals, "https://example.com/ingest")
	f("https://example.com/d/[SERIAL]", &fields.Values{Serial: "SN/1"}, "https://example.com/d/SN%2F1")
	f("https://example.com/d/[SERIAL]?imei=[IMEI]", &fields.Values{Serial: "a b+c:@$&=;,?", IMEI: "a b+c:@$&=;,?"},
		"https://example.com/d/a%20b+c:@$&=%3B%2C%3F?imei=a+b%2Bc%3A%40%24%26%3D%3B%2C%3F")
	f("https://example.com/[CUSTOM2]?k=[CUSTOM2]#[CUSTOM2]", &vals,
		"https://example.com/a%2Fb%3Fc=d&e%23f?k=a%2Fb%3Fc%3Dd%26e%23f#a%2Fb%3Fc%3Dd%26e%23f")
	f("https://example.com/x#frag/[SERIAL]", &fields.Values{Serial: "a/b"}, "https://example.com/x#frag/a%2Fb")
	f("http://[::1]:8080/[SERIAL]", &fields.Values{Serial: "é\x00"}, "http://[::1]:8080/%C3%A9%00")
	f("https://example.com/?ids[]=1&q=[CUSTOM1]", &vals, "https://example.com/?ids[]=1&q=c+1")
	f("https://example.com/[CUSTOM3]", &vals, "https://example.com/tok%0D%0AX-Evil:%201")
}

func TestCompileErrors(t *testing.T) {
	f := func(tmpl, wantInErr string) {
		t.Helper()
		for _, compile := range []func(string) (*fields.Template, error){fields.Compile, fields.CompileURL} {
			tp, err := compile(tmpl)
			if err == nil {
				t.Fatalf("Compile(%q) = %v, want an error", tmpl, tp)
			}
			if !errors.Is(err, fields.ErrUnknownField) || !strings.Contains(err.Error(), wantInErr) {
				t.Errorf("Compile(%q) error %q, want ErrUnknownField naming %s", tmpl, err, wantInErr)
			}
		}
	}
	f("[SERIAL2]", "[SERIAL2]")
	f("https://x/[SERIAL]/[DEVICE]", "[DEVICE]")
	f("[CUSTOM4]", "[CUSTOM4]")
	f("a[ID]b", "[ID]")
}

// TestEscapingMatchesNetURL checks path and query escaping against net/url
// for every byte value.
func TestEscapingMatchesNetURL(t *testing.T) {
	var all strings.Builder
	for c := 0; c < 256; c++ {
		all.WriteByte(byte(c))
	}
	checkEscaping(t, all.String())
	checkEscaping(t, "SN/1 é 日本 \xff")
}

func checkEscaping(t *testing.T, s string) {
	t.Helper()
	tp, err := fields.CompileURL("[SERIAL]?[SERIAL]")
	if err != nil {
		t.Fatal(err)
	}
	got := string(tp.Append(nil, &fields.Values{Serial: s}))
	want := url.PathEscape(s) + "?" + url.QueryEscape(s)
	if got != want {
		t.Errorf("escape(%q) = %q, want %q", s, got, want)
	}
}

func TestAppendAllocs(t *testing.T) {
	tp, err := fields.CompileURL("https://example.com/devices/[SERIAL]/data?imei=[IMEI]&k=[CUSTOM1]")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = tp.Append(buf[:0], &vals) }); n != 0 {
		t.Fatalf("Append: %v allocs, want 0", n)
	}
}

// fieldRE matches what Compile takes for a field name.
var fieldRE = regexp.MustCompile(`\[[A-Z][A-Z0-9]*\]`)

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"", "https://example.com/d/[SERIAL]?imei=[IMEI]", "Bearer [CUSTOM1]", "[", "]", "[]", "[A", "[A]",
		"[SERIAL][SERIAL]", "http://[::1]/", "a[]=1&b[0]=2", "[serial]", "[CUSTOM3]#[ICCID]",
	} {
		f.Add(s, "SN/1 é")
	}
	f.Fuzz(func(t *testing.T, s, value string) {
		v := &fields.Values{Serial: value, IMEI: value, ICCID: value, Custom1: value, Custom2: value, Custom3: value}
		for _, compile := range []func(string) (*fields.Template, error){fields.Compile, fields.CompileURL} {
			tp, err := compile(s)
			if err != nil {
				if !errors.Is(err, fields.ErrUnknownField) {
					t.Fatalf("Compile(%q) error %v does not wrap ErrUnknownField", s, err)
				}
				continue
			}
			got := string(tp.Append(nil, v))
			if tp.Static() {
				if got != s {
					t.Fatalf("static Compile(%q).Append = %q, want the input", s, got)
				}
				if len(tp.Uses()) != 0 {
					t.Fatalf("static Compile(%q).Uses() = %q", s, tp.Uses())
				}
			}
			// With empty values, every field just disappears.
			empty := string(tp.Append(nil, nil))
			stripped := fieldRE.ReplaceAllString(s, "")
			if empty != stripped {
				t.Fatalf("Compile(%q).Append(nil) = %q, want %q", s, empty, stripped)
			}
		}
		checkEscaping(t, value)
	})
}

func BenchmarkAppendURL(b *testing.B) {
	tp, err := fields.CompileURL("https://example.com/devices/[SERIAL]/data?imei=[IMEI]&k=[CUSTOM1]")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = tp.Append(buf[:0], &vals)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendHeader(b *testing.B) {
	tp := fields.MustCompile("Bearer [CUSTOM1]")
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = tp.Append(buf[:0], &vals)
	}
	b.SetBytes(int64(len(buf)))
}
