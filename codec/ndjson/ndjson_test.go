package ndjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/ndjson"
)

func TestNext(t *testing.T) {
	f := func(in string, maxLine, scanned int, wantLine string, wantN int, wantErr error) {
		t.Helper()
		line, n, err := ndjson.Next([]byte(in), maxLine, scanned)
		if string(line) != wantLine || n != wantN || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("Next(%q, %d, %d) = %q, %d, %v, want %q, %d, %v", in, maxLine, scanned, line, n, err, wantLine, wantN, wantErr)
		}
	}
	f("", 8, 0, "", 0, ndjson.ErrShort)
	f("{}", 8, 0, "", 0, ndjson.ErrShort)
	f("{}\n", 8, 0, "{}", 3, nil)
	f("{}\r\n", 8, 0, "{}", 4, nil)
	f("{}\r\r\n", 8, 0, "{}\r", 5, nil) // only one '\r' belongs to the line ending
	f("\n{}\n", 8, 0, "", 1, nil)
	f("\r\n", 8, 0, "", 2, nil)
	f("{}\n{\"a\":1}\n", 8, 0, "{}", 3, nil)
	f("{}\n", 8, 2, "{}", 3, nil) // hint: the first two bytes hold no '\n'
	f("{}\n", 8, 99, "", 0, ndjson.ErrShort)
	f("{}\n", 8, -1, "{}", 3, nil)

	// maxLine 4: a line may hold 4 bytes, plus "\n" or "\r\n".
	f("abcd\n", 4, 0, "abcd", 5, nil)
	f("abcd\r\n", 4, 0, "abcd", 6, nil)
	f("abcd", 4, 0, "", 0, ndjson.ErrShort)
	f("abcd\r", 4, 0, "", 0, ndjson.ErrShort) // "\n" may still follow
	f("abcde", 4, 0, "", 0, ndjson.ErrTooLong)
	f("abcde\n", 4, 0, "", 0, ndjson.ErrTooLong)
	f("abcd\rx", 4, 0, "", 0, ndjson.ErrTooLong)
	f("abcde\r\n", 4, 0, "", 0, ndjson.ErrTooLong)
	f("abcdefgh"+strings.Repeat("x", 1<<20), 4, 0, "", 0, ndjson.ErrTooLong) // decided from 6 bytes
	f("ab\nabcdefgh", 4, 0, "ab", 3, nil)                                    // what follows is not looked at yet
}

