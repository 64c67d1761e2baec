package auth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

const (
	iotHost = "myhub.azure-devices.net"
	iotURL  = "https://" + iotHost + "/devices/%s/messages/events?api-version=2021-04-12"
	// Device keys as IoT Hub shows them (base64 of 32 bytes); made up for the tests.
	iotKey1 = "q+DKVojmMz014RjAwpNGZbAkdOocSVWMKPOccLfUmLE="
	iotKey2 = "c2Vjb25kLWRldmljZS1rZXktMzItYnl0ZXMtbG9uZyE="
)

// Published vectors of Microsoft's Azure IoT SDKs: Node's azure-iot-common
// (SharedAccessSignature.create("uri", no key name, base64("password"), 12345)) and Java's
// device SDK (the signature of "sdktesthub.private.azure-devices-int.net/devices/test8" at
// 1462333672 with the key below).
func TestIoTHubSASVectors(t *testing.T) {
	if got, want := auth.IoTHubSAS("uri", []byte("password"), 12345),
		"SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"; got != want {
		t.Errorf("IoTHubSAS(uri) = %q, want %q", got, want)
	}
	key, _ := base64.StdEncoding.DecodeString("q+DKVojmMz014RjAwpNGZbAkdOocSVWMKPOccLfUmLE=")
	if got, want := url.QueryEscape(auth.IoTHubSig(key, "sdktesthub.private.azure-devices-int.net/devices/test8", "1462333672")),
		"ZrTYgp6uRmbDl4lzzewxFD9FoaNKIK7G2bdivDbtc9A%3D"; got != want {
		t.Errorf("signature = %q, want %q", got, want)
	}
}

// iotVerify checks an Authorization value as IoT Hub would, written from Microsoft's
// documented algorithm ("Control access to IoT Hub with shared access signatures", the
// device token examples) without the package's code: the resource URI is
// <host>/devices/<id>, sr is it URL-encoded, sig the URL-encoded base64 of
// HMAC-SHA256(base64decode(device key), sr + "\n" + se). It returns se.
func iotVerify(authz, host, id, key string) (int64, error) {
	tok, ok := strings.CutPrefix(authz, "SharedAccessSignature ")
	if !ok {
		return 0, fmt.Errorf("Authorization %q is not a SharedAccessSignature", authz)
	}
	fields := strings.Split(tok, "&")
	if len(fields) != 3 {
		return 0, fmt.Errorf("token %q has %d fields, want sr, sig, se", tok, len(fields))
	}
	raw := map[string]string{}
	for _, kv := range fields {
		k, v, _ := strings.Cut(kv, "=")
		raw[k] = v
	}
	if want := url.QueryEscape(host + "/devices/" + id); raw["sr"] != want {
		return 0, fmt.Errorf("sr %q, want %q", raw["sr"], want)
	}
	se, err := strconv.ParseInt(raw["se"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("se %q: %v", raw["se"], err)
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return 0, err
	}
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(raw["sr"] + "\n" + raw["se"]))
	if want := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil))); raw["sig"] != want {
		return 0, fmt.Errorf("sig %q, want %q", raw["sig"], want)
	}
	return se, nil
}

func iotSign(t testing.TB, s *auth.AzureIoTHub, id, urlID string, custom [3]string) (auth.Request, error) {
	t.Helper()
	r := auth.Request{Method: "POST", URL: fmt.Sprintf(iotURL, urlID), Device: auth.Device{ID: id, Custom: custom}}
	err := s.Sign(context.Background(), &r)
	return r, err
}

