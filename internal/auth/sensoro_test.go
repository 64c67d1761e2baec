package auth_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

const (
	sensoroAppID  = "9yCs1XmRya2T"          // the AppID of SENSORO's open API example
	sensoroNonce  = 1467018792599           // its X-ACCESS-NONCE, Unix milliseconds
	sensoroSecret = "YOURAPPSECRET"         // the placeholder of SENSORO's verification sample
	sensoroAppKey = "app-key-from-console!" // any AppKey
)

func sensoroClock() time.Time { return time.UnixMilli(sensoroNonce) }

// sensoroSignature recomputes X-ACCESS-SIGNATURE as SENSORO's "API authentication – body message
// signature" describes it: HMAC-SHA256 with AppSecret as key over
// X-ACCESS-NONCE + METHOD + complete URL + body, digested as (Node) base64.
func sensoroSignature(secret, nonce, method, url string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(nonce + strings.ToUpper(method) + url + string(body)))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestSensoro(t *testing.T) {
	s, err := auth.NewSensoro(auth.SensoroOptions{AppID: sensoroAppID, AppSecret: []byte(sensoroSecret), Now: sensoroClock})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"schName":"limjoe update test","customerData":"435553544f4d45525f444154415f313233343536","sn":"10610117C5A9D9DF"}`)
	f := func(method, url, signedMethod, signedURL string) {
		t.Helper()
		r := &auth.Request{Method: method, URL: url, Body: body}
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		want := [][2]string{
			{"X-ACCESS-ID", sensoroAppID},
			{"X-ACCESS-NONCE", "1467018792599"},
			{"X-ACCESS-SIGNATURE", sensoroSignature(sensoroSecret, "1467018792599", signedMethod, signedURL, body)},
		}
		for _, h := range want {
			if got := r.HeaderValue(h[0]); got != h[1] {
				t.Errorf("%s %s: %s = %q, want %q", method, url, h[0], got, h[1])
			}
		}
	}
	u := "https://iot.example.com/sensoro/webhook?route=7&sn=0117C9"
	f("POST", u, "POST", u)
	f("post", u, "POST", u)
	f("", u, "POST", u)   // the delivery client sends POST
	f("PUT", u, "PUT", u) // not what SENSORO sends, but signed as given
	f("POST", u+"#frag", "POST", u)
	f("POST", "https://iot.example.com/a%2Fb/c", "POST", "https://iot.example.com/a%2Fb/c") // escaped as sent
	f("POST", "HTTPS://IoT.Example.COM:8443/Hook?A=B", "POST", "https://iot.example.com:8443/Hook?A=B")
	f("POST", "https://iot.example.com", "POST", "https://iot.example.com/")
	f("POST", "https://iot.example.com?x=1#y", "POST", "https://iot.example.com/?x=1")
	f("POST", "https://user:p%40ss@iot.example.com/in", "POST", "https://iot.example.com/in")
	f("POST", "https://[2001:DB8::1]/in", "POST", "https://[2001:db8::1]/in")

	// A known answer (computed with Python's hmac), so that the helper and the signer cannot
	// drift together.
	r := &auth.Request{Method: "POST", URL: "http://iot-api.sensoro.com/developers/device/data", Body: body}
	if err := s.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if got, want := r.HeaderValue("X-ACCESS-SIGNATURE"), "vyLF2w3uGts91lIwo+e4cQqO950wT37Bn/+OU/YIs0A="; got != want {
		t.Errorf("X-ACCESS-SIGNATURE = %q, want %q", got, want)
	}
}

// TestSensoroRetry signs twice, a millisecond apart: each header once, with the new nonce.
func TestSensoroRetry(t *testing.T) {
	now := time.UnixMilli(sensoroNonce)
	s, err := auth.NewSensoro(auth.SensoroOptions{AppID: sensoroAppID, AppSecret: []byte(sensoroSecret), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Method: "POST", URL: "https://example.com/", Body: []byte(`{}`), Header: [][2]string{{"x-access-nonce", "0"}}}
	for range 2 {
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Millisecond)
	}
	if len(r.Header) != 3 {
		t.Fatalf("headers after two signatures = %q, want the three X-ACCESS headers once", r.Header)
	}
	if got := r.HeaderValue("X-ACCESS-NONCE"); got != "1467018792600" {
		t.Errorf("X-ACCESS-NONCE on retry = %q, want 1467018792600", got)
	}
	if got, want := r.HeaderValue("X-ACCESS-SIGNATURE"), sensoroSignature(sensoroSecret, "1467018792600", "POST", "https://example.com/", r.Body); got != want {
		t.Errorf("X-ACCESS-SIGNATURE on retry = %q, want %q", got, want)
	}
}

func TestSensoroOptions(t *testing.T) {
	_, err := auth.NewSensoro(auth.SensoroOptions{AppID: "a\nb"})
	if err == nil || !strings.Contains(err.Error(), "sensoro.app_id") || !strings.Contains(err.Error(), "sensoro.app_secret: required") {
		t.Errorf("NewSensoro(bad) = %v, want errors for app_id and app_secret", err)
	}
	if _, err := auth.NewSensoroSafeMode(auth.SensoroSafeModeOptions{}); err == nil {
		t.Error("NewSensoroSafeMode(no key) = nil error")
	}
	o := auth.SensoroOptions{AppID: sensoroAppID, AppSecret: []byte("sensoro-app-secret-123")}
	s, err := auth.NewSensoro(o)
	if err != nil {
		t.Fatal(err)
	}
	assertNotShown(t, "sensoro-app-secret-123", o, s)
	so := auth.SensoroSafeModeOptions{AppKey: []byte(sensoroAppKey)}
	sm, err := auth.NewSensoroSafeMode(so)
	if err != nil {
		t.Fatal(err)
	}
	assertNotShown(t, sensoroAppKey, so, sm)
}

// TestSensoroHTTP sends a safe-mode, signed request with net/http to a receiver that verifies it
// the way SENSORO's sample does (protocol://host + original URL, the body re-serialised by
// JSON.stringify, which a compact body survives unchanged) and then decrypts it.
func TestSensoroHTTP(t *testing.T) {
	var got []byte
	var verr error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var compact bytes.Buffer
		if err := json.Compact(&compact, body); err != nil || !bytes.Equal(compact.Bytes(), body) {
			verr = errors.New("body is not compact JSON")
			return
		}
		url := "http://" + req.Host + req.RequestURI
		want := sensoroSignature(sensoroSecret, req.Header.Get("X-ACCESS-NONCE"), req.Method, url, body)
		if req.Header.Get("X-ACCESS-SIGNATURE") != want || req.Header.Get("X-ACCESS-ID") != sensoroAppID {
			verr = errors.New("signature does not verify")
			return
		}
		got, verr = auth.DecryptSensoro([]byte(sensoroAppKey), body)
	}))
	defer srv.Close()

	chain := auth.Chain{newSafeMode(t), newSensoro(t)}
	r := &auth.Request{Method: "POST", URL: srv.URL + "/hook/sensoro?x=1", Body: batch500()}
	if err := chain.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	sendNetHTTP(t, r)
	if verr != nil {
		t.Fatalf("receiver: %v", verr)
	}
	if !bytes.Equal(got, batch500()) {
		t.Errorf("receiver decrypted %d bytes that differ from the batch", len(got))
	}
}

func newSensoro(t testing.TB) *auth.Sensoro {
	s, err := auth.NewSensoro(auth.SensoroOptions{AppID: sensoroAppID, AppSecret: []byte(sensoroSecret)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSafeMode(t testing.TB) *auth.SensoroSafeMode {
	s, err := auth.NewSensoroSafeMode(auth.SensoroSafeModeOptions{AppKey: []byte(sensoroAppKey)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSensoroSafeMode(t *testing.T) {
	sm := newSafeMode(t)
	plain := []byte(`[{"appId":"123456","sn":"0117C9XXXX","type":"text","data":{"temperature":21.5}}]`)
	orig := bytes.Clone(plain)
	r := &auth.Request{Method: "POST", URL: "https://example.com/", Body: plain, Header: [][2]string{{"Content-Type", "application/json"}}}
	if err := sm.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, orig) {
		t.Fatal("safe mode wrote into the original body")
	}
	if len(r.Header) != 1 {
		t.Errorf("safe mode changed the headers: %q", r.Header)
	}
	var msg map[string]string
	if err := json.Unmarshal(r.Body, &msg); err != nil || len(msg) != 1 || !strings.HasPrefix(string(r.Body), `{"encryptData":"`) {
		t.Fatalf("safe-mode body %s: want {\"encryptData\": string} (%v)", r.Body, err)
	}

	// The documented construction, independently: key SHA-256(AppKey), AES-256-GCM,
	// base64(12-byte nonce || ciphertext || 16-byte tag).
	sealed, err := base64.StdEncoding.DecodeString(msg["encryptData"])
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != 12+len(plain)+16 {
		t.Fatalf("sealed %d bytes, want 12 + %d + 16", len(sealed), len(plain))
	}
	key := sha256.Sum256([]byte(sensoroAppKey))
	block, _ := aes.NewCipher(key[:])
	gcm, _ := cipher.NewGCM(block)
	got, err := gcm.Open(nil, sealed[:12], sealed[12:], nil)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("independent AES-256-GCM open = %q, %v; want the plaintext", got, err)
	}

	got, err = auth.DecryptSensoro([]byte(sensoroAppKey), r.Body)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("DecryptSensoro = %q, %v; want the plaintext", got, err)
	}

	// A retry encrypts the attempt's body again, with a fresh nonce.
	r2 := &auth.Request{Body: plain}
	if err := sm.Sign(context.Background(), r2); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(r.Body, r2.Body) {
		t.Error("two encryptions of one body are equal: nonce reused")
	}
}

