package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

func TestBasic(t *testing.T) {
	f := func(user, pass, want string) {
		t.Helper()
		b, err := auth.NewBasic(auth.BasicOptions{Username: user, Password: pass})
		if err != nil {
			t.Fatalf("NewBasic(%q, …) = %v", user, err)
		}
		r := &auth.Request{Method: "POST", URL: "https://example.com/in"}
		if err := b.Sign(context.Background(), r); err != nil {
			t.Fatalf("Sign = %v", err)
		}
		if got := r.HeaderValue("Authorization"); got != want {
			t.Errorf("Authorization for %q = %q, want %q", user, got, want)
		}
	}
	f("Aladdin", "open sesame", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") // RFC 7617 §2
	f("test", "123\u00a3", "Basic dGVzdDoxMjPCow==")                  // RFC 7617 §2.1 (UTF-8)
	f("token", "", "Basic dG9rZW46")
	f("", "key", "Basic OmtleQ==")
	f("user", "pa:ss:word", "Basic dXNlcjpwYTpzczp3b3Jk") // a colon is fine in the password
}

func TestBasicInvalid(t *testing.T) {
	f := func(user, pass, want string) {
		t.Helper()
		_, err := auth.NewBasic(auth.BasicOptions{Username: user, Password: pass})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("NewBasic(%q, …) = %v, want an error containing %q", user, err, want)
		}
		if pass != "" && strings.Contains(err.Error(), pass) {
			t.Errorf("NewBasic error %q contains the password", err)
		}
	}
	f("", "", "both empty")
	f("a:b", "secret-pass", "basic.username: must not contain ':'")
	f("a\nb", "secret-pass", "basic.username: must not contain control characters")
	f("a", "secret\x7fpass", "basic.password: must not contain control characters")
}

// TestBasicRetry signs the same request twice (a retry) over an Authorization header that is
// already there in another case: one Authorization header remains.
func TestBasicRetry(t *testing.T) {
	b, err := auth.NewBasic(auth.BasicOptions{Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Header: [][2]string{{"authorization", "Bearer stale"}, {"X-Other", "1"}}}
	for range 2 {
		if err := b.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if n := countHeader(r, "Authorization"); n != 1 || len(r.Header) != 2 {
		t.Fatalf("headers after two signatures = %q, want one Authorization and X-Other", r.Header)
	}
	if got := r.HeaderValue("Authorization"); got != "Basic dTpw" {
		t.Errorf("Authorization = %q, want %q", got, "Basic dTpw")
	}
}

func TestBasicRedacts(t *testing.T) {
	const pass = "hunter2-very-secret"
	o := auth.BasicOptions{Username: "alice", Password: pass}
	b, err := auth.NewBasic(o)
	if err != nil {
		t.Fatal(err)
	}
	assertNotShown(t, pass, o, b)
}

// assertNotShown checks that no way of printing or logging vs shows secret (or its base64).
func assertNotShown(t *testing.T, secret string, vs ...any) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	for _, v := range vs {
		log.Info("x", "v", v)
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			fmt.Fprintf(&logs, verb+"\n", v)
		}
	}
	for _, s := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))[:8]} {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("printed or logged options show %q:\n%s", s, logs.String())
		}
	}
}

func countHeader(r *auth.Request, name string) int {
	n := 0
	for _, h := range r.Header {
		if strings.EqualFold(h[0], name) {
			n++
		}
	}
	return n
}

func FuzzBasic(f *testing.F) {
	f.Add("Aladdin", "open sesame")
	f.Add("", "")
	f.Add("a:b", "c")
	f.Add("test", "123\u00a3")
	f.Add("\xff\xfe", "\x00")
	f.Fuzz(func(t *testing.T, user, pass string) {
		b, err := auth.NewBasic(auth.BasicOptions{Username: user, Password: pass})
		if err != nil {
			return // invalid credentials; TestBasicInvalid checks the messages
		}
		r := &auth.Request{}
		if err := b.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		v, ok := strings.CutPrefix(r.HeaderValue("Authorization"), "Basic ")
		if !ok {
			t.Fatalf("Authorization = %q", r.HeaderValue("Authorization"))
		}
		dec, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		u, p, _ := strings.Cut(string(dec), ":")
		if u != user || p != pass {
			t.Fatalf("decoded %q:%q, want %q:%q", u, p, user, pass)
		}
	})
}

func BenchmarkBasic(b *testing.B) {
	s, err := auth.NewBasic(auth.BasicOptions{Username: "user", Password: "pass"})
	if err != nil {
		b.Fatal(err)
	}
	body := batch500()
	hdr := make([][2]string, 0, 8)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := auth.Request{Method: "POST", URL: "https://example.com/in", Header: hdr[:0], Body: body}
		if err := s.Sign(context.Background(), &r); err != nil {
			b.Fatal(err)
		}
	}
}