func TestAzureIoTHub(t *testing.T) {
	clock := newAzClock(time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC))
	s, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom2", TTL: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(id, urlID, key string) string {
		t.Helper()
		r, err := iotSign(t, s, id, urlID, [3]string{"not the key", key, ""})
		if err != nil {
			t.Fatalf("Sign(%s) = %v", id, err)
		}
		if n := strings.Count(fmt.Sprint(r.Header), "Authorization"); n != 1 {
			t.Fatalf("%d Authorization headers in %v", n, r.Header)
		}
		return r.HeaderValue("Authorization")
	}
	verify := func(h, id, key string, wantSE int64) {
		t.Helper()
		se, err := iotVerify(h, iotHost, id, key)
		if err != nil {
			t.Fatalf("token of %s: %v", id, err)
		}
		if se != wantSE {
			t.Fatalf("token of %s: se %d, want %d", id, se, wantSE)
		}
	}
	t0 := clock.Now().Unix()
	a := sign("SN-1", "SN-1", iotKey1)
	verify(a, "SN-1", iotKey1, t0+3600)
	b := sign("SN-2", "SN-2", iotKey2)
	verify(b, "SN-2", iotKey2, t0+3600)

	// The device id is the one the URL names, unescaped (IoT Hub allows these characters).
	odd := "d:1=a@b$c'(x)*!,.%_-"
	verify(sign("odd", url.PathEscape(odd), iotKey1), odd, iotKey1, t0+3600)

	// Cached until a fifth of the lifetime is left.
	clock.Advance(47 * time.Minute)
	if got := sign("SN-1", "SN-1", iotKey1); got != a {
		t.Fatalf("token renewed after 47 of 60 minutes: %q, was %q", got, a)
	}
	clock.Advance(time.Minute + time.Second)
	a2 := sign("SN-1", "SN-1", iotKey1)
	verify(a2, "SN-1", iotKey1, clock.Now().Unix()+3600)
	// A new key (the device's metadata changed) gets a new token at once.
	c := sign("SN-2", "SN-2", iotKey1)
	verify(c, "SN-2", iotKey1, clock.Now().Unix()+3600)
	// A 401 drops the device's token; a 401 for an older token does not.
	s.Unauthorized(&auth.Request{URL: fmt.Sprintf(iotURL, "SN-2"), Header: [][2]string{{"Authorization", b}}})
	if got := sign("SN-2", "SN-2", iotKey1); got != c {
		t.Fatal("a 401 for an older token dropped the current one")
	}
	clock.Advance(time.Second)
	s.Unauthorized(&auth.Request{URL: fmt.Sprintf(iotURL, "SN-2"), Header: [][2]string{{"Authorization", c}}})
	if got := sign("SN-2", "SN-2", iotKey1); got == c {
		t.Fatal("a 401 did not drop the token")
	} else {
		verify(got, "SN-2", iotKey1, clock.Now().Unix()+3600)
	}
}

// What no retry can fix fails with ErrPermanent, says why, and never shows the key.
func TestAzureIoTHubPermanent(t *testing.T) {
	s, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom1"})
	if err != nil {
		t.Fatal(err)
	}
	const badKey = "this is not base64 but it is secret"
	f := func(id, rawURL, key, want string) {
		t.Helper()
		r := auth.Request{URL: rawURL, Device: auth.Device{ID: id, Custom: [3]string{key}}}
		err := s.Sign(context.Background(), &r)
		if !errors.Is(err, auth.ErrPermanent) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Sign(%q, %q) = %v, want ErrPermanent with %q", id, rawURL, err, want)
		}
		if key != "" && strings.Contains(err.Error(), key) {
			t.Fatalf("error %q shows the key", err)
		}
		if h := r.HeaderValue("Authorization"); h != "" {
			t.Fatalf("Authorization %q set after an error", h)
		}
	}
	f("", fmt.Sprintf(iotURL, "SN-1"), iotKey1, "several devices")
	f("SN-1", fmt.Sprintf(iotURL, "SN-1"), "", `device "SN-1" has no key (its custom1 is empty)`)
	f("SN-1", fmt.Sprintf(iotURL, "SN-1"), badKey, `device "SN-1": its custom1 is not a base64 key`)
	f("SN-1", fmt.Sprintf(iotURL, ""), iotKey1, "names no device")
	f("SN-1", "https://"+iotHost+"/messages/events", iotKey1, "names no device")
	f("SN-1", "https://"+iotHost+"/devices", iotKey1, "names no device")
	f("SN-1", "https://"+iotHost+"/devices/%zz/messages", iotKey1, "")
}

