package fields

const upperHex = "0123456789ABCDEF"

// pathSafe and querySafe mark the bytes that url.PathEscape and
// url.QueryEscape leave as they are.
var pathSafe, querySafe = func() (p, q [256]bool) {
	for c := 0; c < 256; c++ {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			p[c], q[c] = true, true
		}
	}
	for _, c := range "-_.~" {
		p[c], q[c] = true, true
	}
	// Reserved characters a path segment keeps (RFC 3986 §3.3).
	for _, c := range "$&+:=@" {
		p[c] = true
	}
	return p, q
}()

// appendEscaped appends s percent-encoded with upper-case hex, keeping the
// bytes marked safe. With plusSpace a space becomes '+', as in
// url.QueryEscape.
func appendEscaped(dst []byte, s string, safe *[256]bool, plusSpace bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safe[c] {
			continue
		}
		dst = append(dst, s[start:i]...)
		if c == ' ' && plusSpace {
			dst = append(dst, '+')
		} else {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		}
		start = i + 1
	}
	return append(dst, s[start:]...)
}
