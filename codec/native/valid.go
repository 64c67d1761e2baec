package native

import "github.com/fleetrelay/fleetrelay/codec/jsontext"

// ValidObject reports whether b is exactly one JSON object (RFC 8259), optionally surrounded by
// whitespace. It agrees with encoding/json.Valid on every input and never allocates; see
// [jsontext.ValidObject], which it is.
func ValidObject(b []byte) bool { return jsontext.ValidObject(b) }
