package auth_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

const (
	azAccount = "fleetstore"
	// Azurite's well-known development key: public, nothing secret.
	azKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// azClock is a settable clock for renewal tests.
type azClock struct{ ns atomic.Int64 }

func newAzClock(t time.Time) *azClock {
	c := &azClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *azClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *azClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// azServiceSASSig recomputes a service SAS signature as Azure Storage does, from the token's
// parameters, with the string-to-sign that "Create a service SAS" (Microsoft Learn) documents
// for version 2020-12-06 and later.
func azServiceSASSig(t testing.TB, key, account, container string, q url.Values) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	stringToSign := strings.Join([]string{
		q.Get("sp"),                          // signedPermissions
		q.Get("st"),                          // signedStart
		q.Get("se"),                          // signedExpiry
		"/blob/" + account + "/" + container, // canonicalizedResource
		q.Get("si"),                          // signedIdentifier
		q.Get("sip"),                         // signedIP
		q.Get("spr"),                         // signedProtocol
		q.Get("sv"),                          // signedVersion
		q.Get("sr"),                          // signedResource
		q.Get("snapshot"),                    // signedSnapshotTime
		q.Get("ses"),                         // signedEncryptionScope
		q.Get("rscc"),                        // Cache-Control
		q.Get("rscd"),                        // Content-Disposition
		q.Get("rsce"),                        // Content-Encoding
		q.Get("rscl"),                        // Content-Language
		q.Get("rsct"),                        // Content-Type
	}, "\n")
	m := hmac.New(sha256.New, k)
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

var azBatch = auth.Batch{ID: "01HRB6Q4", Time: time.Date(2024, 3, 5, 14, 3, 12, 457e6, time.UTC)}

func azSign(t testing.TB, s auth.Signer, rawURL string, b auth.Batch) auth.Request {
	t.Helper()
	r := auth.Request{Method: "POST", URL: rawURL, Body: []byte(`[{"a":1}]`), Batch: b,
		Header: [][2]string{{"Content-Type", "application/json"}}}
	if err := s.Sign(context.Background(), &r); err != nil {
		t.Fatalf("Sign(%s): %v", rawURL, err)
	}
	return r
}

func TestAzureBlobGeneratedSAS(t *testing.T) {
	clock := newAzClock(time.Date(2024, 3, 5, 14, 5, 0, 0, time.UTC))
	s, err := auth.NewAzureBlob(auth.AzureBlobOptions{Account: azAccount, AccountKey: azKey, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := func(rawURL, container, wantPath string) {
		t.Helper()
		r := azSign(t, s, rawURL, azBatch)
		if r.Method != "PUT" {
			t.Errorf("Method = %s, want PUT", r.Method)
		}
		if got := r.HeaderValue("x-ms-blob-type"); got != "BlockBlob" {
			t.Errorf("x-ms-blob-type = %q", got)
		}
		if got := r.HeaderValue("x-ms-version"); got != auth.AzureStorageVersion {
			t.Errorf("x-ms-version = %q", got)
		}
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		if u.EscapedPath() != wantPath {
			t.Errorf("path = %s, want %s", u.EscapedPath(), wantPath)
		}
		q := u.Query()
		for k, want := range map[string]string{"sv": "2022-11-02", "sr": "c", "sp": "cw", "se": "2024-03-05T15:05:00Z"} {
			if got := q.Get(k); got != want {
				t.Errorf("%s = %q, want %q (URL %s)", k, got, want, r.URL)
			}
		}
		if q.Has("st") || q.Has("spr") || q.Has("sip") || q.Has("si") {
			t.Errorf("unexpected SAS fields in %s", r.URL)
		}
		if got, want := q.Get("sig"), azServiceSASSig(t, azKey, azAccount, container, q); got != want {
			t.Errorf("sig = %s, recomputed %s", got, want)
		}
	}
	f("https://fleetstore.blob.core.windows.net/telemetry", "telemetry",
		"/telemetry/2024/03/05/20240305T140312.457Z_01HRB6Q4.json")
	f("https://FleetStore.blob.core.windows.net:443/telemetry/fleet%20a/in/", "telemetry",
		"/telemetry/fleet%20a/in/2024/03/05/20240305T140312.457Z_01HRB6Q4.json")
	// Path-style (Azurite): the first segment is the account.
	f("http://127.0.0.1:10000/fleetstore/telemetry/x", "telemetry",
		"/fleetstore/telemetry/x/2024/03/05/20240305T140312.457Z_01HRB6Q4.json")

	r := auth.Request{URL: "https://fleetstore.blob.core.windows.net/", Batch: azBatch}
	if err := s.Sign(context.Background(), &r); err == nil || strings.Contains(err.Error(), azKey) {
		t.Errorf("Sign without a container = %v, want an error without the key", err)
	}
}

// TestAzureBlobRetry: every attempt of a batch PUTs the same blob, whenever it runs and across a
// token renewal; another batch gets another blob.
func TestAzureBlobRetry(t *testing.T) {
	clock := newAzClock(time.Date(2024, 3, 5, 14, 5, 0, 0, time.UTC))
	s, err := auth.NewAzureBlob(auth.AzureBlobOptions{Account: azAccount, AccountKey: azKey, TTL: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const base = "https://fleetstore.blob.core.windows.net/telemetry/in?timeout=30"
	pathOf := func(r auth.Request) (string, url.Values) {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		return u.EscapedPath(), u.Query()
	}
	p1, q1 := pathOf(azSign(t, s, base, azBatch))
	if q1.Get("timeout") != "30" {
		t.Errorf("the route URL's own query is lost: %v", q1)
	}

	clock.Advance(47 * time.Minute) // 13 of 60 minutes left: the token is kept
	p2, q2 := pathOf(azSign(t, s, base, azBatch))
	if p2 != p1 || q2.Encode() != q1.Encode() {
		t.Errorf("retry after 47m: %s?%s, first %s?%s", p2, q2.Encode(), p1, q1.Encode())
	}

	clock.Advance(2 * time.Minute) // 11 minutes left, less than a fifth: renewed
	p3, q3 := pathOf(azSign(t, s, base, azBatch))
	if p3 != p1 {
		t.Errorf("retry after renewal: path %s, first %s", p3, p1)
	}
	if got, want := q3.Get("se"), "2024-03-05T15:54:00Z"; got != want {
		t.Errorf("renewed se = %s, want %s", got, want)
	}
	if got, want := q3.Get("sig"), azServiceSASSig(t, azKey, azAccount, "telemetry", q3); got != want {
		t.Errorf("renewed sig = %s, recomputed %s", got, want)
	}

	p4, _ := pathOf(azSign(t, s, base, auth.Batch{ID: "01HRB6Q5", Time: azBatch.Time}))
	if p4 == p1 {
		t.Errorf("two batches share blob %s", p4)
	}
	r := auth.Request{URL: base, Batch: auth.Batch{ID: "x"}}
	if err := s.Sign(context.Background(), &r); !errors.Is(err, auth.ErrBatchIdentity) {
		t.Errorf("Sign without batch time = %v, want ErrBatchIdentity", err)
	}
}

func TestAzureBlobGivenSAS(t *testing.T) {
	const sas = "sv=2022-11-02&ss=b&srt=o&sp=cw&se=2030-01-01T00%3A00%3A00Z&spr=https&sig=abc%2Bdef%3D"
	f := func(given, rawURL, want string) {
		t.Helper()
		s, err := auth.NewAzureBlob(auth.AzureBlobOptions{SAS: given})
		if err != nil {
			t.Fatal(err)
		}
		r1 := azSign(t, s, rawURL, azBatch)
		if r1.URL != want {
			t.Errorf("URL = %s, want %s", r1.URL, want)
		}
		r2 := azSign(t, s, rawURL, azBatch)
		if r2.URL != r1.URL {
			t.Errorf("second attempt URL %s, first %s", r2.URL, r1.URL)
		}
		if r1.Method != "PUT" || r1.HeaderValue("x-ms-blob-type") != "BlockBlob" {
			t.Errorf("%s with %q", r1.Method, r1.Header)
		}
	}
	const obj = "/2024/03/05/20240305T140312.457Z_01HRB6Q4.json"
	f(sas, "https://fleetstore.blob.core.windows.net/telemetry",
		"https://fleetstore.blob.core.windows.net/telemetry"+obj+"?"+sas)
	f("?"+sas, "https://fleetstore.blob.core.windows.net/telemetry/",
		"https://fleetstore.blob.core.windows.net/telemetry"+obj+"?"+sas)
	f(sas, "https://fleetstore.blob.core.windows.net/telemetry/in?timeout=30#x",
		"https://fleetstore.blob.core.windows.net/telemetry/in"+obj+"?timeout=30&"+sas)
}

func TestNewAzureBlobErrors(t *testing.T) {
	f := func(o auth.AzureBlobOptions, want string) {
		t.Helper()
		_, err := auth.NewAzureBlob(o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewAzureBlob(%v) = %v, want %q", o, err, want)
			return
		}
		for _, secret := range []string{o.SAS, o.AccountKey} {
			if len(secret) > 4 && strings.Contains(err.Error(), strings.TrimPrefix(secret, "?")) {
				t.Errorf("error %q contains a secret", err)
			}
		}
	}
	f(auth.AzureBlobOptions{}, "azure_blob: set sas, or account and account_key")
	f(auth.AzureBlobOptions{SAS: "sv=1&sig=x", Account: azAccount, AccountKey: azKey}, "not both")
	f(auth.AzureBlobOptions{SAS: "?sv=2022-11-02&sp=cw"}, "azure_blob.sas: no sig")
	f(auth.AzureBlobOptions{SAS: "sv=2022-11-02&sig=%zz-secret"}, "azure_blob.sas: not a URL query")
	f(auth.AzureBlobOptions{SAS: "sv=2022 11&sig=secretsig"}, "azure_blob.sas: has characters other")
	f(auth.AzureBlobOptions{Account: "Fleet_Store", AccountKey: azKey}, "azure_blob.account")
	f(auth.AzureBlobOptions{Account: azAccount, AccountKey: "not base64 secret!"}, "azure_blob.account_key: not a base64 key")
	f(auth.AzureBlobOptions{Account: azAccount}, "azure_blob.account_key")
	f(auth.AzureBlobOptions{Account: azAccount, AccountKey: azKey, TTL: time.Second}, "azure_blob.ttl")
}

// TestEventHubsSASVector is the published vector of Azure's SDK for Go (azeventhubs,
// TestTokenProviderWithKey).
func TestEventHubsSASVector(t *testing.T) {
	const want = "SharedAccessSignature sr=audience&sig=8UM0iIfFCfeBSqxSdBMW8pUbhAm7mnjSUaIZTZx8V0g%3D&se=1578099723&skn=keyName"
	if got := auth.EventHubsSAS("audience", "keyName", "key", 1578099723); got != want {
		t.Errorf("EventHubsSAS(audience, keyName, key, 1578099723) = %q, want %q", got, want)
	}
}

// azEHToken is an Event Hubs SAS as the service reads it.
type azEHToken struct{ sr, sig, se, skn string }

// azParseEHToken splits an Authorization value and checks its signature with key the way the
// service does: HMAC-SHA256 over the sr value as sent, "\n", the se value.
func azParseEHToken(h, key string) (azEHToken, error) {
	var tok azEHToken
	rest, ok := strings.CutPrefix(h, "SharedAccessSignature ")
	if !ok {
		return tok, fmt.Errorf("%q: not a SharedAccessSignature", h)
	}
	for _, kv := range strings.Split(rest, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "sr":
			tok.sr = v
		case "sig":
			tok.sig = v
		case "se":
			tok.se = v
		case "skn":
			tok.skn = v
		default:
			return tok, fmt.Errorf("%q: unknown field %q", h, k)
		}
	}
	sig, err := url.QueryUnescape(tok.sig)
	if err != nil {
		return tok, err
	}
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(tok.sr + "\n" + tok.se))
	if want := base64.StdEncoding.EncodeToString(m.Sum(nil)); sig != want {
		return tok, fmt.Errorf("sig %s, recomputed %s", sig, want)
	}
	return tok, nil
}

func TestAzureEventHubs(t *testing.T) {
	start := time.Date(2024, 3, 5, 14, 5, 0, 0, time.UTC)
	clock := newAzClock(start)
	const key = "rR4N9+b6fq2S0bZ5m0lTtOGVeEwT8J6fXy1wQv0Lk3M="
	s, err := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: "send-policy", Key: key, TTL: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const hub = "https://fleet-ns.servicebus.windows.net/Telemetry/messages"
	sign := func(rawURL string) azEHToken {
		t.Helper()
		r := azSign(t, s, rawURL, auth.Batch{})
		if r.Method != "POST" || r.URL != rawURL {
			t.Errorf("%s %s, want POST %s", r.Method, r.URL, rawURL)
		}
		tok, err := azParseEHToken(r.HeaderValue("Authorization"), key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t1 := sign(hub + "?timeout=60&api-version=2014-01")
	want := azEHToken{sr: "https%3a%2f%2ffleet-ns.servicebus.windows.net%2ftelemetry%2fmessages", se: strconv.FormatInt(start.Add(time.Hour).Unix(), 10), skn: "send-policy"}
	if t1.sr != want.sr || t1.se != want.se || t1.skn != want.skn {
		t.Errorf("token %+v, want sr, se, skn of %+v", t1, want)
	}

	clock.Advance(47 * time.Minute)
	if t2 := sign(hub); t2 != t1 {
		t.Errorf("after 47m of 60: %+v, want the cached %+v", t2, t1)
	}
	clock.Advance(2 * time.Minute)
	t3 := sign(hub)
	if t3.se != strconv.FormatInt(start.Add(49*time.Minute+time.Hour).Unix(), 10) {
		t.Errorf("after 49m of 60: se %s, want a renewed token", t3.se)
	}

	// Another URL is another resource; a 401 forgets the token.
	if t4 := sign("https://fleet-ns.servicebus.windows.net/other/messages"); t4.sr == t3.sr {
		t.Errorf("token for another hub has sr %s", t4.sr)
	}
	t5 := sign(hub)
	clock.Advance(time.Second)
	s.Unauthorized(nil)
	if t6 := sign(hub); t6.se == t5.se {
		t.Error("token kept after Unauthorized")
	}

	// A configured resource covers every URL under it.
	s, err = auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: "k", Key: key, Resource: "https://fleet-ns.servicebus.windows.net/telemetry", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if t7 := sign(hub); t7.sr != "https%3a%2f%2ffleet-ns.servicebus.windows.net%2ftelemetry" {
		t.Errorf("sr = %s, want the configured resource", t7.sr)
	}
}

// TestAzureEventHubsConcurrent signs from many goroutines while the clock crosses renewals (run
// with -race): every header is a valid token for the resource.
func TestAzureEventHubsConcurrent(t *testing.T) {
	clock := newAzClock(time.Date(2024, 3, 5, 14, 5, 0, 0, time.UTC))
	s, err := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: "k", Key: "key", TTL: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				clock.Advance(time.Second)
				r := auth.Request{URL: "https://ns.servicebus.windows.net/hub/messages"}
				if err := s.Sign(context.Background(), &r); err != nil {
					t.Error(err)
					return
				}
				if _, err := azParseEHToken(r.HeaderValue("Authorization"), "key"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestNewAzureEventHubsErrors(t *testing.T) {
	f := func(o auth.AzureEventHubsOptions, want string) {
		t.Helper()
		_, err := auth.NewAzureEventHubs(o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewAzureEventHubs(%v) = %v, want %q", o, err, want)
		}
		if err != nil && o.Key != "" && strings.Contains(err.Error(), o.Key) {
			t.Errorf("error %q contains the key", err)
		}
	}
	f(auth.AzureEventHubsOptions{}, "azure_event_hubs.key_name: required")
	f(auth.AzureEventHubsOptions{KeyName: "k"}, "azure_event_hubs.key: required")
	f(auth.AzureEventHubsOptions{KeyName: "k\n", Key: "secret-key"}, "azure_event_hubs.key_name")
	f(auth.AzureEventHubsOptions{KeyName: "k", Key: "secret-key", TTL: 30 * time.Second}, "azure_event_hubs.ttl")

	s, err := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: "k", Key: "secret-key"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"", "ns.servicebus.windows.net/hub", "amqps://ns/hub", "https://a b/"} {
		r := auth.Request{URL: u}
		if err := s.Sign(context.Background(), &r); err == nil {
			t.Errorf("Sign(%q) = nil error", u)
		}
	}
}

func TestAzureNoSecretsPrinted(t *testing.T) {
	const secret = "very-secret"
	blobSAS := auth.AzureBlobOptions{SAS: "sv=2022-11-02&sig=" + secret}
	blobKey := auth.AzureBlobOptions{Account: azAccount, AccountKey: base64.StdEncoding.EncodeToString([]byte(secret))}
	eh := auth.AzureEventHubsOptions{KeyName: "policy", Key: secret}
	var printed []string
	for _, o := range []any{blobSAS, blobKey, eh} {
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("route", "auth", o)
		printed = append(printed, fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), logged.String())
	}
	for _, o := range []auth.AzureBlobOptions{blobSAS, blobKey} {
		s, err := auth.NewAzureBlob(o)
		if err != nil {
			t.Fatal(err)
		}
		printed = append(printed, fmt.Sprint(s))
	}
	s, err := auth.NewAzureEventHubs(eh)
	if err != nil {
		t.Fatal(err)
	}
	printed = append(printed, fmt.Sprint(s))
	for _, out := range printed {
		if strings.Contains(out, secret) || strings.Contains(out, blobKey.AccountKey) {
			t.Errorf("printed %q", out)
		}
	}
}

func FuzzEventHubsSAS(f *testing.F) {
	f.Add("audience", "keyName", "key", int64(1578099723))
	for _, u := range cloudURLPrefixes("https://ns.servicebus.windows.net/Hub/messages?x=1 2&y=é") {
		f.Add(u, "RootManageSharedAccessKey", "k3y+/=", int64(-1))
	}
	f.Fuzz(func(t *testing.T, resource, keyName, key string, expiry int64) {
		h := auth.EventHubsSAS(resource, keyName, key, expiry)
		tok, err := azParseEHToken(h, key)
		if err != nil {
			t.Fatal(err)
		}
		if tok.se != strconv.FormatInt(expiry, 10) {
			t.Fatalf("se = %s, want %d", tok.se, expiry)
		}
		lower := []byte(resource) // ASCII letters only, as lower-casing the escaped form does
		for i, c := range lower {
			if 'A' <= c && c <= 'Z' {
				lower[i] = c + 'a' - 'A'
			}
		}
		if sr, err := url.QueryUnescape(tok.sr); err != nil || sr != string(lower) {
			t.Fatalf("sr %s decodes to %q (%v), want %q", tok.sr, sr, err, lower)
		}
		if skn, err := url.QueryUnescape(tok.skn); err != nil || skn != keyName {
			t.Fatalf("skn %s decodes to %q (%v), want %q", tok.skn, skn, err, keyName)
		}
	})
}

func FuzzAzureEventHubs(f *testing.F) {
	for _, u := range cloudURLPrefixes("https://ns.servicebus.windows.net/hub/messages?timeout=60") {
		f.Add(u, "policy", "a-long-secret-key")
	}
	f.Fuzz(func(t *testing.T, rawURL, keyName, key string) {
		s, err := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: keyName, Key: key})
		if err != nil {
			if len(key) >= 16 && strings.Contains(err.Error(), key) {
				t.Fatalf("error %q contains the key", err)
			}
			return
		}
		r := auth.Request{URL: rawURL}
		if err := s.Sign(context.Background(), &r); err != nil {
			if len(key) >= 16 && strings.Contains(err.Error(), key) {
				t.Fatalf("error %q contains the key", err)
			}
			return
		}
		if _, err := azParseEHToken(r.HeaderValue("Authorization"), key); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzAzureBlob signs arbitrary URLs, tokens, account names, keys and batch IDs: Sign never
// panics, what it signs is a PUT to a .json blob under the URL with the token, and a generated
// token verifies.
func FuzzAzureBlob(f *testing.F) {
	for _, u := range cloudURLPrefixes("https://fleetstore.blob.core.windows.net/telemetry/in%20x?timeout=30") {
		f.Add(u, "", azAccount, azKey, "01HRB6Q4")
		f.Add(u, "?sv=2022-11-02&sp=cw&sig=abc%3D", "", "", "01HRB6Q4")
	}
	f.Add("http://127.0.0.1:10000/fleetstore/c", "", azAccount, azKey, "a/b?c")
	f.Add("https://h/c", "sig", "", "", "x")
	f.Fuzz(func(t *testing.T, rawURL, sas, account, key, batchID string) {
		s, err := auth.NewAzureBlob(auth.AzureBlobOptions{SAS: sas, Account: account, AccountKey: key})
		if err != nil {
			for _, secret := range []string{sas, key} {
				if len(secret) >= 16 && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q contains a secret", err)
				}
			}
			return
		}
		r := auth.Request{URL: rawURL, Batch: auth.Batch{ID: batchID, Time: azBatch.Time}}
		if err := s.Sign(context.Background(), &r); err != nil {
			for _, secret := range []string{sas, key} {
				if len(secret) >= 16 && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q contains a secret", err)
				}
			}
			return
		}
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatalf("signed URL %q: %v", r.URL, err)
		}
		if r.Method != "PUT" || !strings.HasSuffix(u.EscapedPath(), ".json") {
			t.Fatalf("%s %s", r.Method, r.URL)
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil || q.Get("sig") == "" {
			t.Fatalf("query of %q: %v, no sig", r.URL, err)
		}
		if sas != "" {
			if !strings.HasSuffix(r.URL, strings.TrimPrefix(sas, "?")) {
				t.Fatalf("URL %q does not end with the SAS", r.URL)
			}
			return
		}
		segs := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		container := segs[0]
		if container == account && !strings.HasPrefix(u.Host, account+".") {
			container = segs[1]
		}
		if got, want := q.Get("sig"), azServiceSASSig(t, key, account, container, q); got != want {
			t.Fatalf("URL %q: sig %s, recomputed %s", r.URL, got, want)
		}
	})
}

func BenchmarkAzureBlob(b *testing.B) {
	s, err := auth.NewAzureBlob(auth.AzureBlobOptions{Account: azAccount, AccountKey: azKey})
	if err != nil {
		b.Fatal(err)
	}
	benchCloudSign(b, s, "https://fleetstore.blob.core.windows.net/telemetry/in")
}

func BenchmarkAzureEventHubs(b *testing.B) {
	s, err := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: "send", Key: "rR4N9+b6fq2S0bZ5m0lTtOGVeEwT8J6fXy1wQv0Lk3M="})
	if err != nil {
		b.Fatal(err)
	}
	benchCloudSign(b, s, "https://fleet-ns.servicebus.windows.net/telemetry/messages")
}

func benchCloudSign(b *testing.B, s auth.Signer, rawURL string) {
	body := cloudBatchBody(b)
	batch := auth.Batch{ID: "01HRB6Q4ZB1T6S3N0X6V4K2M9P", Time: time.Now()}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := auth.Request{Method: "POST", URL: rawURL, Body: body, Batch: batch,
			Header: [][2]string{{"Content-Type", "application/json"}}}
		if err := s.Sign(ctx, &r); err != nil {
			b.Fatal(err)
		}
	}
}
