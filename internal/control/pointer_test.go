package control_test

import (
	"encoding/json"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/control"
)

func TestPointer(t *testing.T) {
	f := func(path, want string) {
		t.Helper()
		if got := control.Pointer(path); got != want {
			t.Errorf("Pointer(%q) = %q, want %q", path, got, want)
		}
	}
	f("", "")
	f(".", "")
	f("name", "/name")
	f(".batch.max_messages", "/batch/max_messages")
	f("sign.webhooks.secrets[1]", "/sign/webhooks/secrets/1")
	f(".success_codes[0]", "/success_codes/0")
	f("a[1][2].b", "/a/1/2/b")
	f(".headers.X-Api.Key", "/headers/X-Api.Key")
	f("headers.a/b~c", "/headers/a~1b~0c")
}

// The examples of RFC 7396, appendix A.
func TestMergePatch(t *testing.T) {
	f := func(target, patch, want string) {
		t.Helper()
		var tv, pv, wv any
		for _, x := range []struct {
			s string
			v *any
		}{{target, &tv}, {patch, &pv}, {want, &wv}} {
			if err := json.Unmarshal([]byte(x.s), x.v); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := json.Marshal(control.MergePatch(tv, pv))
		w, _ := json.Marshal(wv)
		if string(got) != string(w) {
			t.Errorf("MergePatch(%s, %s) = %s, want %s", target, patch, got, w)
		}
	}
	f(`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`)
	f(`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`)
	f(`{"a":"b"}`, `{"a":null}`, `{}`)
	f(`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`)
	f(`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`)
	f(`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`)
	f(`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`)
	f(`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`)
	f(`["a","b"]`, `["c","d"]`, `["c","d"]`)
	f(`{"a":"b"}`, `["c"]`, `["c"]`)
	f(`{"a":"foo"}`, `null`, `null`)
	f(`{"a":"foo"}`, `"bar"`, `"bar"`)
	f(`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`)
	f(`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`)
	f(`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`)
}
