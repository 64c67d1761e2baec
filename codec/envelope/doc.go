// Package envelope owns the relay's default message envelope: the JSON object a route receives
// for each message when it has no other format, with the message id, the device's identity, the
// message's place in the device's stream, the delivery attempt and the record. codec/format
// renders it as the envelope format and builds the batch bodies (JSON arrays) routes send.
//
// Everything here is pure and allocation-free in steady state: callers pass a buffer and get it
// back extended (Append, AppendMsgID, AppendTimestamp). Strings are escaped by codec/jsontext, as
// encoding/json does with HTML escaping off, so receivers see exactly what a Go json.Encoder with
// SetEscapeHTML(false) would produce, while the device's record is copied byte for byte into the
// "data" field without being parsed again.
package envelope
