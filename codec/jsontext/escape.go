package jsontext

import "unicode/utf8"

// The escaping here is encoding/json's with HTML escaping off: '"', '\\' and control characters
// are escaped (\b \f \n \r \t in their short forms, the others as \u00XX), invalid UTF-8 becomes
// \ufffd, U+2028 and U+2029 are escaped (valid JSON, but not valid JavaScript source), and every
// other byte is copied.

const hexDigits = "0123456789abcdef"

// escLen is the escaped length of each byte value; 6 for every byte at or above
// utf8.RuneSelf, an upper bound (an invalid byte becomes the six bytes \ufffd, a valid
// sequence is copied, U+2028 takes six bytes for its three).
var escLen = func() (t [256]uint8) {
	for i := range t {
		b := byte(i)
		switch {
		case b >= utf8.RuneSelf:
			t[i] = 6
		case b == '"' || b == '\\' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
			t[i] = 2
		case b < 0x20:
			t[i] = 6
		default:
			t[i] = 1
		}
	}
	return t
}()

// AppendEscaped appends s JSON-escaped, without the surrounding quotes, to dst. s is a string,
// or raw bytes (JSON text, say) to be carried inside a JSON string.
func AppendEscaped[S ~string | ~[]byte](dst []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if escLen[b] == 1 {
				i++
				continue
			}
			dst = appendEscapedByte(append(dst, s[start:i]...), b)
			i++
			start = i
			continue
		}
		// At most UTFMax bytes are converted: no allocation for a byte slice.
		c, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if c == utf8.RuneError && size == 1 {
			dst = append(append(dst, s[start:i]...), `\ufffd`...)
			i++
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(append(dst, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// appendEscapedByte appends the escape of the ASCII byte b, one escLen marks as escaped.
func appendEscapedByte(dst []byte, b byte) []byte {
	switch b {
	case '\\', '"':
		return append(dst, '\\', b)
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
}

// AppendQuoted appends s as a JSON string, quotes included, to dst.
func AppendQuoted[S ~string | ~[]byte](dst []byte, s S) []byte {
	return append(AppendEscaped(append(dst, '"'), s), '"')
}

// EscapedLenBound returns an upper bound of len(AppendEscaped(nil, s)): exact for ASCII, six
// bytes for each byte of a multi-byte sequence. It is one table lookup per byte, meant for
// sizing buffers and batches.
func EscapedLenBound(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n += int(escLen[s[i]])
	}
	return n
}
