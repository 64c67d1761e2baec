package envelope_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
)

// ms is 2026-11-22T10:00:00.123Z in Unix milliseconds.
var ms = time.Date(2026, 11, 22, 10, 0, 0, 123e6, time.UTC).UnixMilli()

func TestAppendMsgID(t *testing.T) {
	f := func(device string, seq uint64, index int, want string) {
		t.Helper()
		got := string(envelope.AppendMsgID([]byte("x"), device, seq, index))
		if got != "x"+want {
			t.Errorf("AppendMsgID(%q, %d, %d) = %q, want %q", device, seq, index, got, "x"+want)
		}
	}
	f("SN1", 7, 0, "SN1-7-0")
	f("", 0, 0, "-0-0")
	f("356307042441013", 18446744073709551615, 499, "356307042441013-18446744073709551615-499")
}

func TestAppendEnvelope(t *testing.T) {
	f := func(m envelope.Message, attempt int, want string) {
		t.Helper()
		got := string(envelope.Append(nil, &m, attempt))
		if got != want {
			t.Errorf("AppendEnvelope(%+v, %d) =\n%s\nwant\n%s", m, attempt, got, want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("AppendEnvelope(%+v) is not valid JSON: %s", m, got)
		}
		if n := envelope.Size(&m); n < len(got) {
			t.Errorf("EnvelopeSize(%+v) = %d, below the real size %d", m, n, len(got))
		}
	}
	f(envelope.Message{
		Device: "SN1", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944500102198304826",
		Seq: 7, Index: 0, ReceivedAt: ms, Data: []byte(`{"t":21.5,"ok":true}`),
	}, 0, `{"msgId":"SN1-7-0","serial":"SN1","imei":"356307042441013","iccid":"8944500102198304826","seq":7,"index":0,"receivedAt":"2026-11-22T10:00:00.123Z","attempt":0,"data":{"t":21.5,"ok":true}}`)

	// Empty imei/iccid keep their keys; data keeps its bytes (spaces, key order).
	f(envelope.Message{
		Device: "SN2", Serial: "SN2", Seq: 1, Index: 3, ReceivedAt: 0,
		Data: []byte(`{ "b" : 1 , "a" : [1,2] }`),
	}, 2, `{"msgId":"SN2-1-3","serial":"SN2","imei":"","iccid":"","seq":1,"index":3,"receivedAt":"1970-01-01T00:00:00.000Z","attempt":2,"data":{ "b" : 1 , "a" : [1,2] }}`)

	// No serial: the identity is the IMEI.
	f(envelope.Message{
		Device: "356307042441013", IMEI: "356307042441013", Seq: 18446744073709551615, Index: 499,
		ReceivedAt: ms + 876, Data: []byte(`{}`),
	}, 1, `{"msgId":"356307042441013-18446744073709551615-499","serial":"","imei":"356307042441013","iccid":"","seq":18446744073709551615,"index":499,"receivedAt":"2026-11-22T10:00:00.999Z","attempt":1,"data":{}}`)

	// Escaping: quotes, backslash, control characters, invalid UTF-8,
	// U+2028; HTML characters stay as they are.
	f(envelope.Message{
		Device: "a\"b\\c", Serial: "a\"b\\c", IMEI: "\n\r\t\b\f\x00\x1f", ICCID: "x\xffy\u2028<&>é",
		Seq: 1, Index: 0, ReceivedAt: ms, Data: []byte(`{}`),
	}, 0, `{"msgId":"a\"b\\c-1-0","serial":"a\"b\\c","imei":"\n\r\t\b\f\u0000\u001f","iccid":"x\ufffdy\u2028<&>é","seq":1,"index":0,"receivedAt":"2026-11-22T10:00:00.123Z","attempt":0,"data":{}}`)

	// Missing data stays valid JSON.
	f(envelope.Message{Device: "d", Serial: "d", ReceivedAt: ms},
		0, `{"msgId":"d-0-0","serial":"d","imei":"","iccid":"","seq":0,"index":0,"receivedAt":"2026-11-22T10:00:00.123Z","attempt":0,"data":null}`)
}

func TestAppendTimestamp(t *testing.T) {
	f := func(ms int64, want string) {
		t.Helper()
		got := string(envelope.AppendTimestamp(nil, ms))
		if got != want {
			t.Errorf("AppendTimestamp(%d) = %q, want %q", ms, got, want)
		}
		if want2 := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00"); got != want2 {
			t.Errorf("AppendTimestamp(%d) = %q, time.Format gives %q", ms, got, want2)
		}
	}
	f(0, "1970-01-01T00:00:00.000Z")
	f(ms, "2026-11-22T10:00:00.123Z")
	f(1, "1970-01-01T00:00:00.001Z")
	f(-1, "1969-12-31T23:59:59.999Z")
	f(951782400000, "2000-02-29T00:00:00.000Z")
	f(253402300799999, "9999-12-31T23:59:59.999Z")
	f(253402300800000, "10000-01-01T00:00:00.000Z")
	f(-62135596800001, "0000-12-31T23:59:59.999Z")
	f(-62167219200001, "-0001-12-31T23:59:59.999Z")
}

