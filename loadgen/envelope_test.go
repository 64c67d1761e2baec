package loadgen_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// scanned is an EnvelopeRef with owned strings, comparable with ==.
type scanned struct {
	MsgID, Serial, IMEI, ICCID, ReceivedAt string
	Seq                                    uint64
	Index, Attempt                         int
	Data                                   string
	SentAt                                 int64
	HasSentAt                              bool
}

func own(refs []loadgen.EnvelopeRef) []scanned {
	out := make([]scanned, len(refs))
	for i, e := range refs {
		out[i] = scanned{MsgID: string(e.MsgID), Serial: string(e.Serial), IMEI: string(e.IMEI),
			ICCID: string(e.ICCID), ReceivedAt: string(e.ReceivedAt), Seq: e.Seq, Index: e.Index,
			Attempt: e.Attempt, Data: string(e.Data), SentAt: e.SentAt, HasSentAt: e.HasSentAt}
	}
	return out
}

func scan(body string) ([]scanned, error) {
	sc := loadgen.BatchScanner{SentField: loadgen.DefaultSentField}
	refs, err := sc.Scan(nil, []byte(body))
	return own(refs), err
}

// The relay's own encoder (codec/envelope) is what the sink reads in production.
func TestScanRelayEnvelopes(t *testing.T) {
	msgs := []envelope.Message{
		{Device: "SN1", Serial: "SN1", IMEI: "356938035643809", ICCID: "8931", Seq: 7, Index: 0,
			ReceivedAt: time.Date(2026, 11, 22, 10, 0, 0, 123e6, time.UTC).UnixMilli(),
			Data:       []byte(`{"sentAt":1795346400000000,"t":21.5}`)},
		{Device: "a\"b\\c\u00e9\u2028\x01", Serial: "a\"b\\c\u00e9\u2028\x01", Seq: 1<<64 - 1, Index: 65535,
			Data: []byte(`{"nested":{"sentAt":1},"sentAt":-5}`)},
		{Device: "356938035643809", IMEI: "356938035643809", Seq: 1, Index: 2, Data: nil},
		{Device: "bad\xffutf8", Serial: "bad\xffutf8", Seq: 2, Data: []byte(`{"sentAt":1.5}`)},
	}
	body := []byte{'['}
	for i := range msgs {
		if i > 0 {
			body = append(body, ',')
		}
		body = envelope.Append(body, &msgs[i], i)
	}
	body = append(body, ']')
	got, err := scan(string(body))
	if err != nil {
		t.Fatalf("Scan(%s): %v", body, err)
	}
	want := []scanned{
		{MsgID: "SN1-7-0", Serial: "SN1", IMEI: "356938035643809", ICCID: "8931", ReceivedAt: "2026-11-22T10:00:00.123Z",
			Seq: 7, Data: `{"sentAt":1795346400000000,"t":21.5}`, SentAt: 1795346400000000, HasSentAt: true},
		{MsgID: "a\"b\\c\u00e9\u2028\x01-18446744073709551615-65535", Serial: "a\"b\\c\u00e9\u2028\x01",
			ReceivedAt: "1970-01-01T00:00:00.000Z", Seq: 1<<64 - 1, Index: 65535, Attempt: 1,
			Data: `{"nested":{"sentAt":1},"sentAt":-5}`, SentAt: -5, HasSentAt: true},
		{MsgID: "356938035643809-1-2", IMEI: "356938035643809", ReceivedAt: "1970-01-01T00:00:00.000Z",
			Seq: 1, Index: 2, Attempt: 2, Data: "null"},
		{MsgID: "bad\ufffdutf8-2-0", Serial: "bad\ufffdutf8", ReceivedAt: "1970-01-01T00:00:00.000Z",
			Seq: 2, Attempt: 3, Data: `{"sentAt":1.5}`},
	}
	if len(got) != len(want) {
		t.Fatalf("Scan = %d envelopes, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("envelope %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestScanValid(t *testing.T) {
	f := func(body string, want ...scanned) {
		t.Helper()
		got, err := scan(body)
		if err != nil {
			t.Errorf("Scan(%q): %v", body, err)
			return
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Scan(%q) = %+v, want %+v", body, got, want)
		}
	}
	f(`[]`)
	f(" \t\r\n[ \n ] \n")
	f(`[{"serial":"A","seq":1,"index":0,"data":{}}]`, scanned{Serial: "A", Seq: 1, Data: "{}"})
	// whitespace everywhere, fields in any order, unknown members of every kind skipped
	f(" [ { \"data\" : { \"x\" : [ 1 , { } , [ ] ] , \"sentAt\" : 12 } , \"x\":[true,false,null,-0.5e+3,\"}\"] ,"+
		"\"index\" : 3 , \"attempt\":2, \"seq\" : 9 , \"imei\" : \"356938035643809\" , \"serial\":\"\" } , "+
		"{\"seq\":10,\"serial\":\"B\",\"index\":0,\"data\":[1,2],\"y\":{\"a\":{\"b\":[]}}} ] ",
		scanned{IMEI: "356938035643809", Seq: 9, Index: 3, Attempt: 2,
			Data: "{ \"x\" : [ 1 , { } , [ ] ] , \"sentAt\" : 12 }", SentAt: 12, HasSentAt: true},
		scanned{Serial: "B", Seq: 10, Data: "[1,2]"})
	// escapes in keys and values, surrogate pairs, lone surrogates
	f(`[{"ser\u0069al":"\u00e9\ud83d\ude00\ud800x\/\t","s\u0065q":1,"index":0,"data":{"sent\u0041t":3}}]`,
		scanned{Serial: "é😀\ufffdx/\t", Seq: 1, Data: `{"sent\u0041t":3}`, SentAt: 3, HasSentAt: true})
	// sentAt: nested ones ignored, last one wins, non-integers are no send time
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":{"sentAt":1},"sentAt":2,"sentAt":3}}]`,
		scanned{Serial: "A", Seq: 1, Data: `{"a":{"sentAt":1},"sentAt":2,"sentAt":3}`, SentAt: 3, HasSentAt: true})
	f(`[{"serial":"A","seq":1,"index":0,"data":{"sentAt":2,"sentAt":"3"}}]`,
		scanned{Serial: "A", Seq: 1, Data: `{"sentAt":2,"sentAt":"3"}`})
	f(`[{"serial":"A","seq":1,"index":0,"data":{"sentAt":1e3}}]`,
		scanned{Serial: "A", Seq: 1, Data: `{"sentAt":1e3}`})
	f(`[{"serial":"A","seq":1,"index":0,"data":{"sentAt":-9223372036854775808}}]`,
		scanned{Serial: "A", Seq: 1, Data: `{"sentAt":-9223372036854775808}`, SentAt: math.MinInt64, HasSentAt: true})
	f(`[{"serial":"A","seq":1,"index":0,"data":{"sentAt":9223372036854775808}}]`,
		scanned{Serial: "A", Seq: 1, Data: `{"sentAt":9223372036854775808}`})
	// the last of repeated keys wins; null strings are empty
	f(`[{"serial":"A","serial":"B","seq":1,"seq":2,"index":0,"data":{"sentAt":1},"data":7,"iccid":null}]`,
		scanned{Serial: "B", Seq: 2, Data: "7"})
	// a member of the wrong type or range is no error when a later one of that name replaces it
	f(`[{"serial":1,"serial":"A","seq":"1","seq":18446744073709551616,"seq":2,"index":true,"index":0,"data":{}}]`,
		scanned{Serial: "A", Seq: 2, Data: "{}"})
}

func TestScanBad(t *testing.T) {
	f := func(body, wantErr string) {
		t.Helper()
		sc := loadgen.BatchScanner{SentField: "sentAt"}
		prev := []loadgen.EnvelopeRef{{Seq: 99}}
		got, err := sc.Scan(prev, []byte(body))
		if !errors.Is(err, loadgen.ErrBadBatch) {
			t.Errorf("Scan(%q) error = %v, want ErrBadBatch", body, err)
			return
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Errorf("Scan(%q) error = %q, want it to mention %q", body, err, wantErr)
		}
		if len(got) != 1 || got[0].Seq != 99 {
			t.Errorf("Scan(%q) changed dst to %d elements", body, len(got))
		}
	}
	const ok = `{"serial":"A","seq":1,"index":0,"data":{}}`
	f(``, "not a JSON array")
	f(`{}`, "not a JSON array")
	f(`null`, "not a JSON array")
	f(`[`, "not an object")
	f(`[`+ok, "expected ',' or ']'")
	f(`[`+ok+`,]`, "not an object")
	f(`[`+ok+`]x`, "after the batch array")
	f(`[`+ok+`][]`, "after the batch array")
	f(`[1]`, "not an object")
	f(`[null]`, "not an object")
	f(`[{}]`, "no seq")
	// missing fields
	f(`[{"serial":"A","index":0,"data":{}}]`, "no seq")
	f(`[{"serial":"A","seq":1,"data":{}}]`, "no index")
	f(`[{"serial":"A","seq":1,"index":0}]`, "no data")
	f(`[{"serial":"","imei":"","seq":1,"index":0,"data":{}}]`, "neither serial nor imei")
	f(`[{"seq":1,"index":0,"data":{}}]`, "neither serial nor imei")
	f(`[{"serial":"A","seq":null,"index":0,"data":{}}]`, "no seq")
	// wrong types and ranges
	f(`[{"serial":1,"seq":1,"index":0,"data":{}}]`, "serial is not a string")
	f(`[{"serial":"A","seq":"1","index":0,"data":{}}]`, "seq is not an unsigned integer")
	f(`[{"serial":"A","seq":-1,"index":0,"data":{}}]`, "seq is not an unsigned integer")
	f(`[{"serial":"A","seq":1.0,"index":0,"data":{}}]`, "seq is not an unsigned integer")
	f(`[{"serial":"A","seq":1e2,"index":0,"data":{}}]`, "seq is not an unsigned integer")
	f(`[{"serial":"A","seq":18446744073709551616,"index":0,"data":{}}]`, "seq is out of range")
	f(`[{"serial":"A","seq":1,"index":9223372036854775808,"data":{}}]`, "index is out of range")
	f(`[{"serial":"A","seq":1,"index":0,"attempt":true,"data":{}}]`, "attempt is not an unsigned integer")
	f(`[{"serial":"A","seq":1,"seq":"2","index":0,"data":{}}]`, "seq is not an unsigned integer")
	// JSON syntax, also inside data and skipped members
	f(`[{"serial":"A","seq":01,"index":0,"data":{}}]`, "leading zero")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":01}}]`, "expected ',' or '}'")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":[1,]}}]`, "expected a value")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":1,}}]`, "expected a member name")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a" 1}}]`, "expected ':'")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":tru}}]`, "invalid literal")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":-}}]`, "invalid number")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":1.}}]`, "invalid number")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":1e}}]`, "invalid number")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":"\x"}}]`, "invalid escape")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":"\u12G4"}}]`, "invalid \\u escape")
	f("[{\"serial\":\"A\x01\",\"seq\":1,\"index\":0,\"data\":{}}]", "control character")
	f(`[{"serial":"A,"seq":1,"index":0,"data":{}}]`, "expected ',' or '}'")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":"}]`, "unterminated string")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":[}]}]`, "expected a value")
	f(`[{"serial":"A","seq":1,"index":0,"x":{"a":[}]}]`, "expected a value")
	f(`[{"serial":"A","seq":1,"index":0,"data":{"a":[1}}]`, "expected ',' or ']' after an array element")
	f(`[{"serial":"A","seq":1,"index":0,"data":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}]`,
		"nested too deeply")
}

