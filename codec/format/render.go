package format

import (
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// span locates a top-level record value: data[at:end]; end == 0 when the record has no such
// key.
type span struct{ at, end int32 }

// maxRecord is the largest record whose fields a template reads (spans are 32-bit).
const maxRecord = 1<<31 - 1

// record is a message's record as a template reads it. The spans of its top-level values are
// kept apart (see Append), so that escape analysis can keep them on the stack.
type record struct {
	data []byte // Message.Data
	obj  []byte // the object without surrounding whitespace; nil if Data is not a valid object
}

// field returns the value of the top-level key with index k, or nil.
func (r *record) field(spans []span, k int) []byte {
	if r.obj == nil || k < 0 || spans[k].end == 0 {
		return nil
	}
	return r.data[spans[k].at:spans[k].end]
}

// Append appends the template rendered for m to dst.
func (t *Template) Append(dst []byte, m *Message) []byte {
	var small [64]span
	var spans []span
	if len(t.keys) <= len(small) {
		spans = small[:len(t.keys)]
	} else {
		spans = make([]span, len(t.keys))
	}
	r := record{data: m.Data}
	if t.record {
		r.obj = t.index(m.Data, spans)
	}
	for i := range t.parts {
		p := &t.parts[i]
		if p.b == bNone {
			dst = append(dst, p.lit...)
			continue
		}
		dst = appendSlot(dst, p, m, &r, spans)
	}
	return dst
}

// SizeHint estimates the rendered size: the template's text, the record, and a little per
// placeholder.
func (t *Template) SizeHint(m *Message) int {
	return t.lits + len(m.Data) + 12*t.slots
}

// index scans the record, noting where the values of the keys the template reads are, and
// returns the record object (without surrounding whitespace), or nil if data is not exactly
// one valid JSON object (or nests too deep to embed where the template puts it).
func (t *Template) index(data []byte, spans []span) []byte {
	if len(data) > maxRecord {
		return nil
	}
	var s objectScan
	var mb member
	s.init(data, t.depth)
	for s.next(&mb) {
		if len(t.keys) == 0 {
			continue
		}
		key := mb.key
		if mb.esc {
			var buf [64]byte
			key = jsontext.AppendUnquoted(buf[:0], mb.key)
		}
		if k := t.table.find(key); k >= 0 { // a repeated key: the last one counts, as with encoding/json
			spans[k] = span{int32(mb.at), int32(mb.at + len(mb.val))}
		}
	}
	if !s.ok() {
		return nil
	}
	return s.object()
}

// Typed and text renderings of the kinds of values placeholders stand for.

// appendStr renders a metadata string: typed, a JSON string or null if empty; as text, its
// escaped characters.
func appendStr(dst []byte, s string, text bool) []byte {
	if text {
		return jsontext.AppendEscaped(dst, s)
	}
	return appendStringOrNull(dst, s)
}

// appendRaw renders a record value (nil: missing): typed, as written or null; as text, see
// appendRawText.
func appendRaw(dst, v []byte, text bool) []byte {
	switch {
	case v == nil && text:
		return dst
	case v == nil:
		return append(dst, "null"...)
	case text:
		return appendRawText(dst, v)
	}
	return append(dst, v...)
}

// appendNull renders a missing value: null, or nothing as text.
func appendNull(dst []byte, text bool) []byte {
	if text {
		return dst
	}
	return append(dst, "null"...)
}

// quote opens or closes a typed string value.
func quote(dst []byte, text bool) []byte {
	if text {
		return dst
	}
	return append(dst, '"')
}

// appendList renders tags or groups: typed, an array of strings; as text, comma-separated.
func appendList(dst []byte, list []string, text bool) []byte {
	if !text {
		return appendStrings(dst, list)
	}
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsontext.AppendEscaped(dst, s)
	}
	return dst
}

