package native

import "github.com/fleetrelay/fleetrelay/codec/jsonscan"

// ValidObject reports whether b is exactly one JSON object (RFC 8259), optionally surrounded by
// whitespace. It agrees with encoding/json.Valid on every input and never allocates; see
// [jsonscan.ValidObject], which it is.
func ValidObject(b []byte) bool { return jsonscan.ValidObject(b) }
