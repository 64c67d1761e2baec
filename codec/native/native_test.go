package native_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The examples published in PROTOCOL.md.
func TestPublishedExamples(t *testing.T) {
	f := func(name string, got []byte, wantHex string) {
		t.Helper()
		if want := unhex(t, wantHex); !bytes.Equal(got, want) {
			t.Errorf("%s = % x, want % x", name, got, want)
		}
	}
	f("HELLO", native.AppendHello(nil, &native.Hello{Serial: "SN1"}),
		"00 00 00 11 01 7b 22 73 65 72 69 61 6c 22 3a 22 53 4e 31 22 7d")
	f("DATA", native.AppendData(nil, 1, []byte(`{"t":21.5}`)),
		"00 00 00 17 03 00 00 00 00 00 00 00 01 00 00 00 0a 7b 22 74 22 3a 32 31 2e 35 7d")
	f("ACK", native.AppendAck(nil, 1), "00 00 00 09 04 00 00 00 00 00 00 00 01")

	typ, body, n, err := native.Next(unhex(t, "00 00 00 17 03 00 00 00 00 00 00 00 01 00 00 00 0a 7b 22 74 22 3a 32 31 2e 35 7d"), native.DefaultMaxFrame)
	if err != nil || typ != native.TypeData || n != 27 {
		t.Fatalf("Next(DATA) = %x, %d, %v", typ, n, err)
	}
	seq, recs, err := native.ParseData(body, nil)
	if err != nil || seq != 1 || len(recs) != 1 || string(recs[0]) != `{"t":21.5}` {
		t.Fatalf("ParseData = %d, %q, %v", seq, recs, err)
	}
}

func TestNextErrors(t *testing.T) {
	f := func(in string, max int, want error) {
		t.Helper()
		_, _, n, err := native.Next(unhex(t, in), max)
		if !errors.Is(err, want) || n != 0 {
			t.Errorf("Next(%s) = %d, %v, want %v", in, n, err, want)
		}
	}
	f("", 100, native.ErrShort)
	f("00 00 00", 100, native.ErrShort)
	f("00 00 00 00 01", 100, native.ErrEmptyFrame)
	f("00 00 00 65 03", 100, native.ErrTooLarge) // 101 > 100, refused from the header alone
	f("ff ff ff ff", native.MaxFrameLimit, native.ErrTooLarge)
	f("00 00 00 05 03 00", 100, native.ErrShort)
}

func TestParseDataErrors(t *testing.T) {
	f := func(body []byte, wantErr bool) {
		t.Helper()
		_, _, err := native.ParseData(body, nil)
		if (err != nil) != wantErr {
			t.Errorf("ParseData(%q) err = %v, wantErr %v", body, err, wantErr)
		}
		if err != nil && !errors.Is(err, native.ErrMalformed) {
			t.Errorf("ParseData(%q) err = %v, want ErrMalformed", body, err)
		}
	}
	frame := func(recs ...string) []byte {
		var rs [][]byte
		for _, r := range recs {
			rs = append(rs, []byte(r))
		}
		return native.AppendData(nil, 7, rs...)[native.HeaderLen:]
	}
	f(frame(`{"a":1}`), false)
	f(frame(`{"a":1}`, ` {"b":[1,2]} `), false)
	f(frame(`[1,2]`), true)
	f(frame(`{"a":1}`, `42`), true)
	f(frame(`{"a":`), true)
	f(frame(`"x"`), true)
	f(frame(`{}`, ``), true)
	f(frame(), true)            // no records
	f([]byte{0, 0, 0, 1}, true) // shorter than seq
	bad := frame(`{"a":1}`)
	bad[8+3] = 200 // record length beyond the frame
	f(bad, true)
}

func TestHello(t *testing.T) {
	f := func(body string, wantID string, wantErr bool) {
		t.Helper()
		h, err := native.ParseHello([]byte(body))
		if (err != nil) != wantErr || (err == nil && h.Identity() != wantID) {
			t.Errorf("ParseHello(%q) = %q, %v; want %q, err %v", body, h.Identity(), err, wantID, wantErr)
		}
	}
	f(`{"serial":"SN1"}`, "SN1", false)
	f(`{"imei":"356938035643809","iccid":"8901"}`, "356938035643809", false)
	f(`{"serial":"SN1","imei":"356938035643809"}`, "SN1", false)
	f(`{"imei":"12345"}`, "", true)
	f(`{"iccid":"8901"}`, "", true)
	f(`[]`, "", true)
	f(`{"serial":1}`, "", true)
	f(`{"serial":"`+strings.Repeat("x", 256)+`"}`, "", true)
}

