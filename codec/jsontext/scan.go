package jsontext

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is encoding/json's nesting limit: a document with more containers open at once is not
// valid JSON to it, and is not to [SkipValue] either.
const MaxDepth = 10000

// ValidObject reports whether b is exactly one JSON object (RFC 8259), optionally surrounded by
// whitespace. It agrees with encoding/json.Valid (and an object at the top) on every input.
func ValidObject(b []byte) bool {
	i := SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	end, ok := SkipValue(b, i, 0)
	return ok && SkipWS(b, end) == len(b)
}

// Problem says why a scan stopped short of a valid value: None if it did not. Its String is a
// short phrase for error messages ("invalid number").
type Problem uint8

// The problems a scan reports, at the index where it stopped.
const (
	None               Problem = iota // the value is valid
	UnexpectedEnd                     // the input ended inside the value
	TooDeep                           // more than MaxDepth containers open at once
	NoValue                           // a value was expected: the byte cannot start one
	BadLiteral                        // t, f or n that is not true, false or null
	BadNumber                         // a number that breaks the grammar (01, 1., -, 1e)
	UnterminatedString                // the input ended inside a string
	BadEscape                         // a backslash followed by a byte no escape starts with
	BadUnicodeEscape                  // \u not followed by four hex digits
	ControlChar                       // a byte below 0x20 inside a string
	NoKey                             // an object member must start with a string
	NoColon                           // a member name must be followed by ':'
	NoObjectEnd                       // after an object member: neither ',' nor '}'
	NoArrayEnd                        // after an array element: neither ',' nor ']'
)

var problemText = [...]string{
	None:               "valid",
	UnexpectedEnd:      "unexpected end of input",
	TooDeep:            "nested too deeply",
	NoValue:            "expected a value",
	BadLiteral:         "invalid literal",
	BadNumber:          "invalid number",
	UnterminatedString: "unterminated string",
	BadEscape:          "invalid escape",
	BadUnicodeEscape:   "invalid \\u escape",
	ControlChar:        "control character in a string",
	NoKey:              "expected a member name",
	NoColon:            "expected ':' after a member name",
	NoObjectEnd:        "expected ',' or '}' after an object member",
	NoArrayEnd:         "expected ',' or ']' after an array element",
}

func (p Problem) String() string {
	if int(p) < len(problemText) {
		return problemText[p]
	}
	return "unknown problem"
}

// SkipWS returns the index of the first byte at or after i that is not JSON whitespace, or
// len(b).
func SkipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// strClass sorts the bytes of a JSON string: 0 a byte held as it is (printable ASCII but '"'
// and '\\'), 1 a byte of a multi-byte UTF-8 sequence or invalid UTF-8 (also held as it is), 2 a
// byte that ends the string, starts an escape or is not allowed ('"', '\\', control characters).
var strClass = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c < 0x20 || c == '"' || c == '\\':
			t[c] = 2
		case c >= 0x80:
			t[c] = 1
		}
	}
	return t
}()

// SkipString checks the string starting at b[i] == '"' and returns the index after its closing
// quote, and whether it holds escapes (without them, and if it is valid UTF-8, its body is its
// value). Like encoding/json it accepts any byte >= 0x20, so invalid UTF-8 is valid here (and
// replaced when unquoted). When ok is false, end is where the string went wrong.
func SkipString(b []byte, i int) (end int, esc, ok bool) {
	end, esc, _, p := scanString(b, i)
	return end, esc, p == None
}

// ScanString checks the string starting at b[i] == '"' like SkipString, saying what was wrong:
// p is None for a valid string. plain reports that its body holds no escapes and only ASCII,
// so that the body is its value byte for byte (otherwise [AppendUnquoted] gives the value).
func ScanString(b []byte, i int) (end int, plain bool, p Problem) {
	end, esc, nonASCII, p := scanString(b, i)
	return end, !esc && !nonASCII, p
}

func scanString(b []byte, i int) (end int, esc, nonASCII bool, p Problem) {
	j := i + 1
	for {
		for j < len(b) && strClass[b[j]] == 0 {
			j++
		}
		if j >= len(b) {
			return j, esc, nonASCII, UnterminatedString
		}
		switch c := b[j]; {
		case strClass[c] == 0:
			j++
		case c >= 0x80:
			nonASCII = true
			j++
		case c == '"':
			return j + 1, esc, nonASCII, None
		case c == '\\':
			esc = true
			if j+1 >= len(b) {
				return j, esc, nonASCII, UnterminatedString
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if getu4(b[j:]) < 0 {
					return j, esc, nonASCII, BadUnicodeEscape
				}
				j += 6
			default:
				return j, esc, nonASCII, BadEscape
			}
		default: // a control character
			return j, esc, nonASCII, ControlChar
		}
	}
}

// SkipValue checks the JSON value starting at b[i] (not whitespace) and returns the index after
// it. depth is the number of containers already open around it (0 for a whole document); like
// encoding/json, more than MaxDepth open at once is invalid. Containers are tracked in a bit
// stack, without recursion, so no input can exhaust the goroutine's stack; the bit stack lives
// in the frame up to 256 levels and grows on the heap only beyond. When ok is false, end is where
// the value went wrong.
func SkipValue(b []byte, i, depth int) (end int, ok bool) {
	end, p := ScanValue(b, i, depth)
	return end, p == None
}