func TestNewAzureIoTHubErrors(t *testing.T) {
	f := func(o auth.AzureIoTHubOptions, want ...string) {
		t.Helper()
		_, err := auth.NewAzureIoTHub(o)
		if err == nil {
			t.Fatalf("NewAzureIoTHub(%v) = nil error, want %q", o, want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewAzureIoTHub(%v) = %v, want %q", o, err, w)
			}
		}
	}
	f(auth.AzureIoTHubOptions{}, "azure_iot_hub.host: required", "azure_iot_hub.key_field: required")
	f(auth.AzureIoTHubOptions{Host: "https://" + iotHost, KeyField: "custom1"}, "azure_iot_hub.host: must be the hub's host name")
	f(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "serial"}, "azure_iot_hub.key_field: must be custom1, custom2 or custom3")
	f(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom3", TTL: time.Millisecond}, "azure_iot_hub.ttl: must be at least 1s")
	f(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom3", CacheSize: -1}, "azure_iot_hub.cache_size: must not be negative")
}

// The cache holds at most CacheSize devices, and every token is right whatever was dropped.
func TestAzureIoTHubCacheBound(t *testing.T) {
	const size = 16
	s, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom1", CacheSize: size})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		for i := range 100 {
			id := fmt.Sprintf("D%03d", i)
			key := iotKey1
			if i%2 == 1 {
				key = iotKey2
			}
			r, err := iotSign(t, s, id, id, [3]string{key})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := iotVerify(r.HeaderValue("Authorization"), iotHost, id, key); err != nil {
				t.Fatalf("round %d, %s: %v", round, id, err)
			}
			if n := auth.IoTHubCached(s); n > size {
				t.Fatalf("%d tokens cached, bound %d", n, size)
			}
		}
	}
}

func TestAzureIoTHubConcurrent(t *testing.T) {
	s, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom1", TTL: time.Second, CacheSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("G%d-%d", g, i%12)
				r, err := iotSign(t, s, id, id, [3]string{iotKey2})
				if err == nil {
					_, err = iotVerify(r.HeaderValue("Authorization"), iotHost, id, iotKey2)
				}
				if err != nil {
					errs <- err
					return
				}
				if i%50 == 0 {
					s.Unauthorized(&r)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// FuzzAzureIoTHub signs arbitrary URLs, device ids and keys: Sign never panics, never shows a
// key in an error, and whatever it signs verifies for the device the URL names.
func FuzzAzureIoTHub(f *testing.F) {
	for _, u := range cloudURLPrefixes(fmt.Sprintf(iotURL, "d%2F1:é")) {
		f.Add(u, "SN-1", iotKey1)
	}
	f.Add("https://h/devices/x", "", "")
	f.Add("https://h/devices/%zz/devices/y", "d", "!!")
	f.Fuzz(func(t *testing.T, rawURL, id, key string) {
		s, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom3", CacheSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		r := auth.Request{URL: rawURL, Device: auth.Device{ID: id, Custom: [3]string{"", "", key}}}
		if err := s.Sign(context.Background(), &r); err != nil {
			if !errors.Is(err, auth.ErrPermanent) && !strings.Contains(err.Error(), "azure_iot_hub") {
				t.Fatalf("error %q is not the scheme's", err)
			}
			if len(key) >= 16 && strings.Contains(err.Error(), key) {
				t.Fatalf("error %q contains the key", err)
			}
			return
		}
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatalf("signed an unparsable URL %q", rawURL)
		}
		segs := strings.Split(u.EscapedPath(), "/")
		var dev string
		for i := 0; i+1 < len(segs); i++ {
			if segs[i] == "devices" {
				dev, _ = url.PathUnescape(segs[i+1])
				break
			}
		}
		if _, err := iotVerify(r.HeaderValue("Authorization"), iotHost, dev, key); err != nil {
			t.Fatalf("URL %q key %q: %v", rawURL, key, err)
		}
	})
}

func BenchmarkAzureIoTHub(b *testing.B) {
	s, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: iotHost, KeyField: "custom1"})
	if err != nil {
		b.Fatal(err)
	}
	r := auth.Request{Method: "POST", URL: fmt.Sprintf(iotURL, "SN-1"), Body: make([]byte, 100<<10),
		Device: auth.Device{ID: "SN-1", Custom: [3]string{iotKey1}}}
	hdr := make([][2]string, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		r.Header = hdr[:0]
		if err := s.Sign(context.Background(), &r); err != nil {
			b.Fatal(err)
		}
	}
}
