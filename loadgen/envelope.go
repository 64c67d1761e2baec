package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrBadBatch is wrapped by every error of BatchScanner.Scan: the body is not a JSON array of
// envelopes with the fields a receiver needs.
var ErrBadBatch = errors.New("bad batch")

// DefaultSentField is the key of an envelope's data object that holds the device's send time
// (Unix microseconds, a JSON integer) unless a sink is told otherwise.
const DefaultSentField = "sentAt"

// maxNestingDepth is the depth of nested arrays and objects a body may have, counting the batch
// array itself; encoding/json refuses the same inputs.
const maxNestingDepth = 10000

// Envelope is the relay's default message envelope, as a receiver decodes it.
type Envelope struct {
	MsgID      string          `json:"msgId"`
	Serial     string          `json:"serial"`
	IMEI       string          `json:"imei"`
	ICCID      string          `json:"iccid"`
	Seq        uint64          `json:"seq"`
	Index      int             `json:"index"`
	ReceivedAt string          `json:"receivedAt"`
	Attempt    int             `json:"attempt"`
	Data       json.RawMessage `json:"data"`
}

// EnvelopeRef is one envelope as BatchScanner.Scan found it. Its byte slices point into the
// scanned body or into the scanner's scratch space: they are valid until the next Scan with the
// same scanner, and only while the body is not modified. Copy what must outlive that.
//
// String fields are decoded (escapes resolved, invalid UTF-8 replaced by U+FFFD, exactly as
// encoding/json does); a missing or null string is empty.
type EnvelopeRef struct {
	MsgID, Serial, IMEI, ICCID, ReceivedAt []byte

	Seq     uint64
	Index   int
	Attempt int

	// Data is the data value verbatim (as the device sent it, inside the envelope).
	Data []byte

	// SentAt is the integer value of the data object's send-time field (BatchScanner.SentField),
	// in Unix microseconds; HasSentAt says whether data had such a field holding a JSON integer
	// that fits an int64. When a key occurs twice, the last one counts.
	SentAt    int64
	HasSentAt bool
}

// Device is the identity the relay names the message by: the serial, or the IMEI of a device
// without one.
func (e *EnvelopeRef) Device() []byte {
	if len(e.Serial) > 0 {
		return e.Serial
	}
	return e.IMEI
}

// Envelope copies e into an Envelope that owns its memory.
func (e *EnvelopeRef) Envelope() Envelope {
	return Envelope{
		MsgID: string(e.MsgID), Serial: string(e.Serial), IMEI: string(e.IMEI), ICCID: string(e.ICCID),
		Seq: e.Seq, Index: e.Index, ReceivedAt: string(e.ReceivedAt), Attempt: e.Attempt,
		Data: append(json.RawMessage(nil), e.Data...),
	}
}

// BatchScanner extracts envelopes from a batch body (a JSON array of envelopes) without
// encoding/json and, once its buffers have grown, without allocating. It validates the whole
// body as JSON (it accepts exactly the syntax encoding/json accepts) and requires of each
// element: an object with an unsigned integer "seq" and "index", a "data" member, and a
// non-empty "serial" or "imei". "attempt" is an optional unsigned integer; "msgId", "iccid",
// "receivedAt" optional strings; other members are skipped. Keys match exactly (not
// case-insensitively, unlike encoding/json's struct decoding); the last of repeated keys wins.
//
// A BatchScanner is not safe for concurrent use; the zero value is ready (with no send-time
// extraction: set SentField).
type BatchScanner struct {
	// SentField is the key, at the top level of each envelope's data object, of the device's
	// send time; "" extracts none.
	SentField string

	arena []byte // decoded strings of the current Scan
	stack []byte // open containers while skipping a value
}

// Scan appends the envelopes of body to dst. On error it returns dst as it was and an error
// wrapping ErrBadBatch that names the offset of the problem.
func (sc *BatchScanner) Scan(dst []EnvelopeRef, body []byte) ([]EnvelopeRef, error) {
	sc.arena = sc.arena[:0]
	n0 := len(dst)
	b := body
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return dst[:n0], badAt(b, i, "batch is not a JSON array")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		if i = skipWS(b, i+1); i != len(b) {
			return dst[:n0], badAt(b, i, "data after the batch array")
		}
		return dst, nil
	}
	for {
		if i >= len(b) || b[i] != '{' {
			if i < len(b) && isValueStart(b[i]) {
				// Report syntax errors before type errors, as encoding/json does.
				if _, err := sc.skipValue(b, i, 1); err != nil {
					return dst[:n0], err
				}
			}
			return dst[:n0], badAt(b, i, fmt.Sprintf("element %d is not an object", len(dst)-n0))
		}
		if len(dst) < cap(dst) {
			dst = dst[:len(dst)+1]
			dst[len(dst)-1] = EnvelopeRef{}
		} else {
			dst = append(dst, EnvelopeRef{})
		}
		var err error
		if i, err = sc.scanEnvelope(b, i, &dst[len(dst)-1]); err != nil {
			return dst[:n0], err
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			if i = skipWS(b, i+1); i != len(b) {
				return dst[:n0], badAt(b, i, "data after the batch array")
			}
			return dst, nil
		}
		return dst[:n0], badAt(b, i, "expected ',' or ']' after an element")
	}
}