// The nesting limit is encoding/json's: 10000 levels, the batch array included.
func TestScanDepthLimit(t *testing.T) {
	for _, depth := range []int{9997, 9998} { // + batch array + envelope + data object
		body := `[{"serial":"A","seq":1,"index":0,"data":{"a":` + strings.Repeat("[", depth) +
			strings.Repeat("]", depth) + `}}]`
		_, err := scan(body)
		var v any
		jerr := json.Unmarshal([]byte(body), &v)
		if (err == nil) != (jerr == nil) {
			t.Errorf("depth %d: Scan error %v, encoding/json error %v", depth, err, jerr)
		}
	}
}

// reference decodes a batch with encoding/json under the scanner's rules (exact keys, the last of
// repeated keys wins, null counts as absent).
func reference(body []byte, sentField string) ([]scanned, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(body, &elems); err != nil {
		return nil, err
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '[' {
		return nil, errors.New("not an array")
	}
	out := []scanned{}
	for _, el := range elems {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(el, &m); err != nil || m == nil {
			return nil, errors.New("not an object")
		}
		var e scanned
		str := func(key string, dst *string) error {
			v, ok := m[key]
			if !ok || string(v) == "null" {
				return nil
			}
			if v[0] != '"' {
				return errors.New(key + " is not a string")
			}
			return json.Unmarshal(v, dst)
		}
		num := func(key string, max uint64, dst *uint64) (bool, error) {
			v, ok := m[key]
			if !ok || string(v) == "null" {
				return false, nil
			}
			if err := json.Unmarshal(v, dst); err != nil {
				return false, err
			}
			if *dst > max {
				return false, errors.New(key + " out of range")
			}
			return true, nil
		}
		var seq, index, attempt uint64
		hasSeq, err1 := num("seq", math.MaxUint64, &seq)
		hasIndex, err2 := num("index", math.MaxInt, &index)
		_, err3 := num("attempt", math.MaxInt, &attempt)
		if err := errors.Join(err1, err2, err3, str("msgId", &e.MsgID), str("serial", &e.Serial),
			str("imei", &e.IMEI), str("iccid", &e.ICCID), str("receivedAt", &e.ReceivedAt)); err != nil {
			return nil, err
		}
		data, hasData := m["data"]
		if !hasSeq || !hasIndex || !hasData || (e.Serial == "" && e.IMEI == "") {
			return nil, errors.New("missing field")
		}
		e.Seq, e.Index, e.Attempt, e.Data = seq, int(index), int(attempt), string(data)
		if data[0] == '{' {
			var dm map[string]json.RawMessage
			if err := json.Unmarshal(data, &dm); err != nil {
				return nil, err
			}
			if v, ok := dm[sentField]; ok {
				if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
					e.SentAt, e.HasSentAt = n, true
				}
			}
		}
		out = append(out, e)
	}
	return out, nil
}

