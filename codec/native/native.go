// Package native encodes and decodes frames of the fleetrelay device protocol v1 ("native"), as
// specified in PROTOCOL.md: a u32 big-endian length, a type byte and a body.
//
// It is pure: no I/O, no goroutines. Decoders never allocate a frame's length before checking it
// against the caller's maximum, and return slices that alias the input; callers that keep them
// past the input's lifetime must copy. Encoders append to a caller's buffer.
package native

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// Frame types.
const (
	TypeHello   byte = 0x01 // device → relay: JSON identity
	TypeWelcome byte = 0x02 // relay → device: JSON session parameters
	TypeData    byte = 0x03 // device → relay: seq + records
	TypeAck     byte = 0x04 // relay → device: cumulative seq
	TypeCommand byte = 0x05 // relay → device: task + JSON
	TypeResult  byte = 0x06 // device → relay: task + code + JSON
	TypePing    byte = 0x07 // either way: opaque bytes
	TypePong    byte = 0x08 // either way: the ping's bytes
	TypeUData   byte = 0x13 // device → relay over UDP: self-identifying DATA
	TypeError   byte = 0x7F // relay → device: code + message, then close
)

// ERROR codes.
const (
	CodeMalformed    uint16 = 400 // malformed frame or record
	CodeUnauthorized uint16 = 401 // unknown or unauthorised device
	CodeHelloTimeout uint16 = 408 // no HELLO in time
	CodeTooLarge     uint16 = 413 // frame too large
	CodeRateLimited  uint16 = 429 // rate limit
	CodeUnavailable  uint16 = 503 // relay overloaded or shutting down
)

const (
	// HeaderLen is the size of the length prefix plus the type byte.
	HeaderLen = 5
	// DefaultMaxFrame is the default limit on a frame's len field (type byte + body).
	DefaultMaxFrame = 65536
	// MaxFrameLimit is the largest maximum a relay may be configured with.
	MaxFrameLimit = 1 << 20
	// AckLen is the encoded size of an ACK frame.
	AckLen = HeaderLen + 8
)

// Next decodes the frame at the start of buf. It returns the frame's type, its body (aliasing
// buf) and the number of bytes the frame occupies. When buf holds only part of a frame it returns
// ErrShort and n == 0; the caller waits for more bytes. The length is checked against maxFrame
// before anything else, so a hostile length never causes an allocation or a long wait.
func Next(buf []byte, maxFrame int) (typ byte, body []byte, n int, err error) {
	if len(buf) < 4 {
		return 0, nil, 0, ErrShort
	}
	l := binary.BigEndian.Uint32(buf)
	if l == 0 {
		return 0, nil, 0, ErrEmptyFrame
	}
	if uint64(l) > uint64(maxFrame) {
		return 0, nil, 0, fmt.Errorf("%w: len %d > max %d", ErrTooLarge, l, maxFrame)
	}
	end := 4 + int(l)
	if len(buf) < end {
		return 0, nil, 0, ErrShort
	}
	return buf[4], buf[5:end], end, nil
}

// AppendFrame appends a frame with the given type and body.
func AppendFrame(dst []byte, typ byte, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+1))
	dst = append(dst, typ)
	return append(dst, body...)
}

// beginFrame appends a header with a placeholder length; finishFrame fills it in.
func beginFrame(dst []byte, typ byte) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, typ)
	return dst, start
}

func finishFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// Hello is the body of a HELLO frame.
type Hello struct {
	Serial string `json:"serial,omitempty"`
	IMEI   string `json:"imei,omitempty"`
	ICCID  string `json:"iccid,omitempty"`
	Token  string `json:"token,omitempty"`
	FW     string `json:"fw,omitempty"`
}

// Identity is the device identity: the serial if present, else the IMEI.
func (h *Hello) Identity() string {
	if h.Serial != "" {
		return h.Serial
	}
	return h.IMEI
}

// MaxIdentity is the longest identity accepted (it must fit UDATA's u8 length).
const MaxIdentity = 255

