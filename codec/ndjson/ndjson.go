// Package ndjson decodes newline-delimited JSON as simple gateways send it over TCP: one JSON
// object per line, each naming its device in a top-level field (by default "serial").
//
// It is pure: no I/O, no goroutines, no allocations. [Next] finds the end of a line without
// looking at more than maxLine+2 bytes, so a caller never buffers, let alone allocates, a line
// before its length is known to be acceptable. [Identity] validates a line as one JSON object and
// extracts the identity field in a single pass, without unmarshalling: nested values are skipped
// (iteratively, to encoding/json's nesting limit), keys and strings are matched and unescaped
// exactly as encoding/json would. Results alias the input; callers that keep them must copy.
package ndjson

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	// DefaultMaxLine is the default limit on a line's length (its line ending not counted).
	DefaultMaxLine = 64 << 10
	// DefaultIdentityField is the field that names the device unless configured otherwise.
	DefaultIdentityField = "serial"
	// MaxIdentity is the longest identity accepted, in bytes (as in the native protocol).
	MaxIdentity = 255
	// maxDepth is encoding/json's nesting limit: deeper documents are not valid JSON to it.
	maxDepth = 10000
)

// Next returns the first line of buf without its line ending ("\n", or "\r\n") and n, the bytes
// the line occupies in buf, ending included. line aliases buf.
//
// When buf holds no complete line, Next returns ErrShort, or ErrTooLong once the line is known to
// be longer than maxLine bytes — known from its first maxLine+2 bytes, so nothing beyond that is
// ever examined or needs to be held. A complete line longer than maxLine is ErrTooLong too.
//
// scanned is a hint: how many bytes at the start of buf an earlier call already found free of
// '\n' (the len(buf) it was given when it returned ErrShort), so a line arriving in many pieces is
// not searched again from its start each time. 0 is always correct.
func Next(buf []byte, maxLine, scanned int) (line []byte, n int, err error) {
	limit := min(len(buf), maxLine+2)
	scanned = min(max(scanned, 0), limit)
	i := bytes.IndexByte(buf[scanned:limit], '\n')
	if i < 0 {
		// A line of maxLine bytes may still be followed by "\r\n": only then can byte maxLine
		// be part of an acceptable line.
		if len(buf) > maxLine+1 || (len(buf) == maxLine+1 && buf[maxLine] != '\r') {
			return nil, 0, ErrTooLong
		}
		return nil, 0, ErrShort
	}
	i += scanned
	end := i
	if end > 0 && buf[end-1] == '\r' {
		end--
	}
	if end > maxLine {
		return nil, 0, ErrTooLong
	}
	return buf[:end:end], i + 1, nil
}

// Identity checks that line is exactly one JSON object (whitespace around it allowed) and returns
// the value of its top-level field named field: the unescaped text of a string, or the text of a
// number as written. If the field occurs more than once the last occurrence counts, as with
// encoding/json. The identity must be 1 to MaxIdentity bytes; when field is "imei" it must be 15
// digits, as the native protocol requires of an IMEI.
//
// The result aliases line, except that a string with escapes (or invalid UTF-8, which becomes
// U+FFFD) is unescaped by appending to dst. Errors: ErrBlank, ErrMalformed, ErrNotObject,
// ErrNoIdentity, ErrIdentity.
func Identity(line []byte, field string, dst []byte) (id []byte, err error) {
	i := skipWS(line, 0)
	if i == len(line) {
		return nil, ErrBlank
	}
	if line[i] != '{' {
		if j, ok := skipValue(line, i, 0); ok && skipWS(line, j) == len(line) {
			return nil, ErrNotObject
		}
		return nil, ErrMalformed
	}
	found, isString, esc := false, false, false
	var vs, ve int // the identity value: line[vs:ve], quotes included for a string
	i = skipWS(line, i+1)
	if i < len(line) && line[i] == '}' {
		i++
	} else {
		for {
			if i >= len(line) || line[i] != '"' {
				return nil, ErrMalformed
			}
			j, kesc, ok := skipString(line, i)
			if !ok {
				return nil, ErrMalformed
			}
			match := keyIs(line[i+1:j-1], kesc, field)
			i = skipWS(line, j)
			if i >= len(line) || line[i] != ':' {
				return nil, ErrMalformed
			}
			i = skipWS(line, i+1)
			if i >= len(line) {
				return nil, ErrMalformed
			}
			start, str, sesc := i, line[i] == '"', false
			if str {
				j, sesc, ok = skipString(line, i)
			} else {
				j, ok = skipValue(line, i, 1)
			}
			if !ok {
				return nil, ErrMalformed
			}
			if match {
				found, isString, esc, vs, ve = true, str, sesc, start, j
			}
			i = skipWS(line, j)
			if i >= len(line) {
				return nil, ErrMalformed
			}
			if line[i] == ',' {
				i = skipWS(line, i+1)
				continue
			}
			if line[i] != '}' {
				return nil, ErrMalformed
			}
			i++
			break
		}
	}
	if skipWS(line, i) != len(line) {
		return nil, ErrMalformed
	}
	if !found {
		return nil, ErrNoIdentity
	}
	switch c := line[vs]; {
	case isString:
		raw := line[vs+1 : ve-1]
		if !esc && utf8.Valid(raw) {
			id = raw[:len(raw):len(raw)]
		} else {
			id = unquote(dst, raw)
		}
	case c == '-' || (c >= '0' && c <= '9'):
		id = line[vs:ve:ve]
	default:
		return nil, ErrIdentity
	}
	if len(id) == 0 || len(id) > MaxIdentity || (field == "imei" && !ValidIMEI(id)) {
		return nil, ErrIdentity
	}
	return id, nil
}