func FuzzBatchScanner(f *testing.F) {
	valid := []string{
		`[{"msgId":"SN1-7-0","serial":"SN1","imei":"356938035643809","iccid":"8931","seq":7,"index":0,` +
			`"receivedAt":"2026-11-22T10:00:00.123Z","attempt":0,"data":{"sentAt":1795346400000000,"t":21.5}}]`,
		`[{"serial":"A\"\u00e9\ud83d\ude00","seq":1,"index":0,"data":{"a":[1,{"b":null}],"sentAt":-3}},` +
			` {"imei":"356938035643809","seq":2,"index":1,"attempt":4,"data":null,"x":[true,false,1.5e-3]}]`,
		` [ ] `,
	}
	for _, s := range valid {
		f.Add([]byte(s))
		for i := range len(s) { // every truncation, as a peer that hangs up mid-body sends
			f.Add([]byte(s[:i]))
		}
	}
	f.Add([]byte(`[{"serial":"A","seq":1,"index":0,"data":{"sent\u0041t":1,"sentAt":2.0}}]`))
	f.Add([]byte("[{\"serial\":\"\xff\",\"seq\":1,\"index\":0,\"data\":{}}]"))
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		var sc loadgen.BatchScanner
		sc.SentField = "sentAt"
		refs, err := sc.Scan(nil, body)
		if !bytes.Equal(body, orig) {
			t.Fatalf("Scan modified its input")
		}
		got := own(refs)
		if err == nil && !json.Valid(body) {
			t.Fatalf("Scan accepted invalid JSON %q: %+v", body, got)
		}
		want, rerr := reference(body, "sentAt")
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Scan(%q) error = %v, encoding/json error = %v", body, err, rerr)
		}
		if err != nil {
			if !errors.Is(err, loadgen.ErrBadBatch) || len(refs) != 0 {
				t.Fatalf("Scan(%q) = %d envelopes, %v: want none and ErrBadBatch", body, len(refs), err)
			}
			return
		}
		if len(got) != len(want) {
			t.Fatalf("Scan(%q) = %d envelopes, encoding/json %d", body, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("Scan(%q)[%d] = %+v, encoding/json %+v", body, i, got[i], want[i])
			}
		}
		// A second scan with the same scanner (reused buffers) gives the same result.
		refs2, err := sc.Scan(refs[:0], body)
		if err != nil || fmt.Sprint(own(refs2)) != fmt.Sprint(want) {
			t.Fatalf("second Scan(%q) = %+v, %v", body, own(refs2), err)
		}
	})
}

