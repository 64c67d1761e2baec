package format

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// MaxTemplateDepth is how deeply a template's arrays and objects may nest.
const MaxTemplateDepth = 1000

// Template is a compiled JSON template with $$ placeholders (BeWhere's push spec); the formats template,
// bewhere and bewhere-full are Templates. Compile it once, then Append it per message.
//
// A Template is immutable and safe for concurrent use.
type Template struct {
	name   string
	src    string
	parts  []part
	lits   int            // bytes of literal text
	keys   map[string]int // the record's top-level keys the placeholders read → span index
	table  keyTable       // keys, for lookups while rendering
	record bool           // some placeholder reads the record
	slots  int            // number of placeholders
	depth  int            // containers open around the record object at the deepest typed slot
}

var _ Format = (*Template)(nil)

// part is literal text (b == bNone) or a placeholder.
type part struct {
	lit  string
	b    builtin
	text bool     // inside a longer string or a key: substituted as text
	key  int      // index of the top-level record key read (-1: none)
	key2 int      // bBattery: the fallback key batteryLevel
	path []string // bData: the path below key
}

// Compile compiles a template: one JSON value (normally an object) in which a string that is a
// whole placeholder, "$$name", is replaced by the value it stands for with its JSON type, and
// placeholders inside longer strings (or in keys) are replaced by their text. Whitespace
// between tokens is dropped.
//
// A $$ followed by a letter or '_' starts a placeholder: a built-in name (see Placeholders) or
// $$data.<path>. Errors are *TemplateError values that give the byte offset and the JSON path
// of the problem, wrapping ErrInvalidTemplate (not one JSON value, or deeper than
// MaxTemplateDepth) or ErrUnknownPlaceholder.
func Compile(template []byte) (*Template, error) {
	c := compiler{src: template, t: &Template{name: NameTemplate, src: string(template), keys: map[string]int{}}}
	if err := c.run(); err != nil {
		return nil, err
	}
	c.flush()
	names := make([]string, len(c.t.keys))
	for k, i := range c.t.keys {
		names[i] = k
	}
	c.t.table = newKeyTable(names)
	return c.t, nil
}

// MustCompile is like Compile but panics on error; for tests and constants.
func MustCompile(template string) *Template {
	t, err := Compile([]byte(template))
	if err != nil {
		panic(err)
	}
	return t
}

// Name returns "template", or the built-in format's name (bewhere, bewhere-full).
func (t *Template) Name() string { return t.name }

// Body returns BodyJSONArray.
func (t *Template) Body() Body { return BodyJSONArray }

// String returns the template's source.
func (t *Template) String() string { return t.src }

// frame is an open array or object while compiling.
type frame struct {
	obj   bool
	n     int    // arrays: the index of the current element
	key   string // objects: the current member's key
	keyed bool   // objects: key is known (false while the key itself is compiled)
}

type compiler struct {
	src   []byte
	t     *Template
	stack []frame
	lit   []byte // pending literal text
}

func (c *compiler) fail(at int, sentinel error, format string, args ...any) error {
	return &TemplateError{Offset: at, Path: c.path(), Detail: fmt.Sprintf(format, args...), Err: sentinel}
}

// path renders the JSON path of the value being compiled: keys joined by '.', array indexes
// in brackets, keys that are not plain names quoted in brackets.
func (c *compiler) path() string {
	var b strings.Builder
	for _, f := range c.stack {
		switch {
		case !f.obj:
			b.WriteString("[" + strconv.Itoa(f.n) + "]")
		case !f.keyed:
		case f.key != "" && plainKey(f.key):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
		default:
			b.WriteString("[" + strconv.Quote(f.key) + "]")
		}
	}
	return b.String()
}

func plainKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if !segByte(k[i]) {
			return false
		}
	}
	return true
}

func (c *compiler) flush() {
	if len(c.lit) > 0 {
		c.t.parts = append(c.t.parts, part{lit: string(c.lit), key: -1, key2: -1})
		c.t.lits += len(c.lit)
		c.lit = c.lit[:0]
	}
}