// envelopeJSON mirrors the envelope for decoding with encoding/json.
type envelopeJSON struct {
	MsgID      string          `json:"msgId"`
	Serial     string          `json:"serial"`
	IMEI       *string         `json:"imei"`
	ICCID      *string         `json:"iccid"`
	Seq        uint64          `json:"seq"`
	Index      int             `json:"index"`
	ReceivedAt string          `json:"receivedAt"`
	Attempt    int             `json:"attempt"`
	Data       json.RawMessage `json:"data"`
}

// sanitize is what a string becomes after a trip through encoding/json.
func sanitize(t testing.TB, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkDecoded(t testing.TB, got []byte, m *envelope.Message, attempt int) {
	t.Helper()
	var e envelopeJSON
	dec := json.NewDecoder(bytes.NewReader(got))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decode %s: %v", got, err)
	}
	wantID := sanitize(t, m.Device) + "-" + strconv.FormatUint(m.Seq, 10) + "-" + strconv.Itoa(m.Index)
	if e.MsgID != wantID {
		t.Errorf("msgId = %q, want %q", e.MsgID, wantID)
	}
	if e.Serial != sanitize(t, m.Serial) {
		t.Errorf("serial = %q, want %q", e.Serial, sanitize(t, m.Serial))
	}
	if e.IMEI == nil || *e.IMEI != sanitize(t, m.IMEI) {
		t.Errorf("imei = %v, want %q", e.IMEI, m.IMEI)
	}
	if e.ICCID == nil || *e.ICCID != sanitize(t, m.ICCID) {
		t.Errorf("iccid = %v, want %q", e.ICCID, m.ICCID)
	}
	if e.Seq != m.Seq || e.Index != m.Index || e.Attempt != attempt {
		t.Errorf("seq, index, attempt = %d, %d, %d, want %d, %d, %d", e.Seq, e.Index, e.Attempt, m.Seq, m.Index, attempt)
	}
	rt, err := time.Parse(time.RFC3339Nano, e.ReceivedAt)
	if err != nil {
		t.Errorf("receivedAt %q: %v", e.ReceivedAt, err)
	} else if rt.UnixMilli() != m.ReceivedAt {
		t.Errorf("receivedAt = %q (%d ms), want %d ms", e.ReceivedAt, rt.UnixMilli(), m.ReceivedAt)
	}
	if !bytes.Equal(e.Data, m.Data) {
		t.Errorf("data = %s, want %s", e.Data, m.Data)
	}
}