// ValidIMEI reports whether id is 15 ASCII digits.
func ValidIMEI(id []byte) bool {
	if len(id) != 15 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// keyIs reports whether the raw (still quoted-string-encoded) key equals field once unescaped.
func keyIs(raw []byte, esc bool, field string) bool {
	// Unquoting only changes a key without escapes if it holds invalid UTF-8, and then only into
	// something holding U+FFFD (EF BF BD): a field without that byte needs no unquoting.
	if !esc && (strings.IndexByte(field, 0xEF) < 0 || utf8.Valid(raw)) {
		return string(raw) == field && utf8.ValidString(field)
	}
	var buf [128]byte
	return string(unquote(buf[:0], raw)) == field
}

func skipWS(b []byte, i int) int {
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

// skipString checks the string starting at b[i] == '"' and returns the index after its closing
// quote and whether it holds escapes. Like encoding/json it accepts any byte >= 0x20, so invalid
// UTF-8 is valid here (and replaced when unescaped).
func skipString(b []byte, i int) (end int, esc, ok bool) {
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

// skipValue checks the JSON value starting at b[i] (not whitespace) and returns the index after
// it. depth is the number of containers already open around it; like encoding/json, more than
// maxDepth open at once is invalid. Containers are tracked in a bit stack, without recursion; it
// lives on the goroutine's stack up to 256 levels and grows on the heap only beyond.
func skipValue(b []byte, i, depth int) (int, bool) {
	var small [4]uint64
	stack := small[:] // bit set: the container is an object
	n := 0            // containers open inside this value
	var ok bool
next:
	for {
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth+n >= maxDepth {
				return i, false
			}
			obj := c == '{'
			if n/64 == len(stack) {
				stack = append(stack, 0)
			}
			if obj {
				stack[n/64] |= 1 << (n % 64)
			} else {
				stack[n/64] &^= 1 << (n % 64)
			}
			n++
			i = skipWS(b, i+1)
			if i < len(b) && ((obj && b[i] == '}') || (!obj && b[i] == ']')) {
				i++
				n--
				break // an empty container is a complete value
			}
			if obj {
				if i, ok = skipKey(b, i); !ok {
					return i, false
				}
			}
			continue next
		case '"':
			if i, _, ok = skipString(b, i); !ok {
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
		for n > 0 {
			i = skipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			obj := stack[(n-1)/64]&(1<<((n-1)%64)) != 0
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
				if obj {
					if i, ok = skipKey(b, i); !ok {
						return i, false
					}
				}
				continue next
			case '}':
				if !obj {
					return i, false
				}
			case ']':
				if obj {
					return i, false
				}
			default:
				return i, false
			}
			i++
			n--
		}
		return i, true
	}
}

// skipKey checks `"key" :` at b[i] and returns the index of the member's value (whitespace skipped).
func skipKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, _, ok := skipString(b, i)
	if !ok {
		return i, false
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipWS(b, i+1), true
}

func skipLit(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipNumber checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func skipNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

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

// unquote appends the unescaped contents of a checked JSON string (quotes removed) to dst, turning
// invalid UTF-8 and unpaired surrogates into U+FFFD exactly as encoding/json does.
func unquote(dst, s []byte) []byte {
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