// benchBatch is a batch of n envelopes as the relay sends them, with loadgen's sensor records:
// 50 devices, one record per frame, round r holding every device's next frames.
func benchBatch(n, r int) []byte {
	body := []byte{'['}
	for i := range n {
		if i > 0 {
			body = append(body, ',')
		}
		dev := fmt.Sprintf("SN%05d", i%50)
		m := envelope.Message{Device: dev, Serial: dev, IMEI: "356938035643809", ICCID: "8931000000000000000",
			Seq: uint64(r*(n/50+1) + i/50 + 1), Index: 0, ReceivedAt: 1795346400123,
			Data: fmt.Appendf(nil, `{"sentAt":%d,"battery":87,"interval":60,"temperature":21.53,"humidity":48.2,`+
				`"light":310.4,"magnetic":{"x":0.123,"y":-0.456,"z":0.789},"lonlat":[4.912345,52.371234],"customer":"loadgen"}`,
				1795346400000000+int64(i))}
		body = envelope.Append(body, &m, 0)
	}
	return append(body, ']')
}

func BenchmarkBatchScanner(b *testing.B) {
	const n = 500
	body := benchBatch(n, 0)
	sc := loadgen.BatchScanner{SentField: loadgen.DefaultSentField}
	refs := make([]loadgen.EnvelopeRef, 0, n)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if refs, err = sc.Scan(refs[:0], body); err != nil || len(refs) != n {
			b.Fatal(len(refs), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}

// For comparison: what the sink cost with encoding/json.
func BenchmarkBatchEncodingJSON(b *testing.B) {
	const n = 500
	body := benchBatch(n, 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var batch []loadgen.Envelope
		if err := json.Unmarshal(body, &batch); err != nil || len(batch) != n {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}
