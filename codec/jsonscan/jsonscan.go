// Package jsonscan owns the relay's byte-level JSON scanning: skipping whitespace, strings and
// whole values, validating that a record is one JSON object, and unquoting strings. Every function
// accepts exactly what encoding/json accepts (fuzz tests check it): the same numbers and literals,
// any byte >= 0x20 inside strings (invalid UTF-8 included), the same nesting limit, and strings are
// unquoted as encoding/json.Unmarshal would, invalid UTF-8 and unpaired surrogates becoming U+FFFD.
//
// It is pure: no I/O, no goroutines, no allocations (nesting beyond 256 levels aside), no
// recursion. All functions are safe for concurrent use. Indexes are into the caller's slice; the
// scanners never look at a byte outside it.
package jsonscan

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

// plain marks the bytes a JSON string may hold unescaped, apart from '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// SkipString checks the string starting at b[i] == '"' and returns the index after its closing
// quote, and whether it holds escapes (without them, and if it is valid UTF-8, its body is its
// value). Like encoding/json it accepts any byte >= 0x20, so invalid UTF-8 is valid here (and
// replaced when unquoted). When ok is false, end is where the string went wrong.
func SkipString(b []byte, i int) (end int, esc, ok bool) {
	j := i + 1
	for {
		for j < len(b) && plain[b[j]] {
			j++
		}
		if j >= len(b) {
			return j, esc, false
		}
		switch b[j] {
		case '"':
			return j + 1, esc, true
		case '\\':
			esc = true
			if j+1 >= len(b) {
				return j, esc, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if getu4(b[j:]) < 0 {
					return j, esc, false
				}
				j += 6
			default:
				return j, esc, false
			}
		default: // a control character
			return j, esc, false
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
	var small [4]uint64
	stack := small[:] // bit n set: the container n levels in is an object
	var n uint        // containers open inside this value
	obj := false      // the innermost open container is an object
	key := false      // b[i] starts an object member, not a value
	for {
		if key {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			if i, _, ok = SkipString(b, i); !ok {
				return i, false
			}
			i = SkipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			i = SkipWS(b, i+1)
			key = false
		}
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth+int(n) >= MaxDepth {
				return i, false
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
		case '"':
			if i, _, ok = SkipString(b, i); !ok {
				return i, false
			}
		case 't':
			if i, ok = skipLit(b, i, "true"); !ok {
				return i, false
			}
		case 'f':
			if i, ok = skipLit(b, i, "false"); !ok {
				return i, false
			}
		case 'n':
			if i, ok = skipLit(b, i, "null"); !ok {
				return i, false
			}
		default:
			if i, ok = skipNumber(b, i); !ok {
				return i, false
			}
		}
		// A value is complete: close containers until one continues with ','.
		for {
			if n == 0 {
				return i, true
			}
			i = SkipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			c := b[i]
			if c == ',' {
				i, key = SkipWS(b, i+1), obj
				break
			}
			if (obj && c != '}') || (!obj && c != ']') {
				return i, false
			}
			i++
			n--
			if n > 0 {
				obj = stack[(n-1)>>6]&(1<<((n-1)&63)) != 0
			}
		}
	}
}

func skipLit(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipNumber checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i], i < len(b).
func skipNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return i, false
	}
	if b[i] == '0' {
		i++
	} else if b[i] >= '1' && b[i] <= '9' {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	} else {
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return i, false
		}
	}
	return i, true
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