func TestSensoroSafeModeEmptyBody(t *testing.T) {
	r := &auth.Request{}
	if err := newSafeMode(t).Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got, err := auth.DecryptSensoro([]byte(sensoroAppKey), r.Body)
	if err != nil || len(got) != 0 {
		t.Fatalf("DecryptSensoro(empty body sealed) = %q, %v", got, err)
	}
}

func TestSensoroSafeModeEncoded(t *testing.T) {
	r := &auth.Request{Body: []byte{0x1f, 0x8b}, Header: [][2]string{{"content-encoding", "gzip"}}}
	if err := newSafeMode(t).Sign(context.Background(), r); !errors.Is(err, auth.ErrSensoroEncoded) {
		t.Errorf("Sign(gzip body) = %v, want ErrSensoroEncoded", err)
	}
}

// TestDecryptSensoroTampered flips every bit position class of the sealed data (nonce,
// ciphertext, tag), truncates it, and tries another key: each fails with ErrSensoroDecrypt.
func TestDecryptSensoroTampered(t *testing.T) {
	plain := []byte(`{"temperature":21.5}`)
	r := &auth.Request{Body: plain}
	if err := newSafeMode(t).Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	var msg struct{ EncryptData string }
	if err := json.Unmarshal(r.Body, &msg); err != nil {
		t.Fatal(err)
	}
	sealed, _ := base64.StdEncoding.DecodeString(msg.EncryptData)
	body := func(b []byte) []byte {
		return []byte(`{"encryptData":"` + base64.StdEncoding.EncodeToString(b) + `"}`)
	}
	f := func(name string, key, body []byte) {
		t.Helper()
		got, err := auth.DecryptSensoro(key, body)
		if !errors.Is(err, auth.ErrSensoroDecrypt) || got != nil {
			t.Errorf("%s: DecryptSensoro = %q, %v; want ErrSensoroDecrypt", name, got, err)
		}
		if err != nil && (strings.Contains(err.Error(), sensoroAppKey) || strings.Contains(err.Error(), string(plain))) {
			t.Errorf("%s: error %q shows the key or the plaintext", name, err)
		}
	}
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		f(fmt.Sprintf("bit flipped in byte %d", i), []byte(sensoroAppKey), body(b))
	}
	for _, n := range []int{0, 11, 12, 27, 28, len(sealed) - 1} {
		f("truncated", []byte(sensoroAppKey), body(sealed[:n]))
	}
	f("appended", []byte(sensoroAppKey), body(append(bytes.Clone(sealed), 0)))
	f("wrong key", []byte(sensoroAppKey+"x"), r.Body)
	f("empty key", nil, r.Body)
	f("not JSON", []byte(sensoroAppKey), []byte(msg.EncryptData))
	f("no encryptData", []byte(sensoroAppKey), []byte(`{"data":"x"}`))
	f("encryptData not a string", []byte(sensoroAppKey), []byte(`{"encryptData":42}`))
	f("not base64", []byte(sensoroAppKey), []byte(`{"encryptData":"@@@@"}`))
	f("JSON array", []byte(sensoroAppKey), []byte(`["encryptData"]`))

	if got, err := auth.DecryptSensoro([]byte(sensoroAppKey), body(sealed)); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("DecryptSensoro(untampered) = %q, %v", got, err)
	}
}