func TestIdentity(t *testing.T) {
	f := func(line, field, want string, wantErr error) {
		t.Helper()
		id, err := ndjson.Identity([]byte(line), field, nil)
		if string(id) != want || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("Identity(%q, %q) = %q, %v, want %q, %v", line, field, id, err, want, wantErr)
		}
	}
	s := "serial"
	f(`{"serial":"SN1"}`, s, "SN1", nil)
	f(` { "serial" : "SN1" , "t" : 21.5 } `, s, "SN1", nil)
	f("\t{\"serial\":\"SN1\"}\r", s, "SN1", nil)
	f(`{"t":{"serial":"nested"},"serial":"SN2","a":[{"serial":"x"},[],{}]}`, s, "SN2", nil)
	f(`{"serial":12345}`, s, "12345", nil)
	f(`{"serial":-1.5e+3}`, s, "-1.5e+3", nil)
	f(`{"serial":"a","serial":"b"}`, s, "b", nil) // the last occurrence counts, as in encoding/json
	f(`{"serial":{},"serial":"b"}`, s, "b", nil)
	f(`{"serial":"b","serial":{}}`, s, "", ndjson.ErrIdentity)
	f(`{"ser\u0069al":"SN3"}`, s, "SN3", nil) // escaped key
	f(`{"serial\u0000":"SN3"}`, s, "", ndjson.ErrNoIdentity)
	f(`{"Serial":"SN3"}`, s, "", ndjson.ErrNoIdentity) // keys are case-sensitive
	f(`{"serial":"S\"N\\4\/\u00e9\ud83d\ude00"}`, s, "S\"N\\4/é😀", nil)
	f(`{"serial":"\ud83d"}`, s, "\ufffd", nil) // unpaired surrogate
	f("{\"serial\":\"a\xffb\"}", s, "a\ufffdb", nil)
	f(`{"serial":"x\"}"}`, s, `x"}`, nil)
	f(`{"k":"}\"{","serial":"SN5"}`, s, "SN5", nil)
	f(`{"serial":"`+strings.Repeat("a", 255)+`"}`, s, strings.Repeat("a", 255), nil)
	f(`{"serial":"`+strings.Repeat("a", 256)+`"}`, s, "", ndjson.ErrIdentity)
	f(`{"serial":""}`, s, "", ndjson.ErrIdentity)
	f(`{"serial":{"a":1}}`, s, "", ndjson.ErrIdentity)
	f(`{"serial":["a"]}`, s, "", ndjson.ErrIdentity)
	f(`{"serial":true}`, s, "", ndjson.ErrIdentity)
	f(`{"serial":null}`, s, "", ndjson.ErrIdentity)
	f(`{"t":1}`, s, "", ndjson.ErrNoIdentity)
	f(`{}`, s, "", ndjson.ErrNoIdentity)
	f(`[{"serial":"SN1"}]`, s, "", ndjson.ErrNotObject)
	f(`"serial"`, s, "", ndjson.ErrNotObject)
	f(`12`, s, "", ndjson.ErrNotObject)
	f(`null`, s, "", ndjson.ErrNotObject)
	f(``, s, "", ndjson.ErrBlank)
	f(" \t\r", s, "", ndjson.ErrBlank)
	f(`hello`, s, "", ndjson.ErrMalformed)
	f(`{"serial":"SN1"`, s, "", ndjson.ErrMalformed)
	f(`{"serial":"SN1"}}`, s, "", ndjson.ErrMalformed)
	f(`{"serial":"SN1"} {}`, s, "", ndjson.ErrMalformed)
	f(`{"serial":"SN1",}`, s, "", ndjson.ErrMalformed)
	f(`{"serial" "SN1"}`, s, "", ndjson.ErrMalformed)
	f(`{serial:"SN1"}`, s, "", ndjson.ErrMalformed)
	f(`{"serial":01}`, s, "", ndjson.ErrMalformed)
	f(`{"serial":1.}`, s, "", ndjson.ErrMalformed)
	f(`{"serial":"a\x"}`, s, "", ndjson.ErrMalformed)
	f("{\"serial\":\"a\tb\"}", s, "", ndjson.ErrMalformed) // raw control character
	f(`{"a":[1,2,]}`, s, "", ndjson.ErrMalformed)
	f(`{"a":[1 2]}`, s, "", ndjson.ErrMalformed)
	f(`{"a":{"b":1]}`, s, "", ndjson.ErrMalformed)
	f(`{"a":tru}`, s, "", ndjson.ErrMalformed)
	f(`{"a":nulll}`, s, "", ndjson.ErrMalformed)
	f(`{"a":-}`, s, "", ndjson.ErrMalformed)
	f(`{"a":1e}`, s, "", ndjson.ErrMalformed)

	f(`{"imei":"356938035643809"}`, "imei", "356938035643809", nil)
	f(`{"imei":356938035643809}`, "imei", "356938035643809", nil)
	f(`{"imei":"35693803564380"}`, "imei", "", ndjson.ErrIdentity)
	f(`{"imei":"35693803564380x"}`, "imei", "", ndjson.ErrIdentity)
	f(`{"imei":3.5693803564380e14}`, "imei", "", ndjson.ErrIdentity)
	f(`{"dev id":"D1"}`, "dev id", "D1", nil)
	f("{\"\xff\":\"D2\"}", "\ufffd", "D2", nil) // keys are compared unescaped, as encoding/json does
	f("{\"\xff\":\"D2\"}", "\xff", "", ndjson.ErrNoIdentity)
	f(`{"\u00e9":"D3"}`, "é", "D3", nil)
}