// Envelope member keys the scanner knows.
const (
	keyOther = iota
	keyMsgID
	keySerial
	keyIMEI
	keyICCID
	keySeq
	keyIndex
	keyReceivedAt
	keyAttempt
	keyData
)

func envelopeKey(k []byte) int {
	switch string(k) {
	case "msgId":
		return keyMsgID
	case "serial":
		return keySerial
	case "imei":
		return keyIMEI
	case "iccid":
		return keyICCID
	case "seq":
		return keySeq
	case "index":
		return keyIndex
	case "receivedAt":
		return keyReceivedAt
	case "attempt":
		return keyAttempt
	case "data":
		return keyData
	}
	return keyOther
}

// scanEnvelope fills e from the object at b[i] ('{') and returns the offset past it.
func (sc *BatchScanner) scanEnvelope(b []byte, i int, e *EnvelopeRef) (int, error) {
	const depth = 2 // the batch array and this object
	start := i
	var hasSeq, hasIndex, hasData bool
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, badAt(b, start, "envelope has no seq, index, data or identity")
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, badAt(b, i, "expected a member name")
		}
		end, plain, err := scanString(b, i)
		if err != nil {
			return i, err
		}
		var key int
		if plain {
			key = envelopeKey(b[i+1 : end-1])
		} else {
			saved := sc.arena
			key = envelopeKey(sc.decode(b[i+1 : end-1]))
			sc.arena = saved
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, badAt(b, i, "expected ':' after a member name")
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return i, badAt(b, i, "unexpected end of body")
		}
		switch key {
		case keyMsgID:
			e.MsgID, i, err = sc.stringValue(b, i, "msgId")
		case keySerial:
			e.Serial, i, err = sc.stringValue(b, i, "serial")
		case keyIMEI:
			e.IMEI, i, err = sc.stringValue(b, i, "imei")
		case keyICCID:
			e.ICCID, i, err = sc.stringValue(b, i, "iccid")
		case keyReceivedAt:
			e.ReceivedAt, i, err = sc.stringValue(b, i, "receivedAt")
		case keySeq:
			e.Seq, hasSeq, i, err = sc.uintValue(b, i, "seq", math.MaxUint64)
		case keyIndex:
			var v uint64
			v, hasIndex, i, err = sc.uintValue(b, i, "index", math.MaxInt)
			e.Index = int(v)
		case keyAttempt:
			var v uint64
			v, _, i, err = sc.uintValue(b, i, "attempt", math.MaxInt)
			e.Attempt = int(v)
		case keyData:
			hasData = true
			e.SentAt, e.HasSentAt = 0, false
			from := i
			i, err = sc.scanData(b, i, depth, e)
			e.Data = b[from:i]
		default:
			i, err = sc.skipValue(b, i, depth)
		}
		if err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			i++
			break
		}
		return i, badAt(b, i, "expected ',' or '}' in an envelope")
	}
	switch {
	case !hasSeq:
		return i, badAt(b, start, "envelope has no seq")
	case !hasIndex:
		return i, badAt(b, start, "envelope has no index")
	case !hasData:
		return i, badAt(b, start, "envelope has no data")
	case len(e.Serial) == 0 && len(e.IMEI) == 0:
		return i, badAt(b, start, "envelope has neither serial nor imei")
	}
	return i, nil
}

// stringValue reads a string or null member value at b[i].
func (sc *BatchScanner) stringValue(b []byte, i int, name string) ([]byte, int, error) {
	switch b[i] {
	case '"':
		end, plain, err := scanString(b, i)
		if err != nil {
			return nil, i, err
		}
		if plain {
			return b[i+1 : end-1], end, nil
		}
		return sc.decode(b[i+1 : end-1]), end, nil
	case 'n':
		end, err := skipScalar(b, i)
		return nil, end, err
	}
	end, err := sc.skipValue(b, i, 2)
	if err != nil {
		return nil, end, err
	}
	return nil, i, badAt(b, i, name+" is not a string")
}

