package auth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

// RFC 4231 test case 2.
const (
	rfc4231Key    = "Jefe"
	rfc4231Data   = "what do ya want for nothing?"
	rfc4231SHA512 = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
	rfc4231SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
)

func TestHMACVectors(t *testing.T) {
	f := func(o auth.HMACOptions, header, want string) {
		t.Helper()
		s, err := auth.NewHMAC(o)
		if err != nil {
			t.Fatalf("NewHMAC(%v) = %v", o, err)
		}
		r := &auth.Request{Method: "POST", Body: []byte(rfc4231Data)}
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatalf("Sign = %v", err)
		}
		if got := r.HeaderValue(header); got != want {
			t.Errorf("%v: %s = %q, want %q", o, header, got, want)
		}
	}
	key := []byte(rfc4231Key)
	f(auth.HMACOptions{Key: key}, "hash-key", rfc4231SHA512)
	f(auth.HMACOptions{Key: key, Hash: "sha512", Encoding: "hex", Header: "X-Sig"}, "x-sig", rfc4231SHA512)
	f(auth.HMACOptions{Key: key, Hash: "sha256"}, "hash-key", rfc4231SHA256)
	f(auth.HMACOptions{Key: key, Encoding: "base64"}, "hash-key", hexToBase64(t, rfc4231SHA512))
	f(auth.HMACOptions{Key: key, Hash: "sha256", Encoding: "base64"}, "hash-key", hexToBase64(t, rfc4231SHA256))
}