// Nesting deeper than encoding/json's limit is malformed, as json.Valid says.
func TestIdentityDepth(t *testing.T) {
	for _, depth := range []int{255, 256, 257, 9999, 10000, 10001} {
		// depth counts the top-level object.
		inner := strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1)
		line := []byte(`{"serial":"D","a":` + inner + `}`)
		_, err := ndjson.Identity(line, "serial", nil)
		if valid := json.Valid(line); (err == nil) != valid {
			t.Errorf("depth %d: Identity = %v, json.Valid = %v", depth, err, valid)
		}
		objs := []byte(strings.Repeat(`{"a":`, depth) + `1` + strings.Repeat("}", depth))
		_, err = ndjson.Identity(objs, "serial", nil)
		if want := json.Valid(objs); (err == ndjson.ErrNoIdentity) != want {
			t.Errorf("depth %d objects: Identity = %v, json.Valid = %v", depth, err, want)
		}
	}
}

// Escaped identities are appended to dst; plain ones alias the line and allocate nothing.
func TestIdentityAllocs(t *testing.T) {
	line := sampleLine()
	dst := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ndjson.Identity(line, "serial", dst[:0]); err != nil {
			t.Fatal(err)
		}
		if _, err := ndjson.Identity([]byte(`{"serial":"S\u004e1","x":[[[{"y":null}]]]}`), "serial", dst[:0]); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Identity allocates %v times per run, want 0", n)
	}
}

// oracle is Identity written with encoding/json.
func oracle(line []byte, field string) (string, error) {
	if len(bytes.Trim(line, " \t\r\n")) == 0 {
		return "", ndjson.ErrBlank
	}
	if !json.Valid(line) {
		return "", ndjson.ErrMalformed
	}
	if bytes.TrimLeft(line, " \t\r\n")[0] != '{' {
		return "", ndjson.ErrNotObject
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		panic(err)
	}
	v, ok := m[field]
	if !ok {
		return "", ndjson.ErrNoIdentity
	}
	var id string
	switch c := v[0]; {
	case c == '"':
		if err := json.Unmarshal(v, &id); err != nil {
			panic(err)
		}
	case c == '-' || (c >= '0' && c <= '9'):
		id = string(v)
	default:
		return "", ndjson.ErrIdentity
	}
	if id == "" || len(id) > ndjson.MaxIdentity || (field == "imei" && !ndjson.ValidIMEI([]byte(id))) {
		return "", ndjson.ErrIdentity
	}
	return id, nil
}

// lines feeds parts to Next as a connection would (a buffer that keeps what no line consumed, the
// scanned hint carried between reads) and returns the lines, and the error that ended the stream.
func lines(parts [][]byte, maxLine int) ([]string, error) {
	var buf, out = []byte(nil), []string(nil)
	scanned := 0
	for _, p := range parts {
		buf = append(buf, p...)
		for {
			line, n, err := ndjson.Next(buf, maxLine, scanned)
			if errors.Is(err, ndjson.ErrShort) {
				scanned = len(buf)
				break
			}
			if err != nil {
				return out, err
			}
			if len(line) > maxLine || bytes.IndexByte(line, '\n') >= 0 || n > len(buf) || n < len(line)+1 {
				panic("Next broke its contract")
			}
			out = append(out, string(line))
			buf, scanned = buf[n:], 0
		}
	}
	return out, nil
}

func validStream() []byte {
	return []byte("{\"serial\":\"A\",\"t\":21.5}\r\n\n" +
		"{\"serial\":\"B\",\"n\":{\"serial\":\"x\",\"a\":[1,\"\\\"\",{}]}}\n" +
		"[1]\n" +
		"{\"imei\":\"356938035643809\",\"serial\":7}\n" +
		"not json\n" +
		"{\"serial\":\"\\u0041\\ud83d\\ude00\"}\n")
}