// uintValue reads an unsigned integer or null member value at b[i]; ok is false for null.
func (sc *BatchScanner) uintValue(b []byte, i int, name string, max uint64) (v uint64, ok bool, end int, err error) {
	c := b[i]
	if c == 'n' {
		end, err = skipScalar(b, i)
		return 0, false, end, err
	}
	if c >= '0' && c <= '9' {
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			d := uint64(b[j] - '0')
			if v > (max-d)/10 {
				if end, err = skipScalar(b, i); err != nil {
					return 0, false, end, err
				}
				return 0, false, i, badAt(b, i, name+" is out of range")
			}
			v = v*10 + d
			j++
		}
		if j == len(b) || (b[j] != '.' && b[j] != 'e' && b[j] != 'E') {
			if c == '0' && j-i > 1 {
				return 0, false, i, badAt(b, i, "number with a leading zero")
			}
			return v, true, j, nil
		}
	}
	if end, err = sc.skipValue(b, i, 2); err != nil {
		return 0, false, end, err
	}
	return 0, false, i, badAt(b, i, name+" is not an unsigned integer")
}

// scanData skips the data value at b[i], extracting the send-time field of an object into e.
func (sc *BatchScanner) scanData(b []byte, i, depth int, e *EnvelopeRef) (int, error) {
	if sc.SentField == "" || b[i] != '{' {
		return sc.skipValue(b, i, depth)
	}
	depth++
	if depth > maxNestingDepth {
		return i, badAt(b, i, "nested too deeply")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, badAt(b, i, "expected a member name")
		}
		end, plain, err := scanString(b, i)
		if err != nil {
			return i, err
		}
		var match bool
		if plain {
			match = string(b[i+1:end-1]) == sc.SentField
		} else {
			saved := sc.arena
			match = string(sc.decode(b[i+1:end-1])) == sc.SentField
			sc.arena = saved
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, badAt(b, i, "expected ':' after a member name")
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return i, badAt(b, i, "unexpected end of body")
		}
		from := i
		switch c := b[i]; {
		case c == '"':
			i, _, err = scanString(b, i)
		case c == '-' || (c >= '0' && c <= '9'):
			i, err = skipNumber(b, i)
		default:
			i, err = sc.skipValue(b, i, depth)
		}
		if err != nil {
			return i, err
		}
		if match {
			e.SentAt, e.HasSentAt = parseInt64(b[from:i])
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		return i, badAt(b, i, "expected ',' or '}' in an object")
	}
}

// parseInt64 parses a JSON value that is an integer fitting an int64 (no fraction, no exponent).
func parseInt64(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0') // 19 digits cannot overflow a uint64
	}
	switch {
	case neg && n <= 1<<63:
		return -int64(n-1) - 1, true
	case !neg && n <= math.MaxInt64:
		return int64(n), true
	}
	return 0, false
}

// skipValue returns the offset past the JSON value at b[i], validating it; depth is the nesting
// depth of the container holding the value.
func (sc *BatchScanner) skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, badAt(b, i, "unexpected end of body")
	}
	if c := b[i]; c != '{' && c != '[' {
		return skipScalar(b, i)
	}
	st := sc.stack[:0]
	defer func() { sc.stack = st[:0] }()
	const (
		begin = iota // just after '{' or '[': a member or the end
		next         // after ',': a member
		after        // after a member: ',' or the end
	)
	state := begin
	for {
		if state == begin || state == next {
			if state == begin {
				// b[i] opens a container.
				depth++
				if depth > maxNestingDepth {
					return i, badAt(b, i, "nested too deeply")
				}
				st = append(st, b[i])
				i = skipWS(b, i+1)
				if i < len(b) && b[i] == st[len(st)-1]+2 { // '{'+2 == '}', '['+2 == ']'
					i++
					depth--
					st = st[:len(st)-1]
					if len(st) == 0 {
						return i, nil
					}
					state = after
					continue
				}
			}
			if i >= len(b) {
				return i, badAt(b, i, "unexpected end of body")
			}
			if st[len(st)-1] == '{' {
				if b[i] != '"' {
					return i, badAt(b, i, "expected a member name")
				}
				end, _, err := scanString(b, i)
				if err != nil {
					return end, err
				}
				i = skipWS(b, end)
				if i >= len(b) || b[i] != ':' {
					return i, badAt(b, i, "expected ':' after a member name")
				}
				i = skipWS(b, i+1)
				if i >= len(b) {
					return i, badAt(b, i, "unexpected end of body")
				}
			}
			if c := b[i]; c == '{' || c == '[' {
				state = begin
				continue
			}
			var err error
			if i, err = skipScalar(b, i); err != nil {
				return i, err
			}
			state = after
			continue
		}
		// state == after
		i = skipWS(b, i)
		if i >= len(b) {
			return i, badAt(b, i, "unexpected end of body")
		}
		switch c := b[i]; {
		case c == ',':
			i = skipWS(b, i+1)
			state = next
		case c == st[len(st)-1]+2:
			i++
			depth--
			st = st[:len(st)-1]
			if len(st) == 0 {
				return i, nil
			}
		default:
			return i, badAt(b, i, "expected ',' or the end of a container")
		}
	}
}

