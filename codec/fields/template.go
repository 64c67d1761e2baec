package fields

import (
	"fmt"
	"strings"
)

// Values holds one device's values for the dynamic fields.
type Values struct {
	Serial, IMEI, ICCID       string
	Custom1, Custom2, Custom3 string
}

// field identifies a dynamic field.
type field uint8

const (
	fieldNone field = iota
	fieldSerial
	fieldIMEI
	fieldICCID
	fieldCustom1
	fieldCustom2
	fieldCustom3
)

var fieldNames = [...]string{
	fieldSerial:  "SERIAL",
	fieldIMEI:    "IMEI",
	fieldICCID:   "ICCID",
	fieldCustom1: "CUSTOM1",
	fieldCustom2: "CUSTOM2",
	fieldCustom3: "CUSTOM3",
}

// Names returns the names of all dynamic fields, without brackets.
func Names() []string {
	return append([]string(nil), fieldNames[fieldSerial:]...)
}

func lookup(name string) field {
	for f := fieldSerial; int(f) < len(fieldNames); f++ {
		if fieldNames[f] == name {
			return f
		}
	}
	return fieldNone
}

func (v *Values) get(f field) string {
	switch f {
	case fieldSerial:
		return v.Serial
	case fieldIMEI:
		return v.IMEI
	case fieldICCID:
		return v.ICCID
	case fieldCustom1:
		return v.Custom1
	case fieldCustom2:
		return v.Custom2
	case fieldCustom3:
		return v.Custom3
	}
	return ""
}

// escaping says how a substituted value is written.
type escaping uint8

const (
	escapeHeader escaping = iota // control characters dropped
	escapePath                   // url.PathEscape
	escapeQuery                  // url.QueryEscape
)

// part is either literal text (f == fieldNone) or a field substitution.
type part struct {
	text string
	f    field
	esc  escaping
}

// Template is a compiled text with dynamic fields.
//
// A Template is immutable after Compile and safe for concurrent use.
type Template struct {
	src   string
	parts []part
	uses  []string
}

// Compile compiles a header-value template. Substituted values are written
// as they are, except that ASCII control characters (CR and LF among them,
// which would split a header) are dropped.
//
// A bracketed name made of upper-case letters and digits, starting with a
// letter, must be a known field; otherwise the error wraps ErrUnknownField and
// names it. Text without fields is a valid, static template.
func Compile(s string) (*Template, error) {
	return compile(s, false)
}

// CompileURL compiles a URL template. Values substituted before the first '?'
// of the template's own text are escaped like url.PathEscape (so "SN/1"
// becomes "SN%2F1"); values after it (query and fragment) like
// url.QueryEscape.
func CompileURL(s string) (*Template, error) {
	return compile(s, true)
}

// MustCompile is like Compile but panics on error; for tests and constants.
func MustCompile(s string) *Template {
	t, err := Compile(s)
	if err != nil {
		panic(err)
	}
	return t
}

func compile(s string, isURL bool) (*Template, error) {
	t := &Template{src: s}
	esc := escapeHeader
	if isURL {
		esc = escapePath
	}
	lit := 0 // start of the pending literal text
	for i := 0; i < len(s); {
		if s[i] != '[' {
			if isURL && (s[i] == '?' || s[i] == '#') {
				esc = escapeQuery
			}
			i++
			continue
		}
		n := nameLen(s[i+1:])
		if n == 0 || i+1+n >= len(s) || s[i+1+n] != ']' {
			i++
			continue
		}
		name := s[i+1 : i+1+n]
		f := lookup(name)
		if f == fieldNone {
			return nil, fmt.Errorf("%w [%s] at offset %d (known: [%s])", ErrUnknownField, name, i, strings.Join(fieldNames[fieldSerial:], "] ["))
		}
		if lit < i {
			t.parts = append(t.parts, part{text: s[lit:i]})
		}
		t.parts = append(t.parts, part{f: f, esc: esc})
		if !contains(t.uses, name) {
			t.uses = append(t.uses, fieldNames[f])
		}
		i += n + 2
		lit = i
	}
	if lit < len(s) {
		t.parts = append(t.parts, part{text: s[lit:]})
	}
	return t, nil
}

// nameLen returns the length of the field-name candidate at the start of s:
// an upper-case letter followed by upper-case letters and digits.
func nameLen(s string) int {
	if len(s) == 0 || s[0] < 'A' || s[0] > 'Z' {
		return 0
	}
	n := 1
	for n < len(s) && (s[n] >= 'A' && s[n] <= 'Z' || s[n] >= '0' && s[n] <= '9') {
		n++
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// String returns the template's source text.
func (t *Template) String() string { return t.src }

// Static reports whether the template has no dynamic fields, so that callers
// can render it once.
func (t *Template) Static() bool { return len(t.uses) == 0 }

// Uses returns the names (without brackets) of the fields the template uses,
// each once, in order of first use.
func (t *Template) Uses() []string { return append([]string(nil), t.uses...) }

// Append appends the template rendered with v to dst. A nil v renders every
// field as empty.
func (t *Template) Append(dst []byte, v *Values) []byte {
	if v == nil {
		v = &Values{}
	}
	for i := range t.parts {
		p := &t.parts[i]
		if p.f == fieldNone {
			dst = append(dst, p.text...)
			continue
		}
		val := v.get(p.f)
		switch p.esc {
		case escapePath:
			dst = appendEscaped(dst, val, &pathSafe, false)
		case escapeQuery:
			dst = appendEscaped(dst, val, &querySafe, true)
		default:
			dst = appendHeaderValue(dst, val)
		}
	}
	return dst
}

// appendHeaderValue appends s without ASCII control characters.
func appendHeaderValue(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			dst = append(dst, s[start:i]...)
			start = i + 1
		}
	}
	return append(dst, s[start:]...)
}
