package auth_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

// The example credentials of AWS's documentation.
const (
	awsExampleKeyID     = "AKIAIOSFODNN7EXAMPLE"
	awsExampleS3Secret  = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" // Amazon S3 API Reference examples
	awsExampleIAMKeyID  = "AKIDEXAMPLE"
	awsExampleIAMSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" // IAM User Guide example
	awsEmptySHA256      = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// awsVerifySigV4 checks r's SigV4 Authorization header the way the receiving AWS service does,
// from the request as deliver sends it (r.URL as given, r's headers with the last value of a
// repeated name, Host from the URL, Content-Length from the body), computing the canonical
// request, string to sign and signing key by hand after "Create a signed AWS API request"
// (IAM User Guide) and, for S3, "Signature Calculations for the Authorization Header" (Amazon
// S3 API Reference). It returns the parsed Authorization fields.
func awsVerifySigV4(r *auth.Request, secret string, s3 bool) (awsSigV4Auth, error) {
	var a awsSigV4Auth
	authz := r.HeaderValue("Authorization")
	rest, ok := strings.CutPrefix(authz, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, fmt.Errorf("Authorization %q: not AWS4-HMAC-SHA256", authz)
	}
	for _, f := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		switch k {
		case "Credential":
			a.credential = v
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	scope := strings.Split(a.credential, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return a, fmt.Errorf("credential %q: not keyid/date/region/service/aws4_request", a.credential)
	}
	a.keyID, a.date, a.region, a.service = scope[0], scope[1], scope[2], scope[3]

	// The request as received.
	received := map[string]string{}
	for _, h := range r.Header {
		received[strings.ToLower(h[0])] = h[1]
	}
	rawURL := r.URL
	scheme, afterScheme, ok := strings.Cut(rawURL, "://")
	if !ok || (scheme != "https" && scheme != "http") {
		return a, fmt.Errorf("URL %q: not absolute", rawURL)
	}
	host, target := afterScheme, "/"
	if i := strings.IndexAny(afterScheme, "/?"); i >= 0 {
		host, target = afterScheme[:i], afterScheme[i:]
		if target[0] == '?' {
			target = "/" + target
		}
	}
	if _, ok := received["host"]; !ok {
		received["host"] = host
	}
	received["content-length"] = strconv.Itoa(len(r.Body))
	rawPath, rawQuery, _ := strings.Cut(target, "?")

	amzDate := received["x-amz-date"]
	if !strings.HasPrefix(amzDate, a.date+"T") || len(amzDate) != len("20060102T150405Z") {
		return a, fmt.Errorf("x-amz-date %q does not match the scope's date %q", amzDate, a.date)
	}

	// Canonical URI: every other service encodes the path as received once more; S3 takes it
	// as received, which the client must have encoded once (every byte but the unreserved ones
	// and '/' as %XX) for the two to agree.
	var canonicalURI string
	if s3 {
		for i := 0; i < len(rawPath); i++ {
			c := rawPath[i]
			if c == '%' && i+2 < len(rawPath) && isUpperHex(rawPath[i+1]) && isUpperHex(rawPath[i+2]) {
				i += 2
			} else if awsURIEncode(string(c), false) != string(c) {
				return a, fmt.Errorf("S3 path %q is not URI-encoded once: %q at %d", rawPath, c, i)
			}
		}
		canonicalURI = rawPath
	} else {
		canonicalURI = awsURIEncode(rawPath, false)
	}
	if canonicalURI == "" {
		canonicalURI = "/"
	}

	// Canonical query: names and values decoded, each encoded, sorted after encoding.
	var params []string
	if rawQuery != "" {
		for _, kv := range strings.Split(rawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			dk, err1 := url.PathUnescape(k)
			dv, err2 := url.PathUnescape(v)
			if err1 != nil || err2 != nil {
				return a, fmt.Errorf("query %q: bad escape", rawQuery)
			}
			params = append(params, awsURIEncode(dk, true)+"="+awsURIEncode(dv, true))
		}
	}
	sort.Strings(params)

	var canonicalHeaders strings.Builder
	for _, name := range a.signedHeaders {
		v, ok := received[name]
		if !ok {
			return a, fmt.Errorf("signed header %q was not sent", name)
		}
		canonicalHeaders.WriteString(name + ":" + awsTrimAll(v) + "\n")
	}

	payloadHash := awsHexSHA256(r.Body)
	if s3 {
		payloadHash = received["x-amz-content-sha256"] // S3 checks it against the body itself
	}
	canonicalRequest := strings.Join([]string{
		r.Method, canonicalURI, strings.Join(params, "&"),
		canonicalHeaders.String(), strings.Join(a.signedHeaders, ";"), payloadHash,
	}, "\n")
	stringToSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + strings.Join(scope[1:], "/") + "\n" + awsHexSHA256([]byte(canonicalRequest))

	key := awsHMACSHA256([]byte("AWS4"+secret), a.date)
	key = awsHMACSHA256(key, a.region)
	key = awsHMACSHA256(key, a.service)
	key = awsHMACSHA256(key, "aws4_request")
	want := hex.EncodeToString(awsHMACSHA256(key, stringToSign))
	if a.signature != want {
		return a, fmt.Errorf("signature %s, recomputed %s from canonical request\n%s", a.signature, want, canonicalRequest)
	}
	return a, nil
}

type awsSigV4Auth struct {
	credential, keyID, date, region, service, signature string
	signedHeaders                                       []string
}

func (a awsSigV4Auth) signs(name string) bool {
	for _, h := range a.signedHeaders {
		if h == name {
			return true
		}
	}
	return false
}

// awsURIEncode encodes every byte but A-Z a-z 0-9 - . _ ~ as %XX (upper case), and '/' too if
// slash; the UriEncode of AWS's documentation.
func awsURIEncode(s string, slash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || (c == '/' && !slash) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

// awsTrimAll removes leading and trailing spaces and collapses runs of spaces into one.
func awsTrimAll(v string) string {
	return strings.Join(strings.FieldsFunc(v, func(r rune) bool { return r == ' ' }), " ")
}

func awsHexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func awsHMACSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

func cloudClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// TestSigV4VerifierPublishedIAM checks the test's own verifier, and aws-sdk-go-v2's signer,
// against the GET example of the IAM User Guide ("Create a signed AWS API request"): IAM
// ListUsers, 2015-08-30T12:36:00Z, us-east-1.
func TestSigV4VerifierPublishedIAM(t *testing.T) {
	const want = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
	r := &auth.Request{
		Method: "GET",
		URL:    "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
		Header: [][2]string{
			{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
			{"X-Amz-Date", "20150830T123600Z"},
			{"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, " +
				"SignedHeaders=content-type;host;x-amz-date, Signature=" + want},
		},
	}
	if _, err := awsVerifySigV4(r, awsExampleIAMSecret, false); err != nil {
		t.Fatalf("verifier rejects the published example: %v", err)
	}
	r.Header[0][1] = "application/json"
	if _, err := awsVerifySigV4(r, awsExampleIAMSecret, false); err == nil {
		t.Fatal("verifier accepts a changed signed header")
	}

	hr, err := http.NewRequest("GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08", nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	creds := aws.Credentials{AccessKeyID: awsExampleIAMKeyID, SecretAccessKey: awsExampleIAMSecret}
	at := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, hr, awsEmptySHA256, "iam", "us-east-1", at); err != nil {
		t.Fatal(err)
	}
	if got := hr.Header.Get("Authorization"); !strings.HasSuffix(got, "Signature="+want) {
		t.Fatalf("aws-sdk-go-v2 signer: Authorization = %q, want Signature=%s", got, want)
	}
}

// TestAWSSigV4PublishedS3 reproduces, through AWSSigV4, the GET and PUT Object examples of the
// Amazon S3 API Reference ("Signature Calculations for the Authorization Header: Transferring
// Payload in a Single Chunk"), which carry x-amz-content-sha256 as AWSSigV4 always does.
func TestAWSSigV4PublishedS3(t *testing.T) {
	s, err := auth.NewAWSSigV4(auth.AWSSigV4Options{
		Region: "us-east-1", Service: "s3", AccessKeyID: awsExampleKeyID, SecretAccessKey: awsExampleS3Secret,
		Now: cloudClock(time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := func(r *auth.Request, wantURL, wantSignedHeaders, wantSig string) {
		t.Helper()
		if err := s.Sign(context.Background(), r); err != nil {
			t.Fatalf("Sign: %v", err)
		}
		want := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
			"SignedHeaders=" + wantSignedHeaders + ", Signature=" + wantSig
		if got := r.HeaderValue("Authorization"); got != want {
			t.Errorf("%s %s: Authorization = %q, want %q", r.Method, r.URL, got, want)
		}
		if r.URL != wantURL {
			t.Errorf("URL = %q, want %q", r.URL, wantURL)
		}
		if _, err := awsVerifySigV4(r, awsExampleS3Secret, true); err != nil {
			t.Errorf("verify: %v", err)
		}
	}
	f(&auth.Request{
		Method: "GET", URL: "https://examplebucket.s3.amazonaws.com/test.txt",
		Header: [][2]string{{"Range", "bytes=0-9"}},
	}, "https://examplebucket.s3.amazonaws.com/test.txt",
		"host;range;x-amz-content-sha256;x-amz-date",
		"f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
	f(&auth.Request{
		Method: "PUT", URL: "https://examplebucket.s3.amazonaws.com/test$file.text",
		Header: [][2]string{
			{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
			{"x-amz-storage-class", "REDUCED_REDUNDANCY"},
		},
		Body: []byte("Welcome to Amazon S3."),
	}, "https://examplebucket.s3.amazonaws.com/test%24file.text",
		"date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
		"98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
}

func cloudGzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAWSSigV4 signs requests and checks them with the receiving side's computation.
func TestAWSSigV4(t *testing.T) {
	at := time.Date(2024, 3, 5, 14, 3, 12, 457e6, time.UTC)
	body := []byte(`[{"deviceIdentifier":"SN1","observations":[]}]`)
	tests := []struct {
		name       string
		opts       auth.AWSSigV4Options
		req        auth.Request
		wantURL    string // "" to keep the request's
		wantSigned []string
	}{
		{
			name:       "API Gateway POST",
			opts:       auth.AWSSigV4Options{Region: "eu-west-1"},
			req:        auth.Request{URL: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/ingest", Header: [][2]string{{"Content-Type", "application/json"}}, Body: body},
			wantSigned: []string{"content-type", "host", "x-amz-content-sha256", "x-amz-date"},
		},
		{
			name:       "session token",
			opts:       auth.AWSSigV4Options{Region: "eu-west-1", Service: "lambda", SessionToken: "FwoGZXIvYXdzEJr//////////wEaDOnn+token=="},
			req:        auth.Request{Method: "POST", URL: "https://x7.lambda-url.eu-west-1.on.aws/", Body: body},
			wantSigned: []string{"host", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"},
		},
		{
			name: "gzip body",
			opts: auth.AWSSigV4Options{Region: "us-east-2"},
			req: auth.Request{Method: "POST", URL: "https://abc.execute-api.us-east-2.amazonaws.com/v1/", Body: cloudGzip(t, body),
				Header: [][2]string{{"Content-Type", "application/json"}, {"Content-Encoding", "gzip"}, {"User-Agent", "fleetrelay"}, {"X-Route", "r1"}}},
			wantSigned: []string{"content-encoding", "content-type", "host", "x-amz-content-sha256", "x-amz-date", "x-route"},
		},
		{
			name: "query and escaped path",
			opts: auth.AWSSigV4Options{Region: "eu-central-1"},
			req: auth.Request{Method: "POST", Body: body,
				URL: "https://API.example.com:443/stage/devices/SN%2F1/caf%C3%A9 data/a:b@c?b=2&a=x y&a=x+z&c=%2F&empty&t=2024-03-05T14:03:12Z#frag"},
			wantURL:    "https://api.example.com/stage/devices/SN%2F1/caf%C3%A9%20data/a:b@c?a=x%20y&a=x%20z&b=2&c=%2F&empty=&t=2024-03-05T14%3A03%3A12Z",
			wantSigned: []string{"host", "x-amz-content-sha256", "x-amz-date"},
		},
		{
			name: "s3 service path",
			opts: auth.AWSSigV4Options{Region: "eu-west-1", Service: "s3"},
			req:  auth.Request{Method: "PUT", URL: "https://bucket.s3.eu-west-1.amazonaws.com/in/a b+c(1).json?x-id=PutObject", Body: body},
			// S3 compares the path as sent: sent strictly encoded, it is signed as sent.
			wantURL:    "https://bucket.s3.eu-west-1.amazonaws.com/in/a%20b%2Bc%281%29.json?x-id=PutObject",
			wantSigned: []string{"host", "x-amz-content-sha256", "x-amz-date"},
		},
		{
			name:       "Host header",
			opts:       auth.AWSSigV4Options{Region: "eu-west-1"},
			req:        auth.Request{URL: "https://10.0.0.7:8443/p", Header: [][2]string{{"Host", "API.Example.com:443"}}, Body: body},
			wantSigned: []string{"host", "x-amz-content-sha256", "x-amz-date"},
		},
		{
			name:       "repeated header: last value",
			opts:       auth.AWSSigV4Options{Region: "eu-west-1"},
			req:        auth.Request{URL: "https://h.example.com/p", Header: [][2]string{{"X-Tag", "a"}, {"x-tag", "  b   c "}}, Body: body},
			wantSigned: []string{"host", "x-amz-content-sha256", "x-amz-date", "x-tag"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.AccessKeyID = awsExampleKeyID
			tt.opts.SecretAccessKey = awsExampleS3Secret
			tt.opts.Now = cloudClock(at)
			s, err := auth.NewAWSSigV4(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := tt.req
			r.Header = append([][2]string(nil), tt.req.Header...)
			if err := s.Sign(context.Background(), &r); err != nil {
				t.Fatalf("Sign: %v", err)
			}
			a, err := awsVerifySigV4(&r, awsExampleS3Secret, tt.opts.Service == "s3")
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if got := strings.Join(a.signedHeaders, ";"); got != strings.Join(tt.wantSigned, ";") {
				t.Errorf("SignedHeaders = %s, want %s", got, strings.Join(tt.wantSigned, ";"))
			}
			service := tt.opts.Service
			if service == "" {
				service = "execute-api"
			}
			if want := awsExampleKeyID + "/20240305/" + tt.opts.Region + "/" + service + "/aws4_request"; a.credential != want {
				t.Errorf("Credential = %s, want %s", a.credential, want)
			}
			if got, want := r.HeaderValue("X-Amz-Date"), "20240305T140312Z"; got != want {
				t.Errorf("X-Amz-Date = %q, want %q", got, want)
			}
			if got, want := r.HeaderValue("x-amz-content-sha256"), awsHexSHA256(r.Body); got != want {
				t.Errorf("x-amz-content-sha256 = %q, want %q", got, want)
			}
			if got := r.HeaderValue("X-Amz-Security-Token"); got != tt.opts.SessionToken {
				t.Errorf("X-Amz-Security-Token = %q, want %q", got, tt.opts.SessionToken)
			}
			wantURL := tt.wantURL
			if wantURL == "" {
				wantURL = tt.req.URL
			}
			if r.URL != wantURL {
				t.Errorf("URL = %q, want %q", r.URL, wantURL)
			}
			if h := r.HeaderValue("Host"); h != "" && h != "api.example.com" {
				t.Errorf("Host header %q, want it as signed: api.example.com", h)
			}
			if want := tt.req.Method; want != "" && r.Method != want {
				t.Errorf("Method = %q, want %q", r.Method, want)
			}

			// The signature covers the bytes and the signed headers as sent.
			tampered := r
			tampered.Body = append(bytes.Clone(r.Body), ' ')
			if _, err := awsVerifySigV4(&tampered, awsExampleS3Secret, false); err == nil && tt.opts.Service != "s3" {
				t.Error("verify accepts a changed body")
			}
			if a.signs("content-encoding") {
				tampered = r
				tampered.Header = append([][2]string(nil), r.Header...)
				tampered.SetHeader("Content-Encoding", "identity")
				if _, err := awsVerifySigV4(&tampered, awsExampleS3Secret, false); err == nil {
					t.Error("verify accepts a changed Content-Encoding")
				}
			}
		})
	}
}

// TestAWSSigV4Retry: a second Sign of the same route request replaces the first's headers.
func TestAWSSigV4Retry(t *testing.T) {
	now := time.Date(2024, 3, 5, 14, 3, 12, 0, time.UTC)
	s, err := auth.NewAWSSigV4(auth.AWSSigV4Options{
		Region: "eu-west-1", AccessKeyID: awsExampleKeyID, SecretAccessKey: awsExampleS3Secret,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	r := auth.Request{Method: "POST", URL: "https://h.example.com/p?a=1", Body: []byte("[]")}
	if err := s.Sign(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	first := r.HeaderValue("Authorization")
	now = now.Add(90 * time.Second)
	if err := s.Sign(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Header) != 3 {
		t.Errorf("headers after two Signs = %q, want x-amz-content-sha256, X-Amz-Date, Authorization once", r.Header)
	}
	if r.HeaderValue("Authorization") == first || r.HeaderValue("X-Amz-Date") != "20240305T140442Z" {
		t.Errorf("second attempt not re-signed: %q", r.Header)
	}
	if _, err := awsVerifySigV4(&r, awsExampleS3Secret, false); err != nil {
		t.Error(err)
	}
}

// TestAWSSigV4S3Mode: PUT to <url>/YYYY/MM/DD/<timestamp>_<batch id>, the same object for every
// attempt of a batch, each attempt signed at its own time.
func TestAWSSigV4S3Mode(t *testing.T) {
	now := time.Date(2024, 3, 5, 14, 5, 0, 0, time.UTC)
	s, err := auth.NewAWSSigV4(auth.AWSSigV4Options{
		Region: "eu-west-1", S3: true, AccessKeyID: awsExampleKeyID, SecretAccessKey: awsExampleS3Secret,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	batch := auth.Batch{ID: "01HRB6Q4/x y", Time: time.Date(2024, 3, 5, 15, 3, 12, 457e6, time.FixedZone("CET", 3600))}
	body := cloudGzip(t, []byte(`[{"a":1}]`))
	attempt := func() auth.Request {
		r := auth.Request{
			Method: "POST", URL: "https://bucket.s3.eu-west-1.amazonaws.com/fleet/in", Body: body, Batch: batch,
			Header: [][2]string{{"Content-Type", "application/json"}, {"Content-Encoding", "gzip"}},
		}
		if err := s.Sign(context.Background(), &r); err != nil {
			t.Fatalf("Sign: %v", err)
		}
		a, err := awsVerifySigV4(&r, awsExampleS3Secret, true)
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		if a.service != "s3" || !a.signs("content-encoding") || !a.signs("x-amz-content-sha256") {
			t.Errorf("credential %s, signed headers %v", a.credential, a.signedHeaders)
		}
		return r
	}
	r1 := attempt()
	const wantURL = "https://bucket.s3.eu-west-1.amazonaws.com/fleet/in/2024/03/05/20240305T140312.457Z_01HRB6Q4/x%20y"
	if r1.Method != "PUT" || r1.URL != wantURL {
		t.Errorf("first attempt: %s %s, want PUT %s", r1.Method, r1.URL, wantURL)
	}
	now = now.Add(17 * time.Minute)
	r2 := attempt()
	if r2.URL != r1.URL {
		t.Errorf("retry URL %s, first %s: want the same object", r2.URL, r1.URL)
	}
	if r2.HeaderValue("X-Amz-Date") == r1.HeaderValue("X-Amz-Date") || r2.HeaderValue("Authorization") == r1.HeaderValue("Authorization") {
		t.Error("retry not signed at its own time")
	}

	other := auth.Request{URL: "https://bucket.s3.eu-west-1.amazonaws.com/fleet/in/", Batch: auth.Batch{ID: "b2", Time: batch.Time}}
	if err := s.Sign(context.Background(), &other); err != nil {
		t.Fatal(err)
	}
	if other.URL == r1.URL || !strings.HasSuffix(other.URL, "/fleet/in/2024/03/05/20240305T140312.457Z_b2") {
		t.Errorf("another batch in the same millisecond: %s", other.URL)
	}

	for _, b := range []auth.Batch{{Time: batch.Time}, {ID: "x"}} {
		r := auth.Request{URL: "https://bucket.s3.amazonaws.com/", Batch: b}
		if err := s.Sign(context.Background(), &r); !errors.Is(err, auth.ErrBatchIdentity) {
			t.Errorf("Sign(batch %+v) = %v, want ErrBatchIdentity", b, err)
		}
	}
}

func TestObjectName(t *testing.T) {
	f := func(b auth.Batch, want string) {
		t.Helper()
		if got := auth.ObjectName(b); got != want {
			t.Errorf("ObjectName(%+v) = %q, want %q", b, got, want)
		}
	}
	f(auth.Batch{ID: "01HRB6Q4", Time: time.Date(2024, 3, 5, 14, 3, 12, 457_999_999, time.UTC)}, "2024/03/05/20240305T140312.457Z_01HRB6Q4")
	f(auth.Batch{ID: "r1-000042", Time: time.Date(2023, 12, 31, 23, 59, 59, 0, time.FixedZone("", -5*3600))}, "2024/01/01/20240101T045959.000Z_r1-000042")
	f(auth.Batch{ID: "a/b?c%d~é", Time: time.Unix(0, 0)}, "1970/01/01/19700101T000000.000Z_a/b%3Fc%25d~%C3%A9")
}

func TestNewAWSSigV4Errors(t *testing.T) {
	const secret = "s3cr3t/Key+with+Bits"
	f := func(o auth.AWSSigV4Options, want ...string) {
		t.Helper()
		_, err := auth.NewAWSSigV4(o)
		if err == nil {
			t.Fatalf("NewAWSSigV4(%v) = nil error, want %q", o, want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewAWSSigV4(%v) = %q, want it to mention %q", o, err, w)
			}
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains the secret", err)
		}
	}
	f(auth.AWSSigV4Options{}, "aws_sigv4.region: required", "aws_sigv4.access_key_id: required", "aws_sigv4.secret_access_key: required")
	f(auth.AWSSigV4Options{Region: "eu-west-1/x", AccessKeyID: "AK", SecretAccessKey: secret}, "aws_sigv4.region")
	f(auth.AWSSigV4Options{Region: "eu-west-1", Service: "s 3", AccessKeyID: "AK", SecretAccessKey: secret}, "aws_sigv4.service")
	f(auth.AWSSigV4Options{Region: "eu-west-1", AccessKeyID: "AK,ID", SecretAccessKey: secret}, "aws_sigv4.access_key_id")
	f(auth.AWSSigV4Options{Region: "eu-west-1", AccessKeyID: "AK", SecretAccessKey: secret, SessionToken: "tok\r\nX: y"}, "aws_sigv4.session_token")
}

func TestAWSSigV4SignErrors(t *testing.T) {
	const secret = "s3cr3t/Key+with+Bits"
	s, err := auth.NewAWSSigV4(auth.AWSSigV4Options{Region: "eu-west-1", AccessKeyID: "AK", SecretAccessKey: secret, S3: true})
	if err != nil {
		t.Fatal(err)
	}
	batch := auth.Batch{ID: "b", Time: time.Now()}
	for _, u := range []string{
		"", "not a url", "/relative/path", "ftp://host/x", "https://", "https://user:pw@host/x",
		"https://host/x?a=%zz", "https://host/x?a=1;b=2", "https://ho st/x", "https://host%2F/x", "mailto:x@example.com",
		"https://host/%zz",
	} {
		r := auth.Request{URL: u, Batch: batch}
		err := s.Sign(context.Background(), &r)
		if err == nil {
			t.Errorf("Sign(%q) = nil error, URL %q", u, r.URL)
			continue
		}
		if strings.Contains(err.Error(), secret) || (strings.Contains(u, "pw") && strings.Contains(err.Error(), "pw")) {
			t.Errorf("Sign(%q) error %q leaks a secret", u, err)
		}
	}
}

func TestAWSSigV4NoSecretsPrinted(t *testing.T) {
	o := auth.AWSSigV4Options{Region: "eu-west-1", AccessKeyID: "AKID", SecretAccessKey: "very-secret-key", SessionToken: "very-secret-token"}
	s, err := auth.NewAWSSigV4(o)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("route", "auth", o)
	for _, out := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), fmt.Sprint(s), logged.String()} {
		if strings.Contains(out, "very-secret") {
			t.Errorf("printed %q", out)
		}
		if !strings.Contains(out, "AKID") {
			t.Errorf("printed %q, want the key id", out)
		}
	}
}

// cloudURLPrefixes returns u cut at every offset, the seed corpus of URL inputs.
func cloudURLPrefixes(u string) []string {
	out := make([]string, 0, len(u)+1)
	for i := 0; i <= len(u); i++ {
		out = append(out, u[:i])
	}
	return out
}

// FuzzAWSSigV4 signs arbitrary URLs, bodies, headers, secrets and batch IDs: Sign never panics,
// and whatever it signs the receiving side verifies.
func FuzzAWSSigV4(f *testing.F) {
	for _, u := range cloudURLPrefixes("https://Bucket.s3.eu-west-1.amazonaws.com:443/a%2Fb/c d?x=1&y=a+b&z#f") {
		f.Add(u, []byte(`[{"a":1}]`), awsExampleS3Secret, "gzip", "01HRB6Q4", false)
	}
	f.Add("https://h/p", []byte{}, "k", "", "", true)
	f.Add("https://h/é/%c3%a9?é=é", []byte{0, 1, 2}, "k", "  a  b ", "a/b", true)
	f.Add("http://[::1]:80/x?a=%2F&a=%2f", []byte("x"), "k", "v", "id", false)
	f.Fuzz(func(t *testing.T, rawURL string, body []byte, secret, headerValue, batchID string, s3 bool) {
		s, err := auth.NewAWSSigV4(auth.AWSSigV4Options{
			Region: "eu-west-1", AccessKeyID: "AKID", SecretAccessKey: secret, S3: s3,
			Now: cloudClock(time.Date(2024, 3, 5, 14, 3, 12, 0, time.UTC)),
		})
		if err != nil {
			if secret != "" {
				t.Fatalf("NewAWSSigV4 with a secret: %v", err)
			}
			return
		}
		if !cloudPrintable(headerValue) {
			headerValue = "x" // control characters are refused before signing (config, deliver)
		}
		r := auth.Request{
			Method: "POST", URL: rawURL, Body: body,
			Header: [][2]string{{"Content-Type", "application/json"}, {"X-Fuzz", headerValue}},
			Batch:  auth.Batch{ID: batchID, Time: time.Date(2024, 3, 5, 14, 3, 12, 0, time.UTC)},
		}
		if err := s.Sign(context.Background(), &r); err != nil {
			if len(secret) >= 16 && strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q contains the secret", err)
			}
			return
		}
		if _, err := url.Parse(r.URL); err != nil {
			t.Fatalf("signed URL %q does not parse: %v", r.URL, err)
		}
		if _, err := awsVerifySigV4(&r, secret, s3); err != nil {
			t.Fatalf("URL %q header %q: %v", rawURL, headerValue, err)
		}
	})
}

func cloudPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// cloudBatchBody is a realistic batch: 500 measurement messages in the HTTPS forwarding spec's shape, trimmed to
// one observation each, in a JSON array of about 100 KB.
func cloudBatchBody(tb testing.TB) []byte {
	tb.Helper()
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range 500 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"hashId":"qoa%03d","deviceIdentifier":"device-serial-%05d",`+
			`"observations":[{"portHashId":"e13d57","orderOfMagnitude":3,"significand":%d,"unit":"W"}],`+
			`"generatedAt":"2023-01-01T00:00:00.000Z","attempt":0}`, i, i, 7000+i)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func BenchmarkAWSSigV4(b *testing.B) {
	body := cloudBatchBody(b)
	batch := auth.Batch{ID: "01HRB6Q4ZB1T6S3N0X6V4K2M9P", Time: time.Now()}
	for _, s3 := range []bool{false, true} {
		name := "execute-api"
		u := "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/ingest"
		if s3 {
			name, u = "s3", "https://bucket.s3.eu-west-1.amazonaws.com/fleet"
		}
		b.Run(name, func(b *testing.B) {
			s, err := auth.NewAWSSigV4(auth.AWSSigV4Options{Region: "eu-west-1", AccessKeyID: awsExampleKeyID, SecretAccessKey: awsExampleS3Secret, S3: s3})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				r := auth.Request{Method: "POST", URL: u, Body: body, Batch: batch,
					Header: [][2]string{{"Content-Type", "application/json"}}}
				if err := s.Sign(ctx, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
