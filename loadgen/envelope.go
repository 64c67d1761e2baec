package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// ErrBadBatch is wrapped by every error of BatchScanner.Scan: the body is not a JSON array of
// envelopes with the fields a receiver needs.
var ErrBadBatch = errors.New("bad batch")

// DefaultSentField is the key of an envelope's data object that holds the device's send time
// (Unix microseconds, a JSON integer) unless a sink is told otherwise.
const DefaultSentField = "sentAt"

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

	// Key is the unsigned integer value of the data object's key field (BatchScanner.KeyField);
	// HasKey says whether data had one. A sink accounts such a record by (device, Key) instead of
	// (device, seq, index): see TeltonikaCounterIO.
	Key    uint64
	HasKey bool
}

// MsgKey is the key a sink accounts e by: its device and seq and index, or its device and Key
// (with index 0) when it has one.
func (e *EnvelopeRef) MsgKey() (seq uint64, index int) {
	if e.HasKey {
		return e.Key, 0
	}
	return e.Seq, e.Index
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
	// KeyField, if set, names a member of each envelope's data object holding an unsigned
	// integer that identifies the record within its device: a top-level key, or "outer.inner"
	// for a member of an object member of data ("io.150"). See EnvelopeRef.Key.
	KeyField string
	// KeyTimeField, if set, names a top-level member of data holding, in Unix milliseconds, the
	// send time of a record that has a key and no SentField (a Teltonika record's "timestamp":
	// the simulated tracker makes each record when it sends it).
	KeyTimeField string

	arena []byte // decoded strings of the current Scan
	name  []byte // the last member name decoded
}