// TestSensoroChain checks the documented order: the signature covers the encrypted body.
func TestSensoroChain(t *testing.T) {
	s, err := auth.NewSensoro(auth.SensoroOptions{AppID: sensoroAppID, AppSecret: []byte(sensoroSecret), Now: sensoroClock})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Method: "POST", URL: "https://example.com/in", Body: []byte(`[{"a":1}]`)}
	if err := (auth.Chain{newSafeMode(t), s}).Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	want := sensoroSignature(sensoroSecret, "1467018792599", "POST", r.URL, r.Body)
	if !strings.HasPrefix(string(r.Body), `{"encryptData":`) || r.HeaderValue("X-ACCESS-SIGNATURE") != want {
		t.Errorf("chain safe mode → signature: body %s, signature %s; want the signature of the encrypted body", r.Body, r.HeaderValue("X-ACCESS-SIGNATURE"))
	}
}

func FuzzSensoro(f *testing.F) {
	f.Add([]byte(sensoroSecret), "POST", "https://example.com/a?b=c", []byte(`{"a":1}`), int64(sensoroNonce))
	f.Add([]byte{0}, "", "", []byte{}, int64(0))
	f.Add(bytes.Repeat([]byte("k"), 100), "pOsT", "http://h/#f#g", []byte("\xff"), int64(-1))
	f.Add([]byte("k"), "POST", "HTTPS://u@p@Host:1?q#f", []byte("{}"), int64(1))
	f.Add([]byte("s"), "GET", "https://example.com/"+strings.Repeat("p", 5000), []byte(nil), int64(1<<62))
	f.Fuzz(func(t *testing.T, secret []byte, method, url string, body []byte, ms int64) {
		s, err := auth.NewSensoro(auth.SensoroOptions{AppID: sensoroAppID, AppSecret: secret, Now: func() time.Time { return time.UnixMilli(ms) }})
		if err != nil {
			if len(secret) == 0 {
				return
			}
			t.Fatal(err)
		}
		r := &auth.Request{Method: method, URL: url, Body: body}
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		nonce := r.HeaderValue("X-ACCESS-NONCE")
		if nonce != strconv.FormatInt(ms, 10) {
			t.Fatalf("X-ACCESS-NONCE = %q, want %d", nonce, ms)
		}
		if method == "" {
			method = "POST"
		}
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(nonce + asciiUpper(method) + receivedURL(url)))
		m.Write(body)
		if got, want := r.HeaderValue("X-ACCESS-SIGNATURE"), base64.StdEncoding.EncodeToString(m.Sum(nil)); got != want {
			t.Fatalf("X-ACCESS-SIGNATURE = %s, want %s", got, want)
		}
	})
}