func hexToBase64(t *testing.T, h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// TestHMACBeWhere sets BeWhere's pair: seed-userid and hash-key; a retry replaces both.
func TestHMACBeWhere(t *testing.T) {
	s, err := auth.NewHMAC(auth.HMACOptions{
		Key:     []byte("dealer-api-key"),
		Headers: [][2]string{{"seed-userid", "api-dealer-user@bewhere.com"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Body: []byte(`[{"deviceInfo":{"imei":"123"}}]`), Header: [][2]string{{"Hash-Key", "stale"}}}
	for range 2 {
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.Header) != 2 || countHeader(r, "hash-key") != 1 || countHeader(r, "seed-userid") != 1 {
		t.Fatalf("headers after two signatures = %q, want one hash-key and one seed-userid", r.Header)
	}
	want := hexMAC(sha512.New, "dealer-api-key", r.Body)
	if got := r.HeaderValue("hash-key"); got != want {
		t.Errorf("hash-key = %q, want %q", got, want)
	}
	if got := r.HeaderValue("seed-userid"); got != "api-dealer-user@bewhere.com" {
		t.Errorf("seed-userid = %q", got)
	}
}

func hexMAC(h func() hash.Hash, key string, body []byte) string {
	m := hmac.New(h, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestHMACInvalid(t *testing.T) {
	f := func(o auth.HMACOptions, want ...string) {
		t.Helper()
		_, err := auth.NewHMAC(o)
		if err == nil {
			t.Fatalf("NewHMAC(%v) = nil, want an error", o)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewHMAC(%v) = %q, want it to contain %q", o, err, w)
			}
		}
		if len(o.Key) > 0 && strings.Contains(err.Error(), string(o.Key)) {
			t.Errorf("error %q contains the key", err)
		}
		for _, h := range o.Headers {
			if h[1] != "" && strings.Contains(err.Error(), h[1]) {
				t.Errorf("error %q contains a header value", err)
			}
		}
	}
	f(auth.HMACOptions{}, "hmac.key: required")
	f(auth.HMACOptions{Key: []byte("k3y-value"), Hash: "md5", Encoding: "b32", Header: "bad header"},
		`hmac.hash: "md5"`, `hmac.encoding: "b32"`, `hmac.header: "bad header"`)
	f(auth.HMACOptions{Key: []byte("k3y-value"), Headers: [][2]string{{"seed-userid", "sec\r\nret"}, {"", "value-one"}, {"Hash-Key", "value-two"}}},
		`hmac.headers[0]: the value of "seed-userid"`, `hmac.headers[1]: "" is not a valid header name`, `hmac.headers[2]: "Hash-Key" is the signature header`)
}

func TestHMACRedacts(t *testing.T) {
	const key = "bewhere-api-key-0123456789"
	o := auth.HMACOptions{Key: []byte(key), Headers: [][2]string{{"X-Api-Key", "static-token-9876543210"}}}
	s, err := auth.NewHMAC(o)
	if err != nil {
		t.Fatal(err)
	}
	assertNotShown(t, key, o, s)
	assertNotShown(t, "static-token-9876543210", o, s)
}

// TestHMACConcurrent signs different bodies from many goroutines (run with -race): pooled
// states must not leak one body's hash into another's.
func TestHMACConcurrent(t *testing.T) {
	s, err := auth.NewHMAC(auth.HMACOptions{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				body := []byte(fmt.Sprintf(`[{"g":%d,"i":%d}]`, g, i))
				r := &auth.Request{Body: body}
				if err := s.Sign(context.Background(), r); err != nil {
					t.Error(err)
					return
				}
				if got, want := r.HeaderValue("hash-key"), hexMAC(sha512.New, "k", body); got != want {
					t.Errorf("hash-key of %s = %s, want %s", body, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzHMAC(f *testing.F) {
	f.Add([]byte(rfc4231Key), []byte(rfc4231Data), false, false)
	f.Add([]byte{0}, []byte{}, true, true)
	f.Add(make([]byte, 200), batch500()[:1000], true, false) // a key longer than the block size
	f.Fuzz(func(t *testing.T, key, body []byte, sha256Hash, b64 bool) {
		o := auth.HMACOptions{Key: key}
		newHash := sha512.New
		if sha256Hash {
			o.Hash, newHash = "sha256", sha256.New
		}
		if b64 {
			o.Encoding = "base64"
		}
		s, err := auth.NewHMAC(o)
		if err != nil {
			if len(key) == 0 {
				return
			}
			t.Fatalf("NewHMAC = %v", err)
		}
		r := &auth.Request{Body: body}
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		m := hmac.New(newHash, key)
		m.Write(body)
		want := hex.EncodeToString(m.Sum(nil))
		got := r.HeaderValue("hash-key")
		if b64 {
			raw, err := base64.StdEncoding.DecodeString(got)
			if err != nil {
				t.Fatal(err)
			}
			got = hex.EncodeToString(raw)
		}
		if got != want {
			t.Fatalf("hash-key = %s, want %s", got, want)
		}
	})
}

func BenchmarkHMAC(b *testing.B) {
	body := batch500()
	for _, o := range []auth.HMACOptions{
		{Key: []byte("api-key"), Hash: "sha512", Headers: [][2]string{{"seed-userid", "api-dealer-user@example.com"}}},
		{Key: []byte("api-key"), Hash: "sha256", Encoding: "base64"},
	} {
		s, err := auth.NewHMAC(o)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(o.Hash+"-"+orDefault(o.Encoding, "hex"), func(b *testing.B) {
			benchSigner(b, s, body)
		})
	}
	// The same work with a keyed HMAC built per attempt, to measure what the pool saves.
	b.Run("sha512-hex-unpooled", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		hdr := make([][2]string, 0, 8)
		for b.Loop() {
			r := auth.Request{Header: hdr[:0], Body: body}
			m := hmac.New(sha512.New, []byte("api-key"))
			m.Write(r.Body)
			r.SetHeader("hash-key", hex.EncodeToString(m.Sum(nil)))
		}
	})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// benchSigner measures s.Sign on one batch body with room for the headers, so that only the
// signer's own allocations are counted.
func benchSigner(b *testing.B, s auth.Signer, body []byte) {
	b.Helper()
	hdr := make([][2]string, 0, 8)
	r := new(auth.Request)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		*r = auth.Request{Method: "POST", URL: "https://ingest.example.com/v1/fleet?route=42", Header: hdr[:0], Body: body,
			Batch: auth.Batch{ID: "b_01J9Z3W8Q6R0000000000000042"}}
		if err := s.Sign(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

// batch500 is a realistic rendered batch, built once: a compact JSON array of 500 device
// messages, about 100 KB.
var batch500 = sync.OnceValue(func() []byte {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 500 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"id":"SN%08d-%d-0","device":"SN%08d","imei":"3520990%08d","seq":%d,"receivedAt":%d,"attempt":0,`+
			`"data":{"lat":%.6f,"lon":%.6f,"speed":%d,"heading":%d,"temp":%.1f,"battery":%d}}`,
			i%37, 1000+i, i%37, i%37, 1000+i, 1795000000000+int64(i)*1000,
			52.370216+float64(i)*1e-4, 4.895168-float64(i)*1e-4, i%120, (i*7)%360, 3.5+float64(i%20)/10, 100-i%100)
	}
	sb.WriteByte(']')
	return []byte(sb.String())
})