func (c *compiler) run() error {
	src := c.src
	i := jsontext.SkipWS(src, 0)
	if i == len(src) {
		return c.fail(i, ErrInvalidTemplate, "empty template")
	}
	for {
		// A value starts at i.
		if i >= len(src) {
			return c.fail(i, ErrInvalidTemplate, "unexpected end, expected a value")
		}
		switch ch := src[i]; ch {
		case '{', '[':
			if len(c.stack) >= MaxTemplateDepth {
				return c.fail(i, ErrInvalidTemplate, "nested deeper than %d", MaxTemplateDepth)
			}
			c.lit = append(c.lit, ch)
			i = jsontext.SkipWS(src, i+1)
			if i < len(src) && src[i] == ch+2 { // '{'+2 == '}', '['+2 == ']'
				c.lit = append(c.lit, ch+2)
				i++
				break
			}
			c.stack = append(c.stack, frame{obj: ch == '{'})
			if ch == '{' {
				var err error
				if i, err = c.key(i); err != nil {
					return err
				}
			}
			continue
		case '"':
			end, _, ok := jsontext.SkipString(src, i)
			if !ok {
				return c.fail(end, ErrInvalidTemplate, "invalid string")
			}
			if err := c.str(i, end, true); err != nil {
				return err
			}
			i = end
		default:
			end, ok := jsontext.SkipValue(src, i, len(c.stack))
			if !ok {
				return c.fail(end, ErrInvalidTemplate, "expected a value")
			}
			c.lit = append(c.lit, src[i:end]...)
			i = end
		}
		// A value ended at i: close containers until one continues.
		for {
			i = jsontext.SkipWS(src, i)
			if len(c.stack) == 0 {
				if i != len(src) {
					return c.fail(i, ErrInvalidTemplate, "unexpected data after the template")
				}
				return nil
			}
			top := &c.stack[len(c.stack)-1]
			closer := byte(']')
			if top.obj {
				closer = '}'
			}
			if i >= len(src) {
				return c.fail(i, ErrInvalidTemplate, "unexpected end, expected ',' or '%c'", closer)
			}
			if src[i] == ',' {
				c.lit = append(c.lit, ',')
				i = jsontext.SkipWS(src, i+1)
				if top.obj {
					var err error
					if i, err = c.key(i); err != nil {
						return err
					}
				} else {
					top.n++
				}
				break
			}
			if src[i] != closer {
				return c.fail(i, ErrInvalidTemplate, "expected ',' or '%c'", closer)
			}
			c.lit = append(c.lit, closer)
			c.stack = c.stack[:len(c.stack)-1]
			i++
		}
	}
}

// key compiles an object member's key and colon at i, returning where its value starts.
func (c *compiler) key(i int) (int, error) {
	src := c.src
	top := &c.stack[len(c.stack)-1]
	top.key, top.keyed = "", false
	if i >= len(src) || src[i] != '"' {
		return i, c.fail(i, ErrInvalidTemplate, "expected a string key")
	}
	end, esc, ok := jsontext.SkipString(src, i)
	if !ok {
		return i, c.fail(end, ErrInvalidTemplate, "invalid string")
	}
	body := src[i+1 : end-1]
	if esc {
		top.key = string(jsontext.AppendUnquoted(nil, body))
	} else {
		top.key = string(body)
	}
	if err := c.str(i, end, false); err != nil {
		return i, err
	}
	top.keyed = true
	i = jsontext.SkipWS(src, end)
	if i >= len(src) || src[i] != ':' {
		return i, c.fail(i, ErrInvalidTemplate, "expected ':'")
	}
	c.lit = append(c.lit, ':')
	return jsontext.SkipWS(src, i+1), nil
}

// str compiles the valid string src[start:end]; value is false for keys, which are always
// substituted as text.
func (c *compiler) str(start, end int, value bool) error {
	body := c.src[start+1 : end-1]
	if value && len(body) > 2 && body[0] == '$' && body[1] == '$' {
		if n, _ := scanPlaceholder(body[2:]); n == len(body)-2 {
			return c.placeholder(start+1, body[2:], false)
		}
	}
	c.lit = append(c.lit, '"')
	lit := 0
	for j := 0; j+2 < len(body); j++ {
		if body[j] != '$' || body[j+1] != '$' {
			continue
		}
		n, _ := scanPlaceholder(body[j+2:])
		if n == 0 {
			continue
		}
		c.lit = append(c.lit, body[lit:j]...)
		if err := c.placeholder(start+1+j, body[j+2:j+2+n], true); err != nil {
			return err
		}
		j += 2 + n - 1
		lit = j + 1
	}
	c.lit = append(c.lit, body[lit:]...)
	c.lit = append(c.lit, '"')
	return nil
}

// placeholder adds the placeholder named s (without $$) found at offset at.
func (c *compiler) placeholder(at int, s []byte, text bool) error {
	_, nameLen := scanPlaceholder(s)
	name := string(s[:nameLen])
	b, ok := builtins[name]
	if !ok {
		return c.fail(at, ErrUnknownPlaceholder,
			"$$%s is not a built-in placeholder (record fields are $$data.%s)", name, name)
	}
	c.flush()
	p := part{b: b, text: text, key: -1, key2: -1}
	t := c.t
	switch b {
	case bData:
		if nameLen < len(s) {
			path := strings.Split(string(s[nameLen+1:]), ".")
			p.key = t.keyIndex(path[0])
			if len(path) > 1 {
				p.path = path[1:]
			}
		}
	case bField:
		p.key = t.keyIndex(name)
	case bTimestamp, bTimestampSec:
		p.key = t.keyIndex("timestamp")
	case bGPSTime, bGPSTimeSec:
		p.key = t.keyIndex("gpsTimestamp")
	case bBattery:
		p.key = t.keyIndex("battery_capacity_counter")
		p.key2 = t.keyIndex("batteryLevel")
	case bSim:
		p.key = t.keyIndex("sim")
	}
	if b.readsRecord() {
		t.record = true
		if !text {
			// The batch array, then the template's containers around this slot.
			t.depth = max(t.depth, 1+len(c.stack))
		}
	}
	t.parts = append(t.parts, p)
	t.slots++
	return nil
}

func (t *Template) keyIndex(k string) int {
	if i, ok := t.keys[k]; ok {
		return i
	}
	i := len(t.keys)
	t.keys[k] = i
	return i
}