// receivedURL is raw as a receiver rebuilds it: protocol://host + request URI.
func receivedURL(raw string) string {
	raw, _, _ = strings.Cut(raw, "#")
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		end = i
	}
	authority, uri := rest[:end], rest[end:]
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = authority[i+1:]
	}
	if !strings.HasPrefix(uri, "/") {
		uri = "/" + uri
	}
	return asciiLower(scheme) + "://" + asciiLower(authority) + uri
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}

// asciiUpper is strings.ToUpper for ASCII letters only: an HTTP method is a token.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func FuzzSensoroSafeMode(f *testing.F) {
	f.Add([]byte(sensoroAppKey), []byte(`[{"a":1}]`))
	f.Add([]byte{0}, []byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 100), []byte("\x00\"\\</script>"))
	f.Fuzz(func(t *testing.T, key, body []byte) {
		sm, err := auth.NewSensoroSafeMode(auth.SensoroSafeModeOptions{AppKey: key})
		if err != nil {
			if len(key) == 0 {
				return
			}
			t.Fatal(err)
		}
		orig := bytes.Clone(body)
		r := &auth.Request{Body: body}
		if err := sm.Sign(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, orig) {
			t.Fatal("safe mode wrote into the original body")
		}
		if !json.Valid(r.Body) {
			t.Fatalf("safe-mode body is not JSON: %s", r.Body)
		}
		got, err := auth.DecryptSensoro(key, r.Body)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("DecryptSensoro(Sign(%q)) = %q, %v", body, got, err)
		}
	})
}

