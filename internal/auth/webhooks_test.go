package auth_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

// The published Standard Webhooks test vector.
const (
	whSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	whID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	whTimestamp = 1614265330
	whBody      = `{"test": 2432232314}`
	whSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func unixClock(sec int64) func() time.Time { return func() time.Time { return time.Unix(sec, 0) } }

func TestWebhookVector(t *testing.T) {
	w, err := auth.NewWebhook(auth.WebhookOptions{Secrets: []string{whSecret}, Now: unixClock(whTimestamp)})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Method: "POST", Body: []byte(whBody), Batch: auth.Batch{ID: whID}}
	if err := w.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	for _, h := range [][2]string{{"webhook-id", whID}, {"webhook-timestamp", "1614265330"}, {"webhook-signature", whSignature}} {
		if got := r.HeaderValue(h[0]); got != h[1] {
			t.Errorf("%s = %q, want %q", h[0], got, h[1])
		}
	}
	if err := auth.VerifyWebhookAt(whSecret, r.HeaderValue, r.Body, time.Unix(whTimestamp+60, 0), 0); err != nil {
		t.Errorf("VerifyWebhookAt(signed vector) = %v", err)
	}
}

// TestWebhookRotation signs with two secrets: the header carries two signatures and a receiver
// holding either secret accepts the request; one holding neither does not.
func TestWebhookRotation(t *testing.T) {
	other := newWebhookSecret(t)
	w, err := auth.NewWebhook(auth.WebhookOptions{Secrets: []string{other, whSecret}, Now: unixClock(whTimestamp)})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Body: []byte(whBody), Batch: auth.Batch{ID: whID}}
	if err := w.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	sigs := strings.Split(r.HeaderValue("webhook-signature"), " ")
	if len(sigs) != 2 || sigs[1] != whSignature || !strings.HasPrefix(sigs[0], "v1,") {
		t.Fatalf("webhook-signature = %q, want two v1 signatures, the second %q", sigs, whSignature)
	}
	now := time.Unix(whTimestamp, 0)
	for _, s := range []string{other, whSecret} {
		if err := auth.VerifyWebhookAt(s, r.HeaderValue, r.Body, now, 0); err != nil {
			t.Errorf("VerifyWebhookAt with one of the secrets = %v", err)
		}
	}
	if err := auth.VerifyWebhookAt(newWebhookSecret(t), r.HeaderValue, r.Body, now, 0); !errors.Is(err, auth.ErrWebhookSignature) {
		t.Errorf("VerifyWebhookAt with another secret = %v, want ErrWebhookSignature", err)
	}
}