// ParseHello decodes and validates a HELLO body.
func ParseHello(body []byte) (Hello, error) {
	var h Hello
	if !isObject(body) {
		return h, fmt.Errorf("%w: hello is not a JSON object", ErrMalformed)
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return h, fmt.Errorf("%w: hello: %v", ErrMalformed, err)
	}
	if h.Serial == "" && h.IMEI == "" {
		return h, fmt.Errorf("%w: hello needs serial or imei", ErrMalformed)
	}
	if h.IMEI != "" && !ValidIMEI(h.IMEI) {
		return h, fmt.Errorf("%w: imei %q is not 15 digits", ErrMalformed, h.IMEI)
	}
	if len(h.Identity()) > MaxIdentity {
		return h, fmt.Errorf("%w: identity longer than %d bytes", ErrMalformed, MaxIdentity)
	}
	return h, nil
}

// ValidIMEI reports whether s is an IMEI as the protocol carries it: exactly 15 digits.
func ValidIMEI(s string) bool {
	if len(s) != 15 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// AppendHello appends a HELLO frame.
func AppendHello(dst []byte, h *Hello) []byte {
	body, _ := json.Marshal(h) // a struct of strings cannot fail to marshal
	return AppendFrame(dst, TypeHello, body)
}

// Welcome is the body of a WELCOME frame.
type Welcome struct {
	Ack      string `json:"ack"`
	MaxFrame int    `json:"maxFrame"`
	LastSeq  uint64 `json:"lastSeq"`
}

// AppendWelcome appends a WELCOME frame.
func AppendWelcome(dst []byte, w *Welcome) []byte {
	dst, start := beginFrame(dst, TypeWelcome)
	dst = append(dst, `{"ack":`...)
	dst = jsontext.AppendQuoted(dst, w.Ack)
	dst = append(dst, `,"maxFrame":`...)
	dst = strconv.AppendInt(dst, int64(w.MaxFrame), 10)
	dst = append(dst, `,"lastSeq":`...)
	dst = strconv.AppendUint(dst, w.LastSeq, 10)
	dst = append(dst, '}')
	return finishFrame(dst, start)
}

// ParseWelcome decodes a WELCOME body.
func ParseWelcome(body []byte) (Welcome, error) {
	var w Welcome
	if err := json.Unmarshal(body, &w); err != nil {
		return w, fmt.Errorf("%w: welcome: %v", ErrMalformed, err)
	}
	return w, nil
}

// Data is a decoded DATA (or UDATA) frame. Records alias the frame body.
type Data struct {
	Seq     uint64
	Records [][]byte
}

// ParseData decodes a DATA body: seq, then one or more length-prefixed records, each a JSON
// object. Records are appended to recs (reuse it to avoid allocations) and alias body. Any
// malformed record makes the whole frame malformed.
func ParseData(body []byte, recs [][]byte) (seq uint64, out [][]byte, err error) {
	if len(body) < 8 {
		return 0, recs, fmt.Errorf("%w: data shorter than its seq", ErrMalformed)
	}
	seq = binary.BigEndian.Uint64(body)
	out, err = SplitRecords(body[8:], recs)
	return seq, out, err
}

// SplitRecords splits a records section into its records, checking that each is one JSON object.
func SplitRecords(b []byte, recs [][]byte) ([][]byte, error) {
	first := len(recs)
	for len(b) > 0 {
		if len(b) < 4 {
			return recs[:first], fmt.Errorf("%w: truncated record length", ErrMalformed)
		}
		rl := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(rl) > uint64(len(b)) {
			return recs[:first], fmt.Errorf("%w: record length %d exceeds frame", ErrMalformed, rl)
		}
		rec := b[:rl:rl]
		if !isObject(rec) {
			return recs[:first], fmt.Errorf("%w: record %d is not a JSON object", ErrMalformed, len(recs)-first)
		}
		recs = append(recs, rec)
		b = b[rl:]
	}
	if len(recs) == first {
		return recs, fmt.Errorf("%w: data holds no records", ErrMalformed)
	}
	return recs, nil
}

// isObject reports whether b is exactly one valid JSON object (surrounding whitespace allowed).
func isObject(b []byte) bool { return ValidObject(b) }

// AppendData appends a DATA frame.
func AppendData(dst []byte, seq uint64, records ...[]byte) []byte {
	dst, start := beginFrame(dst, TypeData)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = appendRecords(dst, records)
	return finishFrame(dst, start)
}

func appendRecords(dst []byte, records [][]byte) []byte {
	for _, r := range records {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(r)))
		dst = append(dst, r...)
	}
	return dst
}

