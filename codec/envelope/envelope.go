package envelope

import (
	"strconv"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// Message is one device record as the route side sees it.
//
// A Message is plain data; the encoders below only read it.
type Message struct {
	Device     string // identity (serial, or IMEI if the device has no serial)
	Serial     string
	IMEI       string
	ICCID      string
	Seq        uint64 // the device's sequence number of the frame
	Index      int    // the record's place in its frame (0-based)
	ReceivedAt int64  // Unix milliseconds when the relay received the frame
	// Data is the record exactly as the device sent it: one JSON object,
	// already validated upstream. It is copied verbatim; an empty Data is
	// encoded as null so that the output stays valid JSON.
	Data []byte
}

// AppendMsgID appends the message id "<device>-<seq>-<index>" to dst.
//
// The id depends only on the device identity and the record's position, so it
// is stable across delivery retries and relay restarts; receivers dedupe on it.
// The device string is appended as is (no escaping).
func AppendMsgID(dst []byte, device string, seq uint64, index int) []byte {
	dst = append(dst, device...)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '-')
	return strconv.AppendInt(dst, int64(index), 10)
}

// Append appends the JSON envelope of m for the given delivery
// attempt (0-based) to dst:
//
//	{"msgId":"SN1-7-0","serial":"SN1","imei":"","iccid":"","seq":7,"index":0,
//	 "receivedAt":"2026-11-22T10:00:00.123Z","attempt":0,"data":{...}}
//
// Strings are escaped like encoding/json without HTML escaping (invalid UTF-8
// becomes \ufffd; see codec/jsontext); empty strings keep their key; receivedAt is RFC 3339 in UTC
// with exactly three fractional digits; Data is copied verbatim.
func Append(dst []byte, m *Message, attempt int) []byte {
	dst = append(dst, `{"msgId":"`...)
	dst = jsontext.AppendEscaped(dst, m.Device)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(m.Index), 10)
	dst = append(dst, `","serial":"`...)
	dst = jsontext.AppendEscaped(dst, m.Serial)
	dst = append(dst, `","imei":"`...)
	dst = jsontext.AppendEscaped(dst, m.IMEI)
	dst = append(dst, `","iccid":"`...)
	dst = jsontext.AppendEscaped(dst, m.ICCID)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendInt(dst, int64(m.Index), 10)
	dst = append(dst, `,"receivedAt":"`...)
	dst = AppendTimestamp(dst, m.ReceivedAt)
	dst = append(dst, `","attempt":`...)
	dst = strconv.AppendInt(dst, int64(attempt), 10)
	dst = append(dst, `,"data":`...)
	if len(m.Data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, m.Data...)
	}
	return append(dst, '}')
}

// envelopeFixed is the length of everything in an envelope that does not
// depend on the message: keys, quotes, separators, the three dashes-and-digits
// separators of msgId are counted with the numbers.
const envelopeFixed = len(`{"msgId":"","serial":"","imei":"","iccid":"","seq":,"index":,"receivedAt":"","attempt":,"data":}`)

// maxTimestampLen is the length of "2006-01-02T15:04:05.000Z" plus room for
// years outside 0..9999 (rendered by time.Time.AppendFormat).
const maxTimestampLen = 24 + 8

// maxAttemptLen bounds the attempt number's decimal length.
const maxAttemptLen = 20

// Size returns an upper bound of len(Append(nil, m, attempt))
// for any attempt. It is cheap (one table lookup per identity byte, no
// allocation) and meant for max_bytes batching decisions; add one byte per
// message for the comma (or bracket) of the batch array.
func Size(m *Message) int {
	seq := uintLen(m.Seq)
	idx := intLen(int64(m.Index))
	data := len(m.Data)
	if data == 0 {
		data = len("null")
	}
	return envelopeFixed +
		jsontext.EscapedLenBound(m.Device) + 2 + seq + idx + // msgId
		jsontext.EscapedLenBound(m.Serial) + jsontext.EscapedLenBound(m.IMEI) + jsontext.EscapedLenBound(m.ICCID) +
		seq + idx + maxTimestampLen + maxAttemptLen + data
}

func uintLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

func intLen(v int64) int {
	if v < 0 {
		if v == -1<<63 {
			return 20
		}
		return 1 + uintLen(uint64(-v))
	}
	return uintLen(uint64(v))
}

// AppendTimestamp appends the Unix millisecond time ms as RFC 3339 in UTC with
// exactly three fractional digits, e.g. 2026-11-22T10:00:00.123Z.
func AppendTimestamp(dst []byte, ms int64) []byte {
	t := time.UnixMilli(ms).UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	}
	hour, minute, sec := t.Clock()
	milli := t.Nanosecond() / 1e6
	return append(dst,
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-',
		byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), '.',
		byte('0'+milli/100), byte('0'+milli/10%10), byte('0'+milli%10), 'Z')
}