func newWebhookSecret(t testing.TB) string {
	key := make([]byte, 32)
	rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// TestWebhookRetry signs the same request again later: the three headers are replaced, the id
// stays, the timestamp and signature follow the attempt.
func TestWebhookRetry(t *testing.T) {
	now := int64(whTimestamp)
	w, err := auth.NewWebhook(auth.WebhookOptions{Secrets: []string{whSecret}, Now: func() time.Time { return time.Unix(now, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Body: []byte(whBody), Batch: auth.Batch{ID: whID}, Header: [][2]string{{"Content-Type", "application/json"}}}
	if err := w.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	first := r.HeaderValue("webhook-signature")
	now += 30
	if err := w.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if len(r.Header) != 4 {
		t.Fatalf("headers after a retry = %q, want Content-Type and one of each webhook header", r.Header)
	}
	if got := r.HeaderValue("webhook-id"); got != whID {
		t.Errorf("webhook-id on retry = %q, want %q", got, whID)
	}
	if got := r.HeaderValue("webhook-timestamp"); got != strconv.FormatInt(now, 10) {
		t.Errorf("webhook-timestamp on retry = %q, want %d", got, now)
	}
	if r.HeaderValue("webhook-signature") == first {
		t.Errorf("webhook-signature did not change with the timestamp")
	}
	if err := auth.VerifyWebhookAt(whSecret, r.HeaderValue, r.Body, time.Unix(now, 0), 0); err != nil {
		t.Errorf("VerifyWebhookAt(retry) = %v", err)
	}
}

func TestWebhookBatchID(t *testing.T) {
	w, err := auth.NewWebhook(auth.WebhookOptions{Secrets: []string{whSecret}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "batch.1"} {
		if err := w.Sign(context.Background(), &auth.Request{Batch: auth.Batch{ID: id}}); !errors.Is(err, auth.ErrWebhookID) {
			t.Errorf("Sign(batch %q) = %v, want ErrWebhookID", id, err)
		}
	}
}

func TestWebhookVerifyRejects(t *testing.T) {
	hdr := map[string]string{"webhook-id": whID, "webhook-timestamp": "1614265330", "webhook-signature": whSignature}
	now := time.Unix(whTimestamp, 0)
	f := func(name string, edit func(h map[string]string, body *string, now *time.Time), want error) {
		t.Helper()
		h := make(map[string]string)
		for k, v := range hdr {
			h[k] = v
		}
		body, at := whBody, now
		edit(h, &body, &at)
		err := auth.VerifyWebhookAt(whSecret, func(n string) string { return h[n] }, []byte(body), at, 0)
		if !errors.Is(err, want) {
			t.Errorf("%s: VerifyWebhookAt = %v, want %v", name, err, want)
		}
	}
	f("valid", func(map[string]string, *string, *time.Time) {}, nil)
	f("body changed", func(_ map[string]string, b *string, _ *time.Time) { *b = `{"test": 2432232315}` }, auth.ErrWebhookSignature)
	f("id changed", func(h map[string]string, _ *string, _ *time.Time) { h["webhook-id"] = "msg_other" }, auth.ErrWebhookSignature)
	f("only v1a", func(h map[string]string, _ *string, _ *time.Time) {
		h["webhook-signature"] = "v1a," + strings.TrimPrefix(whSignature, "v1,")
	}, auth.ErrWebhookSignature)
	f("among others", func(h map[string]string, _ *string, _ *time.Time) {
		h["webhook-signature"] = "v1,bm9wZQ== v1a,x " + whSignature
	}, nil)
	f("too old", func(_ map[string]string, _ *string, at *time.Time) { *at = at.Add(5*time.Minute + time.Second) }, auth.ErrWebhookTimestamp)
	f("too new", func(_ map[string]string, _ *string, at *time.Time) { *at = at.Add(-5*time.Minute - time.Second) }, auth.ErrWebhookTimestamp)
	f("edge of tolerance", func(_ map[string]string, _ *string, at *time.Time) { *at = at.Add(5 * time.Minute) }, nil)
	f("missing id", func(h map[string]string, _ *string, _ *time.Time) { delete(h, "webhook-id") }, auth.ErrWebhookHeaders)
	f("milliseconds", func(h map[string]string, _ *string, _ *time.Time) { h["webhook-timestamp"] = "1614265330000" }, auth.ErrWebhookTimestamp)
	f("leading zero", func(h map[string]string, _ *string, _ *time.Time) { h["webhook-timestamp"] = "01614265330" }, auth.ErrWebhookHeaders)
	f("not a number", func(h map[string]string, _ *string, _ *time.Time) { h["webhook-timestamp"] = "soon" }, auth.ErrWebhookHeaders)
}

func TestParseWebhookSecret(t *testing.T) {
	f := func(s string, wantLen int) {
		t.Helper()
		key, err := auth.ParseWebhookSecret(s)
		if wantLen < 0 {
			if !errors.Is(err, auth.ErrWebhookSecret) {
				t.Errorf("ParseWebhookSecret(%q) = %v, want ErrWebhookSecret", s, err)
			}
			if len(s) > 12 && strings.Contains(err.Error(), s[6:]) {
				t.Errorf("error %q contains the secret", err)
			}
			return
		}
		if err != nil || len(key) != wantLen {
			t.Errorf("ParseWebhookSecret(%q) = %d bytes, %v; want %d bytes", s, len(key), err, wantLen)
		}
	}
	f(whSecret, 24)
	f("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 64)), 64)
	f("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", -1)                           // no prefix
	f("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", -1)                      // an asymmetric secret key
	f("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", -1)                     // not base64
	f("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", -1)                      // truncated
	f("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 23)), -1) // too short
	f("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 65)), -1) // too long
	f("whsec_", -1)
	f("", -1)
}

func TestWebhookOptions(t *testing.T) {
	if _, err := auth.NewWebhook(auth.WebhookOptions{}); err == nil {
		t.Error("NewWebhook(no secrets) = nil error")
	}
	bad := "whsec_c2VjcmV0LWJ1dC10b28tc2hvcnQ=" // "secret-but-too-short"
	_, err := auth.NewWebhook(auth.WebhookOptions{Secrets: []string{whSecret, bad}})
	if !errors.Is(err, auth.ErrWebhookSecret) || !strings.Contains(err.Error(), "webhook.secrets[1]") {
		t.Errorf("NewWebhook(one bad secret) = %v, want ErrWebhookSecret at webhook.secrets[1]", err)
	}
	o := auth.WebhookOptions{Secrets: []string{whSecret}}
	w, err := auth.NewWebhook(o)
	if err != nil {
		t.Fatal(err)
	}
	assertNotShown(t, whSecret[6:], o, w)
}

// TestWebhookHTTP sends a signed request over HTTP to a receiver that verifies it with
// VerifyWebhook and net/http's headers.
func TestWebhookHTTP(t *testing.T) {
	var verr error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		verr = auth.VerifyWebhook(whSecret, req.Header.Get, body)
	}))
	defer srv.Close()

	s, err := auth.NewWebhook(auth.WebhookOptions{Secrets: []string{whSecret}})
	if err != nil {
		t.Fatal(err)
	}
	r := &auth.Request{Method: "POST", URL: srv.URL, Body: batch500(), Batch: auth.Batch{ID: "b_42"}}
	if err := s.Sign(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	sendNetHTTP(t, r)
	if verr != nil {
		t.Errorf("receiver: VerifyWebhook = %v", verr)
	}
}

// sendNetHTTP makes r with net/http and waits for the response.
func sendNetHTTP(t *testing.T, r *auth.Request) {
	t.Helper()
	req, err := http.NewRequest(r.Method, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range r.Header {
		req.Header.Add(h[0], h[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func FuzzParseWebhookSecret(f *testing.F) {
	f.Add(whSecret)
	for i := range len(whSecret) {
		f.Add(whSecret[:i])
	}
	f.Add("whsec_" + strings.Repeat("A", 88))
	f.Add("whsec_\n\r====")
	f.Fuzz(func(t *testing.T, s string) {
		key, err := auth.ParseWebhookSecret(s)
		if err != nil {
			if !errors.Is(err, auth.ErrWebhookSecret) {
				t.Fatalf("ParseWebhookSecret(%q) = %v, not an ErrWebhookSecret", s, err)
			}
			return
		}
		if len(key) < 24 || len(key) > 64 || "whsec_"+base64.StdEncoding.EncodeToString(key) != s {
			t.Fatalf("ParseWebhookSecret(%q) = %x: not the canonical encoding of 24 to 64 bytes", s, key)
		}
	})
}

func FuzzWebhook(f *testing.F) {
	f.Add(whID, []byte(whBody), int64(whTimestamp), uint8(0))
	f.Add("b", []byte{}, int64(0), uint8(1))
	f.Add("x y", []byte("\x00\xff"), int64(-1), uint8(2))
	f.Fuzz(func(t *testing.T, id string, body []byte, ts int64, nsecrets uint8) {
		secrets := []string{whSecret, "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{nsecrets}, 32)),
			"whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))}[:1+nsecrets%3]
		w, err := auth.NewWebhook(auth.WebhookOptions{Secrets: secrets, Now: unixClock(ts)})
		if err != nil {
			t.Fatal(err)
		}
		r := &auth.Request{Body: body, Batch: auth.Batch{ID: id}}
		err = w.Sign(context.Background(), r)
		if id == "" || strings.Contains(id, ".") {
			if !errors.Is(err, auth.ErrWebhookID) {
				t.Fatalf("Sign(id %q) = %v, want ErrWebhookID", id, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if n := len(strings.Split(r.HeaderValue("webhook-signature"), " ")); n != len(secrets) {
			t.Fatalf("%d signatures for %d secrets", n, len(secrets))
		}
		for _, s := range secrets {
			if err := auth.VerifyWebhookAt(s, r.HeaderValue, body, time.Unix(ts, 0), 0); err != nil {
				t.Fatalf("VerifyWebhookAt(id %q, ts %d) = %v", id, ts, err)
			}
		}
		if len(body) > 0 {
			tampered := bytes.Clone(body)
			tampered[len(tampered)/2] ^= 1
			if err := auth.VerifyWebhookAt(secrets[0], r.HeaderValue, tampered, time.Unix(ts, 0), 0); !errors.Is(err, auth.ErrWebhookSignature) {
				t.Fatalf("VerifyWebhookAt(tampered body) = %v", err)
			}
		}
	})
}

func BenchmarkWebhook(b *testing.B) {
	body := batch500()
	for _, n := range []int{1, 2} {
		secrets := []string{whSecret, "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))}[:n]
		w, err := auth.NewWebhook(auth.WebhookOptions{Secrets: secrets})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("secrets="+strconv.Itoa(n), func(b *testing.B) { benchSigner(b, w, body) })
	}
}