func TestUDataRoundTrip(t *testing.T) {
	b := native.AppendUData(nil, "SN9", "tok", 42, []byte(`{"v":1}`), []byte(`{"v":2}`))
	typ, body, n, err := native.Next(b, native.DefaultMaxFrame)
	if err != nil || typ != native.TypeUData || n != len(b) {
		t.Fatalf("Next = %x %d %v", typ, n, err)
	}
	u, err := native.ParseUData(body, nil)
	if err != nil || string(u.Identity) != "SN9" || string(u.Token) != "tok" || u.Seq != 42 || len(u.Records) != 2 {
		t.Fatalf("ParseUData = %+v, %v", u, err)
	}
	oneRecord := len(body) - 4 - len(`{"v":2}`)
	for i := 0; i < len(body); i++ { // a truncation is malformed unless it ends on a record boundary
		u, err := native.ParseUData(body[:i], nil)
		if err == nil && (i != oneRecord || len(u.Records) != 1) {
			t.Errorf("ParseUData(body[:%d]) = %d records, want an error", i, len(u.Records))
		}
	}
}

func TestControlFrames(t *testing.T) {
	w := native.AppendWelcome(nil, &native.Welcome{Ack: "persist", MaxFrame: 65536, LastSeq: 9})
	_, body, _, _ := native.Next(w, 1000)
	if got, err := native.ParseWelcome(body); err != nil || got.LastSeq != 9 || got.Ack != "persist" || got.MaxFrame != 65536 {
		t.Errorf("welcome round trip = %+v, %v", got, err)
	}
	e := native.AppendError(nil, native.CodeTooLarge, "frame too large")
	_, body, _, _ = native.Next(e, 1000)
	if code, msg, err := native.ParseError(body); code != 413 || msg != "frame too large" || err != nil {
		t.Errorf("error round trip = %d %q %v", code, msg, err)
	}
	r := native.AppendResult(nil, 5, 0, []byte(`{}`))
	_, body, _, _ = native.Next(r, 1000)
	if res, err := native.ParseResult(body); err != nil || res.Task != 5 || res.Code != 0 {
		t.Errorf("result round trip = %+v %v", res, err)
	}
}

// stream decodes frames from chunks the way an event loop sees them: bytes accumulate in a
// buffer, complete frames are consumed, the rest waits for the next chunk.
func stream(chunks [][]byte, max int) (frames []string, err error) {
	var buf []byte
	for _, c := range chunks {
		buf = append(buf, c...)
		for {
			typ, body, n, err := native.Next(buf, max)
			if errors.Is(err, native.ErrShort) {
				break
			}
			if err != nil {
				return frames, err
			}
			frames = append(frames, string(append([]byte{typ}, body...)))
			buf = buf[n:]
		}
	}
	if len(buf) != 0 {
		return frames, native.ErrShort
	}
	return frames, nil
}

func validStream() []byte {
	var b []byte
	b = native.AppendHello(b, &native.Hello{Serial: "SN1", IMEI: "356938035643809"})
	b = native.AppendData(b, 1, []byte(`{"t":21.5}`))
	b = native.AppendData(b, 2, []byte(`{"t":21.6,"ts":1700000000000}`), []byte(`{"a":[1,{"b":null}]}`))
	b = native.AppendFrame(b, native.TypePing, []byte("hi"))
	b = native.AppendResult(b, 3, 1, []byte(`{"err":"x"}`))
	return b
}

