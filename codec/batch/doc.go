// Package batch owns the relay's default message envelope; codec/format renders
// it as the envelope format and builds the JSON-array batch bodies routes send.
//
// Everything here is pure and allocation-free in steady state: callers pass a
// buffer and get it back extended (AppendEnvelope, AppendMsgID). The encoding follows encoding/json for strings
// (with HTML escaping off), so receivers see exactly what a Go json.Encoder
// with SetEscapeHTML(false) would produce, while the device's record is copied
// byte for byte into the "data" field without being parsed again.
package batch
