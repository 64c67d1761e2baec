// Package jsontext owns the relay's JSON text at the byte level, in both directions: scanning
// (skipping whitespace, strings and whole values, validating that a record is one JSON object,
// saying why a value is not valid JSON) and strings (unquoting them, and escaping them the way
// encoding/json does). Every other package that reads or writes JSON bytes by hand — the device
// codecs, the route formats, the envelope, the load generator's batch scanner — does it through
// this one.
//
// The scanners accept exactly what encoding/json accepts (fuzz tests check it): the same numbers
// and literals, any byte >= 0x20 inside strings (invalid UTF-8 included), the same nesting limit;
// strings are unquoted as encoding/json.Unmarshal would, invalid UTF-8 and unpaired surrogates
// becoming U+FFFD. Escaping is encoding/json's with HTML escaping off: a Go json.Encoder with
// SetEscapeHTML(false) writes the same bytes.
//
// It is pure: no I/O, no goroutines, no allocations (nesting beyond 256 levels aside), no
// recursion. All functions are safe for concurrent use. Indexes are into the caller's slice; the
// scanners never look at a byte outside it. Functions that produce text append to a caller's
// buffer (AppendX(dst, …) []byte).
package jsontext
