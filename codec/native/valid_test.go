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

// ValidObject is jsontext.ValidObject, which is tested and fuzzed there against encoding/json;
// these cases only check that DATA records get that validation.
var validCases = []string{
	`{}`, ` {"a":[1,{"b":null}],"c":"\u00e9"} `, `[]`, `"x"`, `1`, `{}{}`, `{"a":01}`, `{"a":"\x01"}`, "{\"a\":\"\xff\"}",
	"{\"a\":" + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + "}",
	"{\"a\":" + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + "}",
}

func TestValidObjectAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range validCases {
		if got, want := native.ValidObject([]byte(c)), jsonObject([]byte(c)); got != want {
			t.Errorf("ValidObject(%.60q) = %v, want %v", c, got, want)
		}
	}
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
