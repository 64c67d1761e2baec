// Package ndjson decodes newline-delimited JSON as simple gateways send it over TCP: one JSON
// object per line, each naming its device in a top-level field (by default "serial").
//
// It is pure: no I/O, no goroutines, no allocations. [Next] finds the end of a line without
// looking at more than maxLine+2 bytes, so a caller never buffers, let alone allocates, a line
// before its length is known to be acceptable. [Identity] validates a line as one JSON object and
// extracts the identity field in a single pass, without unmarshalling: nested values are skipped
// and strings unescaped by package jsontext, exactly as encoding/json would. Results alias the
// input; callers that keep them must copy.
package ndjson

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

const (
	// DefaultMaxLine is the default limit on a line's length (its line ending not counted).
	DefaultMaxLine = 64 << 10
	// DefaultIdentityField is the field that names the device unless configured otherwise.
	DefaultIdentityField = "serial"
	// MaxIdentity is the longest identity accepted, in bytes (as in the native protocol).
	MaxIdentity = 255
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
	i := jsontext.SkipWS(line, 0)
	if i == len(line) {
		return nil, ErrBlank
	}
	if line[i] != '{' {
		if j, ok := jsontext.SkipValue(line, i, 0); ok && jsontext.SkipWS(line, j) == len(line) {
			return nil, ErrNotObject
		}
		return nil, ErrMalformed
	}
	found, isString, esc := false, false, false
	var vs, ve int // the identity value: line[vs:ve], quotes included for a string
	i = jsontext.SkipWS(line, i+1)
	if i < len(line) && line[i] == '}' {
		i++
	} else {
		for {
			if i >= len(line) || line[i] != '"' {
				return nil, ErrMalformed
			}
			j, kesc, ok := jsontext.SkipString(line, i)
			if !ok {
				return nil, ErrMalformed
			}
			match := keyIs(line[i+1:j-1], kesc, field)
			i = jsontext.SkipWS(line, j)
			if i >= len(line) || line[i] != ':' {
				return nil, ErrMalformed
			}
			i = jsontext.SkipWS(line, i+1)
			if i >= len(line) {
				return nil, ErrMalformed
			}
			start, str, sesc := i, line[i] == '"', false
			if str {
				j, sesc, ok = jsontext.SkipString(line, i)
			} else {
				j, ok = jsontext.SkipValue(line, i, 1)
			}
			if !ok {
				return nil, ErrMalformed
			}
			if match {
				found, isString, esc, vs, ve = true, str, sesc, start, j
			}
			i = jsontext.SkipWS(line, j)
			if i >= len(line) {
				return nil, ErrMalformed
			}
			if line[i] == ',' {
				i = jsontext.SkipWS(line, i+1)
				continue
			}
			if line[i] != '}' {
				return nil, ErrMalformed
			}
			i++
			break
		}
	}
	if jsontext.SkipWS(line, i) != len(line) {
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
			id = jsontext.AppendUnquoted(dst, raw)
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
	return string(jsontext.AppendUnquoted(buf[:0], raw)) == field
}