// Scan appends the envelopes of body to dst. On error it returns dst as it was and an error
// wrapping ErrBadBatch that names the offset of the problem.
func (sc *BatchScanner) Scan(dst []EnvelopeRef, body []byte) ([]EnvelopeRef, error) {
	sc.arena = sc.arena[:0]
	n0 := len(dst)
	b := body
	i := jsontext.SkipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return dst[:n0], badAt(b, i, "batch is not a JSON array")
	}
	i = jsontext.SkipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		if i = jsontext.SkipWS(b, i+1); i != len(b) {
			return dst[:n0], badAt(b, i, "data after the batch array")
		}
		return dst, nil
	}
	for {
		if i >= len(b) || b[i] != '{' {
			if i < len(b) {
				// Report syntax errors before type errors, as encoding/json does.
				if end, p := jsontext.ScanValue(b, i, 1); p != jsontext.None && p != jsontext.NoValue {
					return dst[:n0], badAt(b, end, p.String())
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
		i = jsontext.SkipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = jsontext.SkipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			if i = jsontext.SkipWS(b, i+1); i != len(b) {
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
	// A member of the wrong type or range is an error only if no later member of the same name
	// replaces it (the last of repeated keys wins); syntax errors are final at once.
	type typeProblem struct {
		at   int
		what string
	}
	var pending [keyData]typeProblem
	i = jsontext.SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, badAt(b, start, "envelope has no seq, index, data or identity")
	}
	for {
		name, at, err := sc.memberName(b, i)
		if err != nil {
			return at, err
		}
		key, from := envelopeKey(name), at
		i = at
		var bad string
		switch key {
		case keyMsgID:
			e.MsgID, i, bad, err = sc.stringValue(b, i, "msgId")
		case keySerial:
			e.Serial, i, bad, err = sc.stringValue(b, i, "serial")
		case keyIMEI:
			e.IMEI, i, bad, err = sc.stringValue(b, i, "imei")
		case keyICCID:
			e.ICCID, i, bad, err = sc.stringValue(b, i, "iccid")
		case keyReceivedAt:
			e.ReceivedAt, i, bad, err = sc.stringValue(b, i, "receivedAt")
		case keySeq:
			e.Seq, hasSeq, i, bad, err = uintValue(b, i, "seq", math.MaxUint64)
		case keyIndex:
			var v uint64
			v, hasIndex, i, bad, err = uintValue(b, i, "index", math.MaxInt)
			e.Index = int(v)
		case keyAttempt:
			var v uint64
			v, _, i, bad, err = uintValue(b, i, "attempt", math.MaxInt)
			e.Attempt = int(v)
		case keyData:
			hasData = true
			e.SentAt, e.HasSentAt = 0, false
			i, err = sc.scanData(b, i, depth, e)
			e.Data = b[from:i]
		default:
			i, err = skipValue(b, i, depth)
		}
		if err != nil {
			return i, err
		}
		if key < len(pending) {
			pending[key] = typeProblem{from, bad}
		}
		i = jsontext.SkipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = jsontext.SkipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			i++
			break
		}
		return i, badAt(b, i, "expected ',' or '}' in an envelope")
	}
	for _, p := range pending {
		if p.what != "" {
			return i, badAt(b, p.at, p.what)
		}
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

// stringValue reads a string or null member value at b[i] and returns the offset past it. A
// valid value of another type is skipped and named in bad; err is a syntax error.
func (sc *BatchScanner) stringValue(b []byte, i int, name string) (v []byte, end int, bad string, err error) {
	if b[i] == '"' {
		end, plain, err := scanString(b, i)
		if err != nil {
			return nil, i, "", err
		}
		return sc.str(b[i+1:end-1], plain), end, "", nil
	}
	if end, err = skipValue(b, i, 2); err != nil || b[i] == 'n' {
		return nil, end, "", err
	}
	return nil, end, name + " is not a string", nil
}

// uintValue reads an unsigned integer up to max, or null, at b[i] and returns the offset past
// it; ok is false for null. A valid value of another type or out of range is skipped and named
// in bad; err is a syntax error.
func uintValue(b []byte, i int, name string, max uint64) (v uint64, ok bool, end int, bad string, err error) {
	if c := b[i]; c >= '0' && c <= '9' {
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			d := uint64(b[j] - '0')
			if v > (max-d)/10 {
				end, err = skipValue(b, i, 2)
				return 0, false, end, name + " is out of range", err
			}
			v = v*10 + d
			j++
		}
		if j == len(b) || (b[j] != '.' && b[j] != 'e' && b[j] != 'E') {
			if c == '0' && j-i > 1 {
				return 0, false, i, "", badAt(b, i, "number with a leading zero")
			}
			return v, true, j, "", nil
		}
	}
	if end, err = skipValue(b, i, 2); err != nil || b[i] == 'n' {
		return 0, false, end, "", err
	}
	return 0, false, end, name + " is not an unsigned integer", nil
}

// scanData skips the data value at b[i], extracting the send-time and key fields of an object
// into e.
func (sc *BatchScanner) scanData(b []byte, i, depth int, e *EnvelopeRef) (int, error) {
	e.Key, e.HasKey = 0, false
	if (sc.SentField == "" && sc.KeyField == "") || b[i] != '{' {
		return skipValue(b, i, depth)
	}
	outer, inner, nested := strings.Cut(sc.KeyField, ".")
	var ms int64
	var hasMs bool
	end, err := sc.scanObject(b, i, depth, func(name []byte, from, to int) {
		switch {
		case sc.SentField != "" && string(name) == sc.SentField:
			e.SentAt, e.HasSentAt = parseInt64(b[from:to])
		case sc.KeyTimeField != "" && string(name) == sc.KeyTimeField:
			ms, hasMs = parseInt64(b[from:to])
		case !nested && sc.KeyField != "" && string(name) == sc.KeyField:
			e.Key, e.HasKey = parseUint64(b[from:to])
		case nested && string(name) == outer && b[from] == '{':
			// Already validated: the inner scan cannot fail.
			_, _ = sc.scanObject(b, from, depth+1, func(name []byte, from, to int) {
				if string(name) == inner {
					e.Key, e.HasKey = parseUint64(b[from:to])
				}
			})
		}
	})
	if e.HasKey && !e.HasSentAt && hasMs && ms >= 0 && ms <= math.MaxInt64/1000 {
		e.SentAt, e.HasSentAt = ms*1000, true
	}
	return end, err
}

// scanObject validates the object at b[i] (depth containers open around it) and calls member
// with each member's name (valid during the call) and the offsets of its value.
func (sc *BatchScanner) scanObject(b []byte, i, depth int, member func(name []byte, from, to int)) (int, error) {
	depth++ // the object
	if depth > jsontext.MaxDepth {
		return i, badAt(b, i, jsontext.TooDeep.String())
	}
	i = jsontext.SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		name, from, err := sc.memberName(b, i)
		if err != nil {
			return from, err
		}
		i = from
		if i, err = skipValue(b, i, depth); err != nil {
			return i, err
		}
		member(name, from, i)
		i = jsontext.SkipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = jsontext.SkipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		return i, badAt(b, i, jsontext.NoObjectEnd.String())
	}
}

// parseUint64 parses a JSON value that is an unsigned integer fitting a uint64.
func parseUint64(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// memberName reads the member name starting at b[i] and the ':' after it, and returns the
// name's value, valid until the next call, and the offset of the member's value.
func (sc *BatchScanner) memberName(b []byte, i int) (name []byte, at int, err error) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, badAt(b, i, jsontext.NoKey.String())
	}
	end, plain, err := scanString(b, i)
	if err != nil {
		return nil, i, err
	}
	name = b[i+1 : end-1]
	if !plain {
		sc.name = jsontext.AppendUnquoted(sc.name[:0], name)
		name = sc.name
	}
	i = jsontext.SkipWS(b, end)
	if i >= len(b) || b[i] != ':' {
		return nil, i, badAt(b, i, jsontext.NoColon.String())
	}
	i = jsontext.SkipWS(b, i+1)
	if i >= len(b) {
		return nil, i, badAt(b, i, jsontext.UnexpectedEnd.String())
	}
	return name, i, nil
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
	sc.arena = jsontext.AppendUnquoted(sc.arena, s)
	return sc.arena[start:len(sc.arena):len(sc.arena)]
}

// str returns the value of the string whose body (between the quotes) is s: s itself if it is
// plain (see jsontext.ScanString), else its decoding in the arena.
func (sc *BatchScanner) str(s []byte, plain bool) []byte {
	if plain {
		return s
	}
	return sc.decode(s)
}

// skipValue returns the offset past the JSON value at b[i], validating it; depth is the number
// of containers open around the value.
func skipValue(b []byte, i, depth int) (int, error) {
	end, p := jsontext.ScanValue(b, i, depth)
	if p != jsontext.None {
		return end, badAt(b, end, p.String())
	}
	return end, nil
}

// scanString returns the offset past the string whose opening quote is b[i], and whether it is
// plain: its body is its value.
func scanString(b []byte, i int) (end int, plain bool, err error) {
	end, plain, p := jsontext.ScanString(b, i)
	if p != jsontext.None {
		return end, plain, badAt(b, end, p.String())
	}
	return end, plain, nil
}

// badAt is the error for a problem at offset i of b.
func badAt(b []byte, i int, what string) error {
	if i >= len(b) {
		return fmt.Errorf("%w: at end of body (%d bytes): %s", ErrBadBatch, len(b), what)
	}
	return fmt.Errorf("%w: offset %d: %s", ErrBadBatch, i, what)
}