// UData is a decoded UDATA datagram. Identity, Token and Records alias the datagram.
type UData struct {
	Identity []byte
	Token    []byte
	Seq      uint64
	Records  [][]byte
}

// ParseUData decodes a UDATA body (the bytes after the type byte).
func ParseUData(body []byte, recs [][]byte) (UData, error) {
	var u UData
	if len(body) < 1 {
		return u, fmt.Errorf("%w: udata truncated", ErrMalformed)
	}
	il := int(body[0])
	body = body[1:]
	if il == 0 || len(body) < il+1 {
		return u, fmt.Errorf("%w: udata identity", ErrMalformed)
	}
	u.Identity, body = body[:il:il], body[il:]
	tl := int(body[0])
	body = body[1:]
	if len(body) < tl+8 {
		return u, fmt.Errorf("%w: udata token or seq", ErrMalformed)
	}
	u.Token, body = body[:tl:tl], body[tl:]
	var err error
	u.Seq, u.Records, err = ParseData(body, recs)
	return u, err
}

// AppendUData appends a UDATA frame. Identity and token must be at most 255 bytes.
func AppendUData(dst []byte, identity, token string, seq uint64, records ...[]byte) []byte {
	dst, start := beginFrame(dst, TypeUData)
	dst = append(dst, byte(len(identity)))
	dst = append(dst, identity...)
	dst = append(dst, byte(len(token)))
	dst = append(dst, token...)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = appendRecords(dst, records)
	return finishFrame(dst, start)
}

// AppendAck appends an ACK frame for seq.
func AppendAck(dst []byte, seq uint64) []byte {
	dst = append(dst, 0, 0, 0, 9, TypeAck)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// ParseAck decodes an ACK body.
func ParseAck(body []byte) (uint64, error) {
	if len(body) != 8 {
		return 0, fmt.Errorf("%w: ack body is %d bytes, want 8", ErrMalformed, len(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// AppendError appends an ERROR frame.
func AppendError(dst []byte, code uint16, msg string) []byte {
	dst, start := beginFrame(dst, TypeError)
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = append(dst, msg...)
	return finishFrame(dst, start)
}

// ParseError decodes an ERROR body.
func ParseError(body []byte) (code uint16, msg string, err error) {
	if len(body) < 2 {
		return 0, "", fmt.Errorf("%w: error body too short", ErrMalformed)
	}
	return binary.BigEndian.Uint16(body), string(body[2:]), nil
}

// AppendCommand appends a COMMAND frame; obj must be one JSON object.
func AppendCommand(dst []byte, task uint64, obj []byte) []byte {
	dst, start := beginFrame(dst, TypeCommand)
	dst = binary.BigEndian.AppendUint64(dst, task)
	dst = append(dst, obj...)
	return finishFrame(dst, start)
}

// Result is a decoded RESULT body. Data aliases the body.
type Result struct {
	Task uint64
	Code byte
	Data []byte
}

// ParseResult decodes a RESULT body.
func ParseResult(body []byte) (Result, error) {
	if len(body) < 9 {
		return Result{}, fmt.Errorf("%w: result too short", ErrMalformed)
	}
	r := Result{Task: binary.BigEndian.Uint64(body), Code: body[8], Data: body[9:]}
	if r.Code > 1 || !isObject(r.Data) {
		return r, fmt.Errorf("%w: result code or data", ErrMalformed)
	}
	return r, nil
}

// AppendResult appends a RESULT frame.
func AppendResult(dst []byte, task uint64, code byte, obj []byte) []byte {
	dst, start := beginFrame(dst, TypeResult)
	dst = binary.BigEndian.AppendUint64(dst, task)
	dst = append(dst, code)
	dst = append(dst, obj...)
	return finishFrame(dst, start)
}