// skipScalar returns the offset past the string, number or literal at b[i].
func skipScalar(b []byte, i int) (int, error) {
	switch c := b[i]; {
	case c == '"':
		end, _, err := scanString(b, i)
		return end, err
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	}
	return i, badAt(b, i, "expected a value")
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, badAt(b, i, "invalid literal")
	}
	return i + len(lit), nil
}

// skipNumber returns the offset past the JSON number at b[i].
func skipNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, badAt(b, start, "invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, badAt(b, start, "invalid number")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, badAt(b, start, "invalid number")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	return i, nil
}

// plainByte marks the bytes a string holds as they are: printable ASCII other than '"' and '\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString returns the offset past the string whose opening quote is b[i], and whether its
// content is plain (no escapes, ASCII only) and so needs no decoding.
func scanString(b []byte, i int) (end int, plain bool, err error) {
	start := i
	i++
	plain = true
	for {
		for i+4 <= len(b) && plainByte[b[i]] && plainByte[b[i+1]] && plainByte[b[i+2]] && plainByte[b[i+3]] {
			i += 4
		}
		if i >= len(b) {
			return i, false, badAt(b, start, "unterminated string")
		}
		c := b[i]
		switch {
		case plainByte[c]:
			i++
		case c == '"':
			return i + 1, plain, nil
		case c == '\\':
			plain = false
			if i+1 >= len(b) {
				return i, false, badAt(b, start, "unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if hex4(b, i+2) < 0 {
					return i, false, badAt(b, i, "invalid \\u escape")
				}
				i += 6
			default:
				return i, false, badAt(b, i, "invalid escape")
			}
		case c < 0x20:
			return i, false, badAt(b, i, "control character in a string")
		default: // non-ASCII: decoded to check (and replace) invalid UTF-8
			plain = false
			i++
		}
	}
}

// hex4 is the value of the four hex digits at b[i:], or -1.
func hex4(b []byte, i int) rune {
	if len(b)-i < 4 {
		return -1
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// decode resolves the escapes of the validated string content s (between its quotes) into the
// scanner's arena, replacing invalid UTF-8 and unpaired surrogates by U+FFFD like encoding/json.
func (sc *BatchScanner) decode(s []byte) []byte {
	// The result is at most 3 bytes per input byte (one invalid byte becomes U+FFFD). A full
	// arena is replaced, not grown: earlier results keep pointing into the old one.
	need := 3 * len(s)
	if cap(sc.arena)-len(sc.arena) < need {
		sc.arena = make([]byte, 0, max(need, 2*cap(sc.arena), 4096))
	}
	start := len(sc.arena)
	out := sc.arena
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			switch e := s[i+1]; e {
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := hex4(s, i+2)
				i += 6
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						r2 = hex4(s, i+2)
					}
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						out = utf8.AppendRune(out, d)
						i += 6
						continue
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
				continue
			default: // '"', '\\', '/'
				out = append(out, e)
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, r)
			} else {
				out = append(out, s[i:i+size]...)
			}
			i += size
		}
	}
	sc.arena = out
	return out[start:len(out):len(out)]
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func isValueStart(c byte) bool {
	switch c {
	case '{', '[', '"', '-', 't', 'f', 'n', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}

// badAt is the error for a problem at offset i of b.
func badAt(b []byte, i int, what string) error {
	if i >= len(b) {
		return fmt.Errorf("%w: at end of body (%d bytes): %s", ErrBadBatch, len(b), what)
	}
	return fmt.Errorf("%w: offset %d: %s", ErrBadBatch, i, what)
}