// appendTime renders a time placeholder from the record's value v (nil if absent): Unix ms, or
// seconds rounded down; if v is not a time, the fallback (Unix ms), or null if !hasFallback.
func appendTime(dst, v []byte, seconds bool, fallback int64, hasFallback, text bool) []byte {
	ms, ok := parseTime(v)
	if !ok {
		if !hasFallback {
			return appendNull(dst, text)
		}
		ms = fallback
	}
	if seconds {
		ms = floorDiv(ms, 1000)
	}
	return strconv.AppendInt(dst, ms, 10)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// appendSlot renders placeholder p for m, typed or as text.
func appendSlot(dst []byte, p *part, m *Message, r *record, spans []span) []byte {
	text := p.text
	result := m.Kind == KindResult
	switch p.b {
	case bDevice:
		return appendStr(dst, m.device(), text)
	case bSerial:
		return appendStr(dst, m.Serial, text)
	case bIMEI:
		return appendStr(dst, m.IMEI, text)
	case bICCID:
		return appendStr(dst, m.ICCID, text)
	case bCustom1:
		return appendStr(dst, m.custom(0), text)
	case bCustom2:
		return appendStr(dst, m.custom(1), text)
	case bCustom3:
		return appendStr(dst, m.custom(2), text)
	case bAccount:
		return appendStr(dst, m.Account, text)
	case bTags:
		return appendList(dst, m.Tags, text)
	case bGroups:
		return appendList(dst, m.Groups, text)
	case bSeq:
		return strconv.AppendUint(dst, m.Seq, 10)
	case bIndex:
		return strconv.AppendInt(dst, int64(m.Index), 10)
	case bAttempt:
		return strconv.AppendInt(dst, int64(m.Attempt), 10)
	case bMsgID:
		return quote(appendMsgID(quote(dst, text), m), text)
	case bReceivedAt:
		return quote(envelope.AppendTimestamp(quote(dst, text), m.ReceivedAt), text)
	case bReceived:
		return strconv.AppendInt(dst, m.ReceivedAt, 10)
	case bKind:
		return quote(append(quote(dst, text), m.Kind.String()...), text)
	case bTaskID:
		if result {
			return appendStr(dst, m.TaskID, text)
		}
	case bResultCode:
		if result {
			return strconv.AppendInt(dst, int64(m.ResultCode), 10)
		}
	case bResultData:
		if result {
			return appendRaw(dst, r.obj, text)
		}
	case bData:
		if p.key < 0 {
			return appendRaw(dst, r.obj, text)
		}
		v := r.field(spans, p.key)
		for _, seg := range p.path {
			if v == nil {
				break
			}
			v = descend(v, seg)
		}
		return appendRaw(dst, v, text)
	case bField:
		return appendRaw(dst, r.field(spans, p.key), text)
	case bTimestamp, bTimestampSec:
		return appendTime(dst, r.field(spans, p.key), p.b == bTimestampSec, m.ReceivedAt, true, text)
	case bGPSTime, bGPSTimeSec:
		return appendTime(dst, r.field(spans, p.key), p.b == bGPSTimeSec, 0, false, text)
	case bBattery:
		if v := r.field(spans, p.key); v != nil {
			return appendRaw(dst, v, text)
		}
		if v := r.field(spans, p.key2); v != nil && (v[0] == '"' || isNumber(v)) {
			return quote(append(appendRawText(quote(dst, text), v), '%'), text)
		}
	case bSim:
		if v := r.field(spans, p.key); v != nil {
			return appendRaw(dst, v, text)
		}
		return appendStr(dst, m.ICCID, text)
	}
	return appendNull(dst, text)
}

// descend returns the member seg of the object v, or the element seg (a decimal index) of the
// array v, or nil.
func descend(v []byte, seg string) []byte {
	var s elementScan
	var el member
	switch v[0] {
	case '{':
		var found []byte
		s.init(v)
		for s.next(&el) {
			if rawKeyIs(el.key, el.esc, seg) {
				found = el.val // the last one counts, as with encoding/json
			}
		}
		return found
	case '[':
		n, ok := arrayIndex(seg)
		if !ok {
			return nil
		}
		s.init(v)
		for k := 0; s.next(&el); k++ {
			if k == n {
				return el.val
			}
		}
	}
	return nil
}

// arrayIndex parses a path segment as an array index: decimal digits, no leading zero.
func arrayIndex(seg string) (int, bool) {
	if seg == "" || len(seg) > 9 || (seg[0] == '0' && len(seg) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// appendRawText appends the valid JSON value raw as text inside a JSON string.
func appendRawText(dst, raw []byte) []byte {
	switch raw[0] {
	case '"':
		// A valid string's body is valid inside any JSON string.
		return append(dst, raw[1:len(raw)-1]...)
	case 'n':
		return dst
	case '{', '[':
		return jsontext.AppendEscaped(dst, raw)
	}
	return append(dst, raw...)
}