// FuzzLines splits a stream at an arbitrary point and checks that the lines do not depend on it,
// and that Identity agrees with encoding/json on every line.
func FuzzLines(f *testing.F) {
	all := validStream()
	for i := 0; i <= len(all); i++ {
		f.Add(all, uint16(i), uint8(64))
	}
	f.Add([]byte("abcd\r\nabcde\r\n"), uint16(5), uint8(4))
	f.Add([]byte("abcd\rabcd\n"), uint16(5), uint8(4))
	f.Add([]byte("{\"\xff\":\"x\",\"\\ufffd\":1,\"a\":\"\xef\xbf\xbd\"}\n"), uint16(4), uint8(8))
	f.Add([]byte(`{"serial":"`+strings.Repeat("[", 300)+`"}`+"\n"), uint16(3), uint8(255))
	f.Add([]byte(`{"a":`+strings.Repeat("[", 300)+strings.Repeat("]", 300)+`,"serial":"s"}`+"\n"), uint16(0), uint8(255))
	f.Fuzz(func(t *testing.T, in []byte, split uint16, max uint8) {
		maxLine := 16 + int(max)*8
		s := int(split) % (len(in) + 1)
		whole, errW := lines([][]byte{in}, maxLine)
		parts, errP := lines([][]byte{in[:s], in[s:]}, maxLine)
		bytewise := make([][]byte, len(in))
		for i := range in {
			bytewise[i] = in[i : i+1]
		}
		single, errS := lines(bytewise, maxLine)
		if errW != errP || errW != errS || strings.Join(whole, "\n") != strings.Join(parts, "\n") ||
			strings.Join(whole, "\n") != strings.Join(single, "\n") || len(whole) != len(parts) || len(whole) != len(single) {
			t.Fatalf("split at %d changed the lines: %q/%v vs %q/%v vs bytewise %q/%v", s, whole, errW, parts, errP, single, errS)
		}
		for _, l := range whole {
			for _, field := range []string{"serial", "imei", "a", "\ufffd", "\xff"} {
				id, err := ndjson.Identity([]byte(l), field, nil)
				wantID, wantErr := oracle([]byte(l), field)
				if string(id) != wantID || err != wantErr {
					t.Fatalf("Identity(%q, %q) = %q, %v; encoding/json says %q, %v", l, field, id, err, wantID, wantErr)
				}
			}
		}
	})
}

func sampleLine() []byte {
	return []byte(`{"serial":"SN000123","ts":"2026-11-22T10:00:00.123Z","lat":52.520008,"lon":13.404954,` +
		`"speed":48.5,"heading":271,"ignition":true,"fuel":{"level":0.62,"rate":3.1},"tags":["a","b"],"t":21.5}`)
}

// BenchmarkLines splits and validates ≈200-byte lines and extracts their identity, as the
// NDJSON listener does for each line.
func BenchmarkLines(b *testing.B) {
	line := sampleLine()
	const perBuf = 64
	var buf []byte
	for i := 0; i < perBuf; i++ {
		buf = append(append(buf, line...), '\n')
	}
	dst := make([]byte, 0, 64)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for rest := buf; len(rest) > 0; {
			l, sz, err := ndjson.Next(rest, ndjson.DefaultMaxLine, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ndjson.Identity(l, ndjson.DefaultIdentityField, dst[:0]); err != nil {
				b.Fatal(err)
			}
			rest = rest[sz:]
			n++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/line")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkJSONValid is the baseline Identity replaces: json.Valid alone, no identity.
func BenchmarkJSONValid(b *testing.B) {
	line := sampleLine()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(line) {
			b.Fatal("invalid")
		}
	}
}