// FuzzDecryptSensoro feeds arbitrary keys and bodies, seeded with a valid body cut at every
// offset: DecryptSensoro returns an error or the plaintext, and never panics.
func FuzzDecryptSensoro(f *testing.F) {
	r := &auth.Request{Body: []byte(`[{"sn":"0117C9XXXX","data":{"battery":97}}]`)}
	if err := newSafeMode(f).Sign(context.Background(), r); err != nil {
		f.Fatal(err)
	}
	for i := range len(r.Body) + 1 {
		f.Add([]byte(sensoroAppKey), r.Body[:i])
	}
	f.Add([]byte{}, r.Body)
	f.Add([]byte(sensoroAppKey), []byte(`{"encryptData":null}`))
	f.Add([]byte(sensoroAppKey), []byte(`{"encryptData":"","encryptData":"AAAA"}`))
	f.Fuzz(func(t *testing.T, key, body []byte) {
		plain, err := auth.DecryptSensoro(key, body)
		if err != nil {
			if !errors.Is(err, auth.ErrSensoroDecrypt) || plain != nil {
				t.Fatalf("DecryptSensoro = %q, %v; want nil and an ErrSensoroDecrypt", plain, err)
			}
			return
		}
		if !bytes.Equal(key, []byte(sensoroAppKey)) {
			t.Fatalf("DecryptSensoro accepted a body under key %q", key)
		}
	})
}

func BenchmarkSensoro(b *testing.B) {
	body := batch500()
	b.Run("sign", func(b *testing.B) { benchSigner(b, newSensoro(b), body) })
	b.Run("safe-mode", func(b *testing.B) { benchSigner(b, newSafeMode(b), body) })
	b.Run("safe-mode+sign", func(b *testing.B) { benchSigner(b, auth.Chain{newSafeMode(b), newSensoro(b)}, body) })
	b.Run("decrypt", func(b *testing.B) {
		r := &auth.Request{Body: body}
		if err := newSafeMode(b).Sign(context.Background(), r); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := auth.DecryptSensoro([]byte(sensoroAppKey), r.Body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
