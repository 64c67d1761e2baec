package native_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// jsonObject is the reference: encoding/json.Valid and an object at the top.
func jsonObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && json.Valid(b)
}

var validCases = []string{
	`{}`, ` {} `, `{"a":1}`, `{"a":-0.5e+10,"b":[1,2,{"c":null}],"d":"x\"y\\u00e9\n"}`, `{"a":true,"b":false}`,
	`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":"\x01"}`, `{"a":"\u12"}`, `{"a":"\q"}`,
	`{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{a:1}`, `[]`, `"x"`, `1`, `{}{}`, `{} x`, `{"a":tru}`, `{"a":nul}`,
	"{\"a\":\"\xff\xfe\"}", `{"a":[1,2,]}`, `{"a":[,]}`, `{"a":{"b":{}}}`, "\t{\r\n}\n", ``, ` `, `{`, `}`,
	`{"a":1}}`, `{"a":"b"`, `{"a":[}`, `{"a":-01}`, `{"a":0.0e-0}`, `{"a":1E+2}`,
	"{\"a\":" + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + "}",
	"{\"a\":" + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + "}",
}

func TestValidObjectAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range validCases {
		if got, want := native.ValidObject([]byte(c)), jsonObject([]byte(c)); got != want {
			t.Errorf("ValidObject(%.60q) = %v, want %v", c, got, want)
		}
	}
}

func FuzzValidObject(f *testing.F) {
	for _, c := range validCases {
		if len(c) < 200 {
			f.Add([]byte(c))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := native.ValidObject(b), jsonObject(b); got != want {
			t.Fatalf("ValidObject(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

func BenchmarkValidObject(b *testing.B) {
	rec := sampleRecord()
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	b.Run("native", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if !native.ValidObject(rec) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if !json.Valid(rec) {
				b.Fatal("invalid")
			}
		}
	})
}
