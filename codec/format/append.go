package format

import (
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// The JSON pieces formats share. Strings are escaped by codec/jsontext, as encoding/json does
// with HTML escaping off; the envelope (codec/envelope) escapes the same way.

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte { return jsontext.AppendQuoted(dst, s) }

// appendStringOrNull appends s as a JSON string, or null when it is empty.
func appendStringOrNull(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, s)
}

// appendStrings appends list as a JSON array of strings ([] when empty).
func appendStrings(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

// appendRecord appends the record verbatim, or null when it is empty.
func appendRecord(dst, data []byte) []byte {
	if len(data) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, data...)
}

// appendMsgID appends the message id "<device>-<seq>-<index>" JSON-escaped (without quotes);
// it is the envelope's msgId.
func appendMsgID(dst []byte, m *Message) []byte {
	dst = jsontext.AppendEscaped(dst, m.device())
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, '-')
	return strconv.AppendInt(dst, int64(m.Index), 10)
}