func TestEnvelopeDecodes(t *testing.T) {
	msgs := []envelope.Message{
		{Device: "SN1", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944500102198304826", Seq: 7, ReceivedAt: ms, Data: []byte(`{"a":1}`)},
		{Device: "358\"\\\x01", IMEI: "358\"\\\x01", Seq: 1 << 63, Index: 12, ReceivedAt: ms + 1, Data: []byte(`{"s":"x\u00e9"}`)},
		{Device: "日本\xc3", Serial: "日本\xc3", Seq: 0, Index: 0, ReceivedAt: -5, Data: []byte(`{"nested":{"arr":[1,{"b":null}]}}`)},
	}
	for i := range msgs {
		checkDecoded(t, envelope.Append(nil, &msgs[i], i), &msgs[i], i)
	}
}

// TestEscapingMatchesEncodingJSON compares string escaping byte for byte with
// a json.Encoder that does not escape HTML.
func TestEscapingMatchesEncodingJSON(t *testing.T) {
	f := func(s string) {
		t.Helper()
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(map[string]string{"serial": s}); err != nil {
			t.Fatal(err)
		}
		m := envelope.Message{Serial: s}
		env := string(envelope.Append(nil, &m, 0))
		start := strings.Index(env, `"serial":`)
		end := strings.Index(env, `,"imei":`)
		got := "{" + env[start:end] + "}\n"
		if got != want.String() {
			t.Errorf("escape(%q) = %s, want %s", s, got, want.String())
		}
	}
	f("")
	f("plain-SN_1.2~")
	f("<script>&amp;</script>")
	f("\u2028\u2029")
	f("\xff\xfe\xc3\x28\xe2\x82")
	f(string([]byte{0, 1, 2, 0x1f, 0x7f, '"', '\\', '/'}))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	f(string(all))
}

func TestEnvelopeAllocs(t *testing.T) {
	msgs := benchMessages(1)
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = envelope.Append(buf[:0], &msgs[0], 3) }); n != 0 {
		t.Fatalf("AppendEnvelope: %v allocs, want 0", n)
	}
}

func FuzzEnvelope(f *testing.F) {
	f.Add("SN1", "SN1", "356307042441013", "8944500102198304826", uint64(7), 0, int64(1795341600123), 0, []byte(`{"t":1}`))
	f.Add("a\"b\\", "\x00\x1f\u2028", "\xff", "", uint64(0), 3, int64(-1), 2, []byte(`{}`))
	f.Add("", "", "", "", uint64(1<<63), -1, int64(1<<62), 1<<30, []byte(`{"a":[1,"\u00e9",{"b":null}]}`))
	f.Fuzz(func(t *testing.T, device, serial, imei, iccid string, seq uint64, index int, received int64, attempt int, data []byte) {
		// Data is validated upstream: only objects reach the envelope.
		data = bytes.TrimSpace(data)
		if !json.Valid(data) || len(data) == 0 || data[0] != '{' {
			data = []byte(`{}`)
		}
		if received < -62135596800000 || received > 253402300799999 {
			received %= 253402300799999 // keep receivedAt parseable as RFC 3339
			if received < 0 {
				received = -received
			}
		}
		m := envelope.Message{Device: device, Serial: serial, IMEI: imei, ICCID: iccid, Seq: seq, Index: index, ReceivedAt: received, Data: data}
		got := envelope.Append(nil, &m, attempt)
		if !json.Valid(got) {
			t.Fatalf("AppendEnvelope(%+v) is not valid JSON: %s", m, got)
		}
		if n := envelope.Size(&m); n < len(got) {
			t.Fatalf("EnvelopeSize = %d, below the real size %d", n, len(got))
		}
		checkDecoded(t, got, &m, attempt)
	})
}

// benchMessages returns n messages with ~200-byte records.
func benchMessages(n int) []envelope.Message {
	msgs := make([]envelope.Message, n)
	for i := range msgs {
		data := `{"ts":1795341600123,"lat":52.520008,"lon":13.404954,"alt":34.5,"speed":12.75,"heading":271,"sats":11,"hdop":0.9,"ignition":true,"battery":12.61,"temp":[21.5,22.0,21.75],"odometer":123456789,"io":{"d1":1,"d2":0}}`
		msgs[i] = envelope.Message{
			Device: "SN0001234567", Serial: "SN0001234567", IMEI: "356307042441013", ICCID: "8944500102198304826",
			Seq: uint64(1000 + i/10), Index: i % 10, ReceivedAt: ms + int64(i), Data: []byte(data),
		}
	}
	return msgs
}

func BenchmarkEnvelope(b *testing.B) {
	msgs := benchMessages(1)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(envelope.Append(nil, &msgs[0], 0))))
	for b.Loop() {
		buf = envelope.Append(buf[:0], &msgs[0], 1)
	}
}

func BenchmarkEnvelopeSize(b *testing.B) {
	msgs := benchMessages(1)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n += envelope.Size(&msgs[0])
	}
	_ = n
}