// Splitting a valid stream at every offset (twice) yields the same frames.
func TestSplitAtEveryOffset(t *testing.T) {
	all := validStream()
	want, err := stream([][]byte{all}, native.DefaultMaxFrame)
	if err != nil || len(want) != 5 {
		t.Fatalf("whole stream: %d frames, %v", len(want), err)
	}
	for i := 0; i <= len(all); i++ {
		for j := i; j <= len(all); j += 7 {
			got, err := stream([][]byte{all[:i], all[i:j], all[j:]}, native.DefaultMaxFrame)
			if err != nil || len(got) != len(want) {
				t.Fatalf("split at %d,%d: %d frames, %v", i, j, len(got), err)
			}
			for k := range got {
				if got[k] != want[k] {
					t.Fatalf("split at %d,%d: frame %d = %q, want %q", i, j, k, got[k], want[k])
				}
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	all := validStream()
	for i := 0; i <= len(all); i++ {
		f.Add(all[:i], uint16(i))
	}
	f.Add(native.AppendUData(nil, "SN", "", 1, []byte(`{}`)), uint16(3))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 3}, uint16(1))
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		s := int(split) % (len(in) + 1)
		whole, errW := stream([][]byte{in}, 4096)
		parts, errP := stream([][]byte{in[:s], in[s:]}, 4096)
		if (errW == nil) != (errP == nil) || len(whole) != len(parts) {
			t.Fatalf("split at %d changed the result: %d/%v vs %d/%v", s, len(whole), errW, len(parts), errP)
		}
		for _, fr := range whole {
			body := []byte(fr[1:])
			switch fr[0] {
			case native.TypeData:
				_, recs, err := native.ParseData(body, nil)
				if err == nil {
					for _, r := range recs {
						if len(r) == 0 || len(r) > len(body) {
							t.Fatalf("record %q out of bounds", r)
						}
					}
				}
			case native.TypeUData:
				_, _ = native.ParseUData(body, nil)
			case native.TypeHello:
				_, _ = native.ParseHello(body)
			case native.TypeResult:
				_, _ = native.ParseResult(body)
			}
		}
	})
}

func sampleRecord() []byte {
	return []byte(`{"ts":1700000000123,"lat":52.370216,"lon":4.895168,"speed":42.5,"heading":271,"alt":12.1,"sats":9,"battery":87,"temp":21.5,"ignition":true,"odometer":123456.7,"event":"position","fix":"3d"}`)
}

func BenchmarkDecodeData(b *testing.B) {
	rec := sampleRecord()
	var frames []byte
	const perBuf = 64
	for i := 0; i < perBuf; i++ {
		frames = native.AppendData(frames, uint64(i+1), rec)
	}
	recs := make([][]byte, 0, 8)
	b.SetBytes(int64(len(frames) / perBuf))
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i += perBuf {
		buf := frames
		for len(buf) > 0 {
			_, body, sz, err := native.Next(buf, native.DefaultMaxFrame)
			if err != nil {
				b.Fatal(err)
			}
			if _, recs, err = native.ParseData(body, recs[:0]); err != nil {
				b.Fatal(err)
			}
			buf = buf[sz:]
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// TestProtocolExamples checks the hex examples of PROTOCOL.md against the encoders: every
// example there is one of these frames, and every one of these frames is there.
func TestProtocolExamples(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	// An example is a run of indented lines of hex byte pairs.
	var examples []string
	var cur []string
	for _, line := range strings.Split(string(doc)+"\n", "\n") {
		fields := strings.Fields(line)
		isHex := strings.HasPrefix(line, "    ") && len(fields) > 0
		for _, f := range fields {
			if _, err := strconv.ParseUint(f, 16, 8); err != nil || len(f) != 2 {
				isHex = false
			}
		}
		if isHex {
			cur = append(cur, fields...)
			continue
		}
		if len(cur) > 0 {
			examples = append(examples, strings.Join(cur, " "))
			cur = nil
		}
	}
	want := map[string][]byte{
		"HELLO":   native.AppendHello(nil, &native.Hello{Serial: "SN1"}),
		"WELCOME": native.AppendWelcome(nil, &native.Welcome{Ack: "persist", MaxFrame: 65536}),
		"DATA":    native.AppendData(nil, 1, []byte(`{"t":21.5}`)),
		"ACK":     native.AppendAck(nil, 1),
		"UDATA":   native.AppendUData(nil, "SN1", "", 2, []byte(`{"t":21.5}`)),
		"ERROR":   native.AppendError(nil, native.CodeTooLarge, "frame too large"),
	}
	found := make(map[string]bool)
	for name, frame := range want {
		h := fmt.Sprintf("% x", frame)
		for _, ex := range examples {
			if ex == h {
				found[h] = true
			}
		}
		if !found[h] {
			t.Errorf("PROTOCOL.md has no example of %s %s", name, h)
		}
	}
	for _, ex := range examples {
		if !found[ex] {
			t.Errorf("PROTOCOL.md example %q is none of the frames the encoders make", ex)
		}
	}
}