// ScanValue is SkipValue saying what was wrong: p is None for a valid value.
func ScanValue(b []byte, i, depth int) (end int, p Problem) {
	if i < len(b) && b[i] != '{' && b[i] != '[' {
		return scanScalar(b, i) // without the container machinery
	}
	return scanContainer(b, i, depth)
}

// scanScalar checks the string, number or literal at b[i], i < len(b).
func scanScalar(b []byte, i int) (int, Problem) {
	switch c := b[i]; c {
	case '"':
		end, _, _, p := scanString(b, i)
		return end, p
	case 't':
		return skipLit(b, i, "true")
	case 'f':
		return skipLit(b, i, "false")
	case 'n':
		return skipLit(b, i, "null")
	default:
		if c != '-' && (c < '0' || c > '9') {
			return i, NoValue
		}
		return skipNumber(b, i)
	}
}

// scanContainer is ScanValue for a value that may be an object or an array.
func scanContainer(b []byte, i, depth int) (end int, p Problem) {
	var small [4]uint64
	stack := small[:] // bit n set: the container n levels in is an object
	var n uint        // containers open inside this value
	obj := false      // the innermost open container is an object
	key := false      // b[i] starts an object member, not a value
	for {
		if key {
			if i >= len(b) {
				return i, UnexpectedEnd
			}
			if b[i] != '"' {
				return i, NoKey
			}
			if i, _, _, p = scanString(b, i); p != None {
				return i, p
			}
			i = SkipWS(b, i)
			if i >= len(b) {
				return i, UnexpectedEnd
			}
			if b[i] != ':' {
				return i, NoColon
			}
			i = SkipWS(b, i+1)
			key = false
		}
		if i >= len(b) {
			return i, UnexpectedEnd
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth+int(n) >= MaxDepth {
				return i, TooDeep
			}
			if n>>6 == uint(len(stack)) {
				stack = append(stack, 0)
			}
			i = SkipWS(b, i+1)
			if c == '[' {
				if i < len(b) && b[i] == ']' {
					i++
					break // an empty array is a complete value
				}
				stack[n>>6] &^= 1 << (n & 63)
				n++
				obj = false
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break // an empty object is a complete value
			}
			stack[n>>6] |= 1 << (n & 63)
			n++
			obj, key = true, true
			continue
		// The scalars again, as in scanScalar: inline here, this loop is what validates every
		// record, and a call per value costs it ≈10% (BenchmarkValidObject).
		case '"':
			if i, _, _, p = scanString(b, i); p != None {
				return i, p
			}
		case 't':
			if i, p = skipLit(b, i, "true"); p != None {
				return i, p
			}
		case 'f':
			if i, p = skipLit(b, i, "false"); p != None {
				return i, p
			}
		case 'n':
			if i, p = skipLit(b, i, "null"); p != None {
				return i, p
			}
		default:
			if c != '-' && (c < '0' || c > '9') {
				return i, NoValue
			}
			if i, p = skipNumber(b, i); p != None {
				return i, p
			}
		}
		// A value is complete: close containers until one continues with ','.
		for {
			if n == 0 {
				return i, None
			}
			i = SkipWS(b, i)
			if i >= len(b) {
				return i, UnexpectedEnd
			}
			c := b[i]
			if c == ',' {
				i, key = SkipWS(b, i+1), obj
				break
			}
			if obj && c != '}' {
				return i, NoObjectEnd
			}
			if !obj && c != ']' {
				return i, NoArrayEnd
			}
			i++
			n--
			if n > 0 {
				obj = stack[(n-1)>>6]&(1<<((n-1)&63)) != 0
			}
		}
	}
}

func skipLit(b []byte, i int, lit string) (int, Problem) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, BadLiteral
	}
	return i + len(lit), None
}

// SkipNumber checks the number -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i] and returns
// the index after it. When ok is false, end is where the number went wrong.
func SkipNumber(b []byte, i int) (end int, ok bool) {
	if i >= len(b) {
		return i, false
	}
	end, p := skipNumber(b, i)
	return end, p == None
}

// skipNumber checks the number -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i],
// i < len(b).
func skipNumber(b []byte, i int) (int, Problem) {
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return i, BadNumber
	}
	if b[i] == '0' {
		i++
	} else if b[i] >= '1' && b[i] <= '9' {
		i = skipDigits(b, i+1)
	} else {
		return i, BadNumber
	}
	if i < len(b) && b[i] == '.' {
		if j := skipDigits(b, i+1); j > i+1 {
			i = j
		} else {
			return j, BadNumber
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if j := skipDigits(b, i); j > i {
			i = j
		} else {
			return j, BadNumber
		}
	}
	return i, None
}

// skipDigits returns the index of the first byte at or after i that is not a decimal digit.
func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// getu4 decodes the \uXXXX escape at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// AppendUnquoted appends the value of a JSON string to dst, given its body: the bytes between
// the quotes of a string [SkipString] accepted (it panics on a body SkipString would refuse).
// Invalid UTF-8 and unpaired surrogates become U+FFFD exactly as with encoding/json.Unmarshal.
func AppendUnquoted(dst, s []byte) []byte {
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch e := s[r+1]; e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(s[r:])); dec != unicode.ReplacementChar {
						dst = utf8.AppendRune(dst, dec)
						r += 6
						continue
					}
					rr = unicode.ReplacementChar
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
			r += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			dst = utf8.AppendRune(dst, rr)
			r += size
		}
	}
	return dst
}
