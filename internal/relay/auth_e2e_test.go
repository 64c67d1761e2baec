package relay_test

// End-to-end tests of route authentication, signing and TLS: the real relay delivers over real
// HTTPS (a test CA made here) to endpoints that verify every request on their own, recomputing
// each scheme from the raw request as its published specification describes. Nothing here calls
// internal/auth to sign or verify; auth.DecryptSensoro is the one receiver-side helper used.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/auth"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/testcert"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// ---------------------------------------------------------------------------------------------
// Test PKI

// testCA is a private certificate authority: its certificate is in file (PEM), for tls.ca_file.
type testCA struct {
	*testcert.CA
	dir  string
	file string // the CA's certificate as a PEM file, for tls.ca_file
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca := &testCA{CA: testcert.NewCA(t, "fleetrelay e2e test CA"), dir: t.TempDir()}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	if err := os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// clientFiles writes a client certificate and its key as PEM files, for tls.cert_file/key_file.
func (ca *testCA) clientFiles(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	c := ca.Issue(t, false, cn)
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// serve starts an HTTPS server for h with a certificate from ca for 127.0.0.1; with mtls it
// requires a client certificate from ca. It is closed when t ends (after the relay, which was
// started later).
func (ca *testCA) serve(t testing.TB, h http.Handler, mtls bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected in some tests
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, true, "127.0.0.1")}, MinVersion: tls.VersionTLS12}
	if mtls {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = ca.Pool
	}
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// route is a route to u that trusts ca and sends at once.
func (ca *testCA) route(name, u string) config.Route {
	rt := config.DefaultRoute()
	rt.Name, rt.URL = name, u
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	rt.TLS.CAFile = ca.file
	return rt
}

// ---------------------------------------------------------------------------------------------
// Verifying endpoint

// authReq is one request exactly as the endpoint received it.
type authReq struct {
	Method string
	Host   string
	Path   string // as sent, escapes kept
	Query  string // as sent
	Header http.Header
	Body   []byte
	TLS    *tls.ConnectionState
}

// url is the request's full URL as sent.
func (rq *authReq) url() string {
	u := "https://" + rq.Host + rq.Path
	if rq.Query != "" {
		u += "?" + rq.Query
	}
	return u
}

// authEndpoint is an HTTPS endpoint whose check verifies every request. A request that fails
// verification is a problem that fails the test; one that passes is answered with check's status
// (200 if 0), and with a 2xx its messages are recorded.
type authEndpoint struct {
	*httptest.Server
	// check verifies request n (1-based). It returns the status to answer and, for a 2xx, the
	// plain body holding the messages (nil: the body, gunzipped if Content-Encoding says so).
	check func(n int, rq *authReq) (status int, plain []byte, err error)

	mu       sync.Mutex
	reqs     []*authReq
	msgs     map[string]int // msgId → accepted deliveries
	problems []string
}

func newAuthEndpoint(t testing.TB, ca *testCA, mtls bool, check func(n int, rq *authReq) (int, []byte, error)) *authEndpoint {
	e := &authEndpoint{check: check, msgs: map[string]int{}}
	e.Server = ca.serve(t, e, mtls)
	return e
}

func (e *authEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	rq := &authReq{Method: r.Method, Host: r.Host, Header: r.Header.Clone(), Body: body, TLS: r.TLS}
	rq.Path, rq.Query, _ = strings.Cut(r.RequestURI, "?")
	e.mu.Lock()
	e.reqs = append(e.reqs, rq)
	n := len(e.reqs)
	e.mu.Unlock()

	status, plain, err := e.check(n, rq)
	if err == nil && status == 0 {
		status = http.StatusOK
	}
	var ids []string
	if err == nil && status/100 == 2 {
		if plain == nil {
			plain, err = decodeBody(rq)
		}
		if err == nil {
			ids, err = msgIDs(plain)
		}
	}
	if err != nil {
		e.mu.Lock()
		e.problems = append(e.problems, fmt.Sprintf("request %d, %s %s: %v", n, r.Method, r.RequestURI, err))
		e.mu.Unlock()
		http.Error(w, "verification failed", http.StatusForbidden)
		return
	}
	e.mu.Lock()
	for _, id := range ids {
		e.msgs[id]++
	}
	e.mu.Unlock()
	w.WriteHeader(status)
}

// requests returns the requests received so far.
func (e *authEndpoint) requests() []*authReq {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.reqs)
}

// waitMsgs waits until every message of want was accepted, failing at once on a verification
// problem, then checks that each was accepted once and nothing else was.
func (e *authEndpoint) waitMsgs(t testing.TB, want []string) {
	t.Helper()
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.problems) > 0 {
			t.Fatalf("endpoint rejected requests:\n%s", strings.Join(e.problems, "\n"))
		}
		missing := 0
		for _, id := range want {
			if e.msgs[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d messages not delivered (%d requests so far)", missing, len(want), len(e.reqs))
		}
		return nil
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	wanted := map[string]bool{}
	for _, id := range want {
		wanted[id] = true
	}
	for id, n := range e.msgs {
		if n != 1 || !wanted[id] {
			t.Errorf("message %s accepted %d times (wanted: %t)", id, n, wanted[id])
		}
	}
}

// decodeBody returns the body of rq without its Content-Encoding.
func decodeBody(rq *authReq) ([]byte, error) {
	switch ce := rq.Header.Get("Content-Encoding"); ce {
	case "", "identity":
		return rq.Body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(rq.Body))
		if err != nil {
			return nil, fmt.Errorf("gzip body: %w", err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("gzip body: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unexpected Content-Encoding %q", ce)
	}
}

// wireMsg is what the tests read of a delivered message (envelope or sensoro format).
type wireMsg struct {
	MsgID  string `json:"msgId"`
	Serial string `json:"serial"`
	SN     string `json:"sn"`
	AppID  string `json:"appId"`
}

// parseMsgs reads a body: a JSON array of messages or one message object.
func parseMsgs(plain []byte) ([]wireMsg, error) {
	plain = bytes.TrimSpace(plain)
	var ms []wireMsg
	if len(plain) > 0 && plain[0] == '[' {
		if err := json.Unmarshal(plain, &ms); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of messages: %v", err)
		}
	} else {
		var m wireMsg
		if err := json.Unmarshal(plain, &m); err != nil {
			return nil, fmt.Errorf("body is not a JSON message: %v", err)
		}
		ms = []wireMsg{m}
	}
	for _, m := range ms {
		if m.MsgID == "" {
			return nil, fmt.Errorf("message without msgId in %.200s", plain)
		}
	}
	return ms, nil
}

func msgIDs(plain []byte) ([]string, error) {
	ms, err := parseMsgs(plain)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.MsgID
	}
	return ids, nil
}

// ---------------------------------------------------------------------------------------------
// Relay and devices

// startAuthRelay starts a relay with routes; mod, if set, changes the config before it resolves.
func startAuthRelay(t *testing.T, mod func(*config.Config), routes ...config.Route) *relay.Relay {
	t.Helper()
	cfg := testConfig(t, nil)
	cfg.Delivery.AllowPrivateNetworks = true // endpoints are on 127.0.0.1
	cfg.Routes = append(cfg.Routes, routes...)
	if mod != nil {
		mod(cfg)
	}
	cfg.Resolve()
	return startRelay(t, cfg)
}

// sendRecords sends n one-record frames from d and waits until they are acknowledged; it
// returns the msgIds the relay gives them.
func sendRecords(t *testing.T, d *loadgen.Device, serial string, n int) []string {
	t.Helper()
	var ids []string
	var last uint64
	for i := range n {
		seq, err := d.Send(record(serial, d.NextSeq(), i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, fmt.Sprintf("%s-%d-0", serial, seq))
		last = seq
	}
	waitAcked(t, d, last)
	return ids
}

// deviceSends connects serial to r and sends n records.
func deviceSends(t *testing.T, r *relay.Relay, serial string, n int) (*loadgen.Device, []string) {
	t.Helper()
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: serial}, 1)
	return d, sendRecords(t, d, serial, n)
}

// startLoggedRelay is startRelay with the relay's log captured.
func startLoggedRelay(t *testing.T, cfg *config.Config) (*relay.Relay, *relaytest.LogBuffer) {
	t.Helper()
	buf := &relaytest.LogBuffer{}
	var w io.Writer = buf
	if testing.Verbose() {
		w = io.MultiWriter(buf, os.Stderr)
	}
	return relaytest.StartLogged(t, cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))), buf
}

// ---------------------------------------------------------------------------------------------
// Independent verifiers, written from the schemes' specifications

func hmacSHA256(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// verifyBasic checks an RFC 7617 Authorization header.
func verifyBasic(rq *authReq, user, pass string) error {
	scheme, cred, ok := strings.Cut(rq.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return fmt.Errorf("Authorization %q is not Basic", rq.Header.Get("Authorization"))
	}
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return fmt.Errorf("Basic credentials are not base64: %v", err)
	}
	u, p, ok := strings.Cut(string(raw), ":")
	if !ok || u != user || p != pass {
		return fmt.Errorf("Basic credentials %q, want %q:%q", raw, user, pass)
	}
	return nil
}

// verifyHMAC checks header = hex(HMAC-SHA-512(key, body as received)).
func verifyHMAC(rq *authReq, header string, key []byte) error {
	m := hmac.New(sha512.New, key)
	m.Write(rq.Body)
	want := hex.EncodeToString(m.Sum(nil))
	if got := rq.Header.Get(header); got != want {
		return fmt.Errorf("%s = %q, want HMAC-SHA-512 of the %d bytes received %q", header, got, len(rq.Body), want)
	}
	return nil
}

// verifySensoro checks SENSORO's message signature: X-ACCESS-SIGNATURE =
// base64(HMAC-SHA256(AppSecret, nonce + METHOD + full URL + body)), as internal/auth/sensoro.go
// documents the string it signs.
func verifySensoro(rq *authReq, appID string, secret []byte) error {
	id, nonce, sig := rq.Header.Get("X-ACCESS-ID"), rq.Header.Get("X-ACCESS-NONCE"), rq.Header.Get("X-ACCESS-SIGNATURE")
	if id != appID {
		return fmt.Errorf("X-ACCESS-ID = %q, want %q", id, appID)
	}
	ms, err := strconv.ParseInt(nonce, 10, 64)
	if err != nil {
		return fmt.Errorf("X-ACCESS-NONCE %q is not a number", nonce)
	}
	if d := time.Since(time.UnixMilli(ms)); d < -5*time.Minute || d > 5*time.Minute {
		return fmt.Errorf("X-ACCESS-NONCE %s is %v from now, not a current Unix time in ms", nonce, d)
	}
	want := base64.StdEncoding.EncodeToString(hmacSHA256(secret, nonce, strings.ToUpper(rq.Method), rq.url(), string(rq.Body)))
	if sig != want {
		return fmt.Errorf("X-ACCESS-SIGNATURE = %q, want %q over %q + %q + %q + body", sig, want, nonce, rq.Method, rq.url())
	}
	return nil
}

// verifyWebhook checks a Standard Webhooks request against every secret: each must have signed
// it. It returns the webhook-id.
func verifyWebhook(rq *authReq, secrets []string) (string, error) {
	id, ts, sigs := rq.Header.Get("webhook-id"), rq.Header.Get("webhook-timestamp"), rq.Header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return "", fmt.Errorf("webhook headers missing: id %q, timestamp %q, signature %q", id, ts, sigs)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", fmt.Errorf("webhook-timestamp %q is not Unix seconds", ts)
	}
	if d := time.Since(time.Unix(sec, 0)); d < -5*time.Minute || d > 5*time.Minute {
		return "", fmt.Errorf("webhook-timestamp %s outside the 5 minute tolerance", ts)
	}
	present := map[string]bool{}
	for _, s := range strings.Fields(sigs) {
		present[s] = true
	}
	for i, s := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			return "", err
		}
		want := "v1," + base64.StdEncoding.EncodeToString(hmacSHA256(key, id, ".", ts, ".", string(rq.Body)))
		if !present[want] {
			return "", fmt.Errorf("no v1 signature by secret %d in %q", i, sigs)
		}
	}
	if len(present) != len(secrets) {
		return "", fmt.Errorf("%d signatures for %d secrets: %q", len(present), len(secrets), sigs)
	}
	return id, nil
}

// sigV4 is a receiver's knowledge of AWS credentials.
type sigV4 struct {
	keyID, secret, token, region, service string
	s3                                    bool
	mustSign                              []string // headers that must be among SignedHeaders
}

// awsEscape URI-encodes s as SigV4 does: every byte but the RFC 3986 unreserved characters
// (and '/' if keepSlash) as %XY with upper-case hex.
func awsEscape(s string, keepSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 || keepSlash && c == '/' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// verify recomputes the request's AWS Signature Version 4 (the published algorithm: canonical
// request, string to sign, derived signing key) and compares it with its Authorization header.
func (c sigV4) verify(rq *authReq) error {
	authz := rq.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(authz, "AWS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("Authorization %q is not AWS4-HMAC-SHA256", authz)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	amzDate := rq.Header.Get("X-Amz-Date")
	at, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return fmt.Errorf("X-Amz-Date %q: %v", amzDate, err)
	}
	if d := time.Since(at); d < -15*time.Minute || d > 15*time.Minute {
		return fmt.Errorf("X-Amz-Date %s is %v from now", amzDate, d)
	}
	scope := amzDate[:8] + "/" + c.region + "/" + c.service + "/aws4_request"
	if want := c.keyID + "/" + scope; fields["Credential"] != want {
		return fmt.Errorf("Credential %q, want %q", fields["Credential"], want)
	}
	sum := sha256.Sum256(rq.Body)
	payload := hex.EncodeToString(sum[:])
	if got := rq.Header.Get("X-Amz-Content-Sha256"); got != payload {
		return fmt.Errorf("x-amz-content-sha256 %q, want sha256 of the body %q", got, payload)
	}
	if got := rq.Header.Get("X-Amz-Security-Token"); got != c.token {
		return fmt.Errorf("X-Amz-Security-Token %q, want %q", got, c.token)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if !slices.IsSorted(signed) {
		return fmt.Errorf("SignedHeaders %q not sorted", fields["SignedHeaders"])
	}
	for _, h := range append([]string{"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}, c.mustSign...) {
		if !slices.Contains(signed, h) {
			return fmt.Errorf("SignedHeaders %q lack %s", fields["SignedHeaders"], h)
		}
	}
	var canonHeaders strings.Builder
	for _, h := range signed {
		if h != strings.ToLower(h) {
			return fmt.Errorf("signed header %q is not lower case", h)
		}
		var vals []string
		if h == "host" {
			vals = []string{rq.Host}
		} else {
			vals = slices.Clone(rq.Header.Values(h))
		}
		if len(vals) == 0 {
			return fmt.Errorf("signed header %s not received", h)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ") // trimmed, inner runs of spaces collapsed
		}
		canonHeaders.WriteString(h + ":" + strings.Join(vals, ",") + "\n")
	}
	// The canonical URI: S3 signs the path as it is (URI-encoded once); other services encode
	// each segment of the sent (already encoded) path once more.
	var canonURI string
	if c.s3 {
		dec, err := url.PathUnescape(rq.Path)
		if err != nil {
			return fmt.Errorf("path %q: %v", rq.Path, err)
		}
		canonURI = awsEscape(dec, true)
		if canonURI != rq.Path {
			return fmt.Errorf("S3 path sent as %q, not strictly encoded (%q)", rq.Path, canonURI)
		}
	} else {
		canonURI = awsEscape(rq.Path, true)
	}
	type param struct{ k, v string }
	var params []param
	if rq.Query != "" {
		for _, kv := range strings.Split(rq.Query, "&") {
			k, v, _ := strings.Cut(kv, "=")
			dk, err1 := url.QueryUnescape(k)
			dv, err2 := url.QueryUnescape(v)
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("query %q: %v", rq.Query, err)
			}
			params = append(params, param{awsEscape(dk, false), awsEscape(dv, false)})
		}
	}
	slices.SortFunc(params, func(a, b param) int {
		if n := strings.Compare(a.k, b.k); n != 0 {
			return n
		}
		return strings.Compare(a.v, b.v)
	})
	var q []string
	for _, p := range params {
		q = append(q, p.k+"="+p.v)
	}
	canonReq := strings.Join([]string{rq.Method, canonURI, strings.Join(q, "&"), canonHeaders.String(),
		fields["SignedHeaders"], payload}, "\n")
	crSum := sha256.Sum256([]byte(canonReq))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crSum[:])
	key := hmacSHA256([]byte("AWS4"+c.secret), amzDate[:8])
	key = hmacSHA256(key, c.region)
	key = hmacSHA256(key, c.service)
	key = hmacSHA256(key, "aws4_request")
	if want := hex.EncodeToString(hmacSHA256(key, toSign)); fields["Signature"] != want {
		return fmt.Errorf("Signature %s, want %s for canonical request\n%s", fields["Signature"], want, canonReq)
	}
	return nil
}

// objectPath matches <prefix>/{YYYY}/{MM}/{DD}/{timestamp}_{batch id}<ext> as internal/auth's
// ObjectName documents it; it returns the batch ID.
func objectPath(prefix, ext, path string) (string, error) {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `/(\d{4})/(\d{2})/(\d{2})/(\d{8})T\d{6}\.\d{3}Z_([A-Za-z0-9._~-]+)` + regexp.QuoteMeta(ext) + `$`)
	m := re.FindStringSubmatch(path)
	if m == nil {
		return "", fmt.Errorf("path %q is not %s/YYYY/MM/DD/YYYYMMDDTHHMMSS.mmmZ_<id>%s", path, prefix, ext)
	}
	if m[1]+m[2]+m[3] != m[4] {
		return "", fmt.Errorf("path %q: date folders %s/%s/%s differ from the timestamp's date %s", path, m[1], m[2], m[3], m[4])
	}
	return m[5], nil
}

// verifyBlobSAS recomputes a Blob service SAS for a container (sr=c) from the string-to-sign
// documented for versions 2020-12-06 and later ("Create a service SAS") and compares its sig.
func verifyBlobSAS(rq *authReq, account string, key []byte, container string) error {
	q, err := url.ParseQuery(rq.Query)
	if err != nil {
		return fmt.Errorf("query %q: %v", rq.Query, err)
	}
	for _, p := range []string{"sv", "sr", "sp", "se", "sig"} {
		if q.Get(p) == "" {
			return fmt.Errorf("SAS lacks %s: %q", p, rq.Query)
		}
	}
	if sv := q.Get("sv"); sv < "2020-12-06" {
		return fmt.Errorf("sv %s predates the 2020-12-06 string-to-sign", sv)
	}
	if q.Get("sr") != "c" || !strings.Contains(q.Get("sp"), "c") || !strings.Contains(q.Get("sp"), "w") {
		return fmt.Errorf("SAS sr=%s sp=%s, want a container SAS allowing create and write", q.Get("sr"), q.Get("sp"))
	}
	se, err := time.Parse(time.RFC3339, q.Get("se"))
	if err != nil || !se.After(time.Now()) {
		return fmt.Errorf("se %q is not a future time", q.Get("se"))
	}
	sts := strings.Join([]string{
		q.Get("sp"), q.Get("st"), q.Get("se"),
		"/blob/" + account + "/" + container,
		q.Get("si"), q.Get("sip"), q.Get("spr"), q.Get("sv"), q.Get("sr"),
		"", // signedSnapshotTime: none for a container
		q.Get("ses"), q.Get("rscc"), q.Get("rscd"), q.Get("rsce"), q.Get("rscl"), q.Get("rsct"),
	}, "\n")
	if want := base64.StdEncoding.EncodeToString(hmacSHA256(key, sts)); q.Get("sig") != want {
		return fmt.Errorf("sig %q, want %q for string-to-sign %q", q.Get("sig"), want, sts)
	}
	return nil
}

// verifyEventHubs checks "SharedAccessSignature sr=…&sig=…&se=…&skn=…": sig is
// base64(HMAC-SHA256(key, sr + "\n" + se)) with sr exactly as it appears in the token (the
// URL-encoded resource), the resource covers the request URL, and se is in the future.
func verifyEventHubs(rq *authReq, keyName, key string) error {
	authz := rq.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(authz, "SharedAccessSignature ")
	if !ok {
		return fmt.Errorf("Authorization %q is not a SharedAccessSignature", authz)
	}
	raw := map[string]string{}
	for _, kv := range strings.Split(tok, "&") {
		k, v, _ := strings.Cut(kv, "=")
		raw[k] = v
	}
	for _, k := range []string{"sr", "sig", "se", "skn"} {
		if raw[k] == "" {
			return fmt.Errorf("token lacks %s: %q", k, tok)
		}
	}
	resource, err := url.QueryUnescape(raw["sr"])
	if err != nil {
		return fmt.Errorf("sr %q: %v", raw["sr"], err)
	}
	target := "https://" + rq.Host + rq.Path
	if !strings.HasPrefix(strings.ToLower(target), strings.ToLower(resource)) {
		return fmt.Errorf("sr %q does not cover %q", resource, target)
	}
	se, err := strconv.ParseInt(raw["se"], 10, 64)
	if err != nil || se <= time.Now().Unix() {
		return fmt.Errorf("se %q is not a future Unix time", raw["se"])
	}
	if skn, _ := url.QueryUnescape(raw["skn"]); skn != keyName {
		return fmt.Errorf("skn %q, want %q", skn, keyName)
	}
	sig, err := url.QueryUnescape(raw["sig"])
	if err != nil {
		return fmt.Errorf("sig %q: %v", raw["sig"], err)
	}
	if want := base64.StdEncoding.EncodeToString(hmacSHA256([]byte(key), raw["sr"]+"\n"+raw["se"])); sig != want {
		return fmt.Errorf("sig %q, want %q", sig, want)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// OAuth2 servers

// oauthServer is a client-credentials token endpoint (RFC 6749 §4.4) and a data endpoint that
// accepts only tokens it issued, not expired and not revoked.
type oauthServer struct {
	data     *authEndpoint
	token    *httptest.Server
	style    string
	id       string
	secret   string
	lifetime time.Duration

	revokeNext atomic.Bool // the next request with a valid token: revoke it, answer 401

	mu          sync.Mutex
	issued      map[string]time.Time // token → issue time
	order       []string             // tokens in issue order
	tokenProbs  []string
	revoked     string    // the revoked token
	revokedAt   time.Time // when it was revoked
	afterRevoke int       // requests that presented the revoked token again
	expired     int       // requests with an expired token
	firstOK     string    // the token of the first accepted request after the revocation
	okRequests  int
}

func newOAuthServer(t *testing.T, ca *testCA, style string, lifetime time.Duration) *oauthServer {
	o := &oauthServer{style: style, id: "relay client:1", secret: "s3:cr/t+ &ü=%", lifetime: lifetime,
		issued: map[string]time.Time{}}
	o.token = ca.serve(t, http.HandlerFunc(o.serveToken), false)
	o.data = newAuthEndpoint(t, ca, false, o.checkData)
	return o
}

// clientCredentials returns the client's id and secret as RFC 6749 §2.3.1 has them sent in the
// auth style expected: HTTP Basic over the form-encoded id and secret, or form fields.
func (o *oauthServer) clientCredentials(r *http.Request, form url.Values) (string, string, error) {
	authz := r.Header.Get("Authorization")
	switch o.style {
	case config.AuthStyleHeader:
		if form.Has("client_secret") {
			return "", "", errors.New("client_secret in the body as well as in the header")
		}
		scheme, cred, _ := strings.Cut(authz, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return "", "", fmt.Errorf("no Basic Authorization (got %q)", authz)
		}
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return "", "", err
		}
		eid, esecret, ok := strings.Cut(string(raw), ":")
		if !ok {
			return "", "", errors.New("Basic credentials without ':'")
		}
		id, err1 := url.QueryUnescape(eid)
		secret, err2 := url.QueryUnescape(esecret)
		if err := errors.Join(err1, err2); err != nil {
			return "", "", fmt.Errorf("credentials not form-encoded: %v", err)
		}
		return id, secret, nil
	default:
		if authz != "" {
			return "", "", fmt.Errorf("Authorization %q with credentials in the body", authz)
		}
		return form.Get("client_id"), form.Get("client_secret"), nil
	}
}

func (o *oauthServer) serveToken(w http.ResponseWriter, r *http.Request) {
	fail := func(format string, args ...any) {
		o.mu.Lock()
		o.tokenProbs = append(o.tokenProbs, fmt.Sprintf(format, args...))
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
	}
	body, _ := io.ReadAll(r.Body)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); r.Method != http.MethodPost || mt != "application/x-www-form-urlencoded" {
		fail("token request %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		fail("token request body %q: %v", body, err)
		return
	}
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		fail("grant_type %q", gt)
		return
	}
	id, secret, err := o.clientCredentials(r, form)
	if err != nil {
		fail("client authentication (%s): %v", o.style, err)
		return
	}
	if id != o.id || secret != o.secret {
		fail("client credentials %q/%q, want %q/%q", id, secret, o.id, o.secret)
		return
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	o.mu.Lock()
	tok := fmt.Sprintf("at%d-%x", len(o.order)+1, rnd)
	o.issued[tok] = time.Now()
	o.order = append(o.order, tok)
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int(o.lifetime / time.Second)})
}

func (o *oauthServer) checkData(n int, rq *authReq) (int, []byte, error) {
	tok, ok := strings.CutPrefix(rq.Header.Get("Authorization"), "Bearer ")
	o.mu.Lock()
	defer o.mu.Unlock()
	issued, known := o.issued[tok]
	switch {
	case !ok || !known:
		return 0, nil, fmt.Errorf("Authorization %q is no token issued", rq.Header.Get("Authorization"))
	case tok == o.revoked:
		o.afterRevoke++
		return http.StatusUnauthorized, nil, nil
	case time.Since(issued) >= o.lifetime:
		o.expired++
		return http.StatusUnauthorized, nil, nil
	case o.revoked == "" && o.revokeNext.CompareAndSwap(true, false):
		o.revoked, o.revokedAt = tok, time.Now()
		return http.StatusUnauthorized, nil, nil
	}
	if o.revoked != "" && o.firstOK == "" {
		o.firstOK = tok
	}
	o.okRequests++
	return http.StatusOK, nil, nil
}

func (o *oauthServer) route(ca *testCA, name string) config.Route {
	rt := ca.route(name, o.data.URL+"/in")
	rt.Auth.OAuth2 = &config.OAuth2{TokenURL: o.token.URL + "/oauth/token", ClientID: o.id,
		ClientSecret: config.SecretValue(o.secret), AuthStyle: o.style}
	return rt
}

func (o *oauthServer) noTokenProblems(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.tokenProbs) > 0 {
		t.Fatalf("token endpoint rejected requests:\n%s", strings.Join(o.tokenProbs, "\n"))
	}
}

// ---------------------------------------------------------------------------------------------
// Tests

// Every authentication and signing scheme of a route, end to end over HTTPS with a private CA,
// each verified by the receiving server on its own from the raw request.
func TestAuthE2E(t *testing.T) {
	ca := newTestCA(t)

	// The Authorization header decodes to the configured user and password.
	t.Run("basic", func(t *testing.T) {
		t.Parallel()
		const user, pass = "fleet-relay", "pä ss:wörd!"
		e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
			return 0, nil, verifyBasic(rq, user, pass)
		})
		rt := ca.route("basic", e.URL+"/in")
		rt.Auth.Basic = &config.BasicAuth{Username: user, Password: config.SecretValue(pass)}
		r := startAuthRelay(t, nil, rt)
		_, want := deviceSends(t, r, "B1", 5)
		e.waitMsgs(t, want)
	})

	// Per-device credentials: Authorization: "[CUSTOM1]" from the fleet metadata; each batch is
	// one device's ([SERIAL] in the URL) and carries that device's key.
	t.Run("per_device_custom1", func(t *testing.T) {
		t.Parallel()
		keys := map[string]string{"PD1": "pd1-key-7f3a", "PD2": "pd2-key-91c0"}
		e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
			serial := strings.TrimPrefix(rq.Path, "/pd/")
			key, ok := keys[serial]
			if !ok {
				return 0, nil, fmt.Errorf("unknown device path %q", rq.Path)
			}
			if got := rq.Header.Get("Authorization"); got != key {
				return 0, nil, fmt.Errorf("Authorization %q for %s, want its key %q", got, serial, key)
			}
			ms, err := parseMsgs(rq.Body)
			if err != nil {
				return 0, nil, err
			}
			for _, m := range ms {
				if m.Serial != serial {
					return 0, nil, fmt.Errorf("message of %s in %s's batch", m.Serial, serial)
				}
			}
			return 0, nil, nil
		})
		rt := ca.route("perdevice", e.URL+"/pd/[SERIAL]")
		rt.Headers = map[string]string{"Authorization": "[CUSTOM1]"}
		r := startAuthRelay(t, func(cfg *config.Config) {
			cfg.Fleet = []config.Device{{ID: "PD1", Custom1: keys["PD1"]}, {ID: "PD2", Custom1: keys["PD2"]}}
		}, rt)
		d1 := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "PD1"}, 1)
		d2 := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "PD2"}, 1)
		var want []string
		for range 3 {
			want = append(want, sendRecords(t, d1, "PD1", 2)...)
			want = append(want, sendRecords(t, d2, "PD2", 2)...)
		}
		e.waitMsgs(t, want)
		paths := map[string]bool{}
		for _, rq := range e.requests() {
			paths[rq.Path] = true
		}
		if !paths["/pd/PD1"] || !paths["/pd/PD2"] {
			t.Fatalf("requests went to %v, want both devices' URLs", paths)
		}
	})

	// OAuth2 client credentials with short-lived tokens, in both auth styles: every message is
	// delivered with a currently valid token, a token revoked while still valid (401) is
	// replaced, and tokens are fetched a bounded number of times, not per request.
	for _, style := range []string{config.AuthStyleHeader, config.AuthStyleBody} {
		t.Run("oauth2_"+style, func(t *testing.T) {
			t.Parallel()
			const lifetime = 2 * time.Second
			o := newOAuthServer(t, ca, style, lifetime)
			start := time.Now()
			r := startAuthRelay(t, nil, o.route(ca, "oauth2"))
			d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "O1"}, 1)
			var want []string
			for wave := 0; wave < 10 || time.Since(start) < 3*lifetime/2; wave++ {
				if wave == 5 {
					o.revokeNext.Store(true)
				}
				ids := sendRecords(t, d, "O1", 2)
				want = append(want, ids...)
				o.data.waitMsgs(t, want)
				time.Sleep(20 * time.Millisecond)
			}
			elapsed := time.Since(start)
			o.noTokenProblems(t)
			o.mu.Lock()
			defer o.mu.Unlock()
			t.Logf("%d tokens for %d accepted requests in %v; the revoked token was presented %d more times, an expired one %d times",
				len(o.order), o.okRequests, elapsed.Round(time.Millisecond), o.afterRevoke, o.expired)
			if o.revoked == "" {
				t.Fatal("no token was revoked")
			}
			if o.firstOK == "" || o.firstOK == o.revoked || !o.issued[o.firstOK].After(o.revokedAt) {
				t.Fatalf("first accepted request after the revocation carried %q (issued %v), want a token fetched after the revocation at %v",
					o.firstOK, o.issued[o.firstOK], o.revokedAt)
			}
			// Refreshed ahead of expiry (at half the lifetime here), plus one for the revocation.
			if bound := int(elapsed/(lifetime/2)) + 3; len(o.order) > bound || len(o.order) < 2 {
				t.Fatalf("%d token requests in %v with %v tokens, want 2 to %d", len(o.order), elapsed, lifetime, bound)
			}
		})
	}

	// OAuth2: a 401 drops the token the rejected attempt carried, however fresh (the relay
	// reports the attempt, so the signer's grace period for 401s without one does not apply and
	// nothing waits for it): the very next attempt carries a new token, and the batch is delivered.
	t.Run("oauth2_unauthorized", func(t *testing.T) {
		t.Parallel()
		o := newOAuthServer(t, ca, config.AuthStyleHeader, time.Hour)
		r := startAuthRelay(t, nil, o.route(ca, "oauth2"))
		d, want := deviceSends(t, r, "OU1", 1)
		o.data.waitMsgs(t, want)
		o.mu.Lock()
		first := o.order[0]
		o.mu.Unlock()
		o.revokeNext.Store(true)
		want = append(want, sendRecords(t, d, "OU1", 1)...)
		o.data.waitMsgs(t, want)
		o.noTokenProblems(t)
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.revoked != first || o.afterRevoke != 0 || len(o.order) != 2 || o.firstOK != o.order[1] {
			t.Fatalf("revoked %q (first %q), presented again %d times, tokens %v, first accepted after %q; want the first revoked, not presented again, one new token",
				o.revoked, first, o.afterRevoke, o.order, o.firstOK)
		}
	})

	// HMAC-SHA-512 (hex) in hash-key over the exact bytes received, also gzip-compressed.
	for _, compression := range []string{config.CompressionNone, config.CompressionGzip} {
		t.Run("hmac_"+compression, func(t *testing.T) {
			t.Parallel()
			key := []byte("bewhere-api-key-5f1c")
			e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
				if err := verifyHMAC(rq, "hash-key", key); err != nil {
					return 0, nil, err
				}
				if ce := rq.Header.Get("Content-Encoding"); compression == config.CompressionGzip && ce != "gzip" {
					return 0, nil, fmt.Errorf("Content-Encoding %q, want gzip", ce)
				}
				return 0, nil, nil
			})
			rt := ca.route("hmac", e.URL+"/in")
			rt.Compression = compression
			rt.Sign.HMAC = &config.HMACSign{Key: config.SecretValue(string(key))}
			r := startAuthRelay(t, nil, rt)
			_, want := deviceSends(t, r, "H1", 20)
			e.waitMsgs(t, want)
		})
	}

	// SENSORO signature over nonce + METHOD + full URL + body, format sensoro, one message per
	// request; in safe mode the body is {"encryptData": …}, signed as sent, and decrypts to the
	// message.
	for _, safe := range []bool{false, true} {
		name := "sensoro"
		if safe {
			name = "sensoro_safe_mode"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const appID = "123456"
			secret, appKey := []byte("sensoro-app-secret-x1"), []byte("sensoro-app-key-0123456789")
			e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
				if err := verifySensoro(rq, appID, secret); err != nil {
					return 0, nil, err
				}
				plain := rq.Body
				if safe {
					var env map[string]json.RawMessage
					if err := json.Unmarshal(rq.Body, &env); err != nil || len(env) != 1 || env["encryptData"] == nil {
						return 0, nil, fmt.Errorf("safe-mode body %.200s is not {\"encryptData\": …}", rq.Body)
					}
					var err error
					if plain, err = auth.DecryptSensoro(appKey, rq.Body); err != nil {
						return 0, nil, err
					}
				}
				ms, err := parseMsgs(plain)
				if err != nil {
					return 0, nil, err
				}
				if len(ms) != 1 || bytes.HasPrefix(bytes.TrimSpace(plain), []byte("[")) || ms[0].AppID != appID || ms[0].SN != "S1" {
					return 0, nil, fmt.Errorf("body %.200s is not one SENSORO push of S1", plain)
				}
				return 0, plain, nil
			})
			rt := ca.route("sensoro", e.URL+"/sensoro/push?src=fleetrelay")
			rt.Format, rt.AppID, rt.DeviceType, rt.Body = "sensoro", appID, "node", config.BodyObject
			rt.Sign.Sensoro = &config.SensoroSign{AppSecret: config.SecretValue(string(secret)), SafeMode: safe}
			if safe {
				rt.Sign.Sensoro.AppKey = config.SecretValue(string(appKey))
			}
			r := startAuthRelay(t, nil, rt)
			_, want := deviceSends(t, r, "S1", 4)
			e.waitMsgs(t, want)
			if n := len(e.requests()); n != len(want) {
				t.Fatalf("%d requests for %d messages, want one each", n, len(want))
			}
		})
	}

	// Standard Webhooks with two secrets (rotation): both sign every request; a retried batch
	// keeps its webhook-id, different batches have different ones.
	t.Run("webhooks", func(t *testing.T) {
		t.Parallel()
		secrets := make([]string, 2)
		for i, n := range []int{32, 24} {
			b := make([]byte, n)
			_, _ = rand.Read(b)
			secrets[i] = "whsec_" + base64.StdEncoding.EncodeToString(b)
		}
		var (
			mu  sync.Mutex
			ids []string // webhook-id by request
		)
		e := newAuthEndpoint(t, ca, false, func(n int, rq *authReq) (int, []byte, error) {
			id, err := verifyWebhook(rq, secrets)
			if err != nil {
				return 0, nil, err
			}
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
			if n == 1 {
				return http.StatusServiceUnavailable, nil, nil
			}
			return 0, nil, nil
		})
		rt := ca.route("webhooks", e.URL+"/hooks")
		rt.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue(secrets[0]), config.SecretValue(secrets[1])}}
		r := startAuthRelay(t, nil, rt)
		d, want := deviceSends(t, r, "W1", 1)
		e.waitMsgs(t, want)
		want = append(want, sendRecords(t, d, "W1", 3)...)
		e.waitMsgs(t, want)
		mu.Lock()
		defer mu.Unlock()
		if len(ids) < 3 || ids[0] != ids[1] {
			t.Fatalf("webhook-ids %v: want the 503'd first attempt and its retry to share one", ids)
		}
		if slices.Contains(ids[2:], ids[0]) {
			t.Fatalf("webhook-ids %v: a later batch reuses the first batch's id", ids)
		}
		if later := slices.Compact(slices.Sorted(slices.Values(ids[2:]))); len(later) != len(ids)-2 {
			t.Fatalf("webhook-ids %v: later batches (each tried once) share ids", ids)
		}
	})

	// AWS Signature V4, recomputed by the receiver, with a session token; API Gateway style (POST,
	// the path double-encoded in the canonical request, a query) and S3 mode (PUT to
	// {YYYY}/{MM}/{DD}/{timestamp}_{id}, the same object on a retry).
	t.Run("aws_sigv4", func(t *testing.T) {
		t.Parallel()
		c := sigV4{keyID: "AKIDEXAMPLE", secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token: "FwoGZXIvYXdzEJr//session+token=",
			region: "eu-west-1", service: "execute-api", mustSign: []string{"x-device"}}
		e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
			if rq.Method != http.MethodPost {
				return 0, nil, fmt.Errorf("method %s, want POST", rq.Method)
			}
			if rq.Path != "/prod/in%20box/A1" {
				return 0, nil, fmt.Errorf("path %q, want /prod/in%%20box/A1", rq.Path)
			}
			return 0, nil, c.verify(rq)
		})
		rt := ca.route("sigv4", e.URL+"/prod/in%20box/[SERIAL]?z=last&a=b%2Fc&m=x%20y")
		rt.Headers = map[string]string{"X-Device": "[SERIAL]"}
		rt.Auth.AWSSigV4 = &config.AWSSigV4{Region: c.region, AccessKeyID: c.keyID,
			SecretAccessKey: config.SecretValue(c.secret), SessionToken: config.SecretValue(c.token)}
		r := startAuthRelay(t, nil, rt)
		_, want := deviceSends(t, r, "A1", 10)
		e.waitMsgs(t, want)
	})
	t.Run("aws_sigv4_s3", func(t *testing.T) {
		t.Parallel()
		c := sigV4{keyID: "AKIDS3EXAMPLE", secret: "s3-secret/key+value", token: "s3-session-token",
			region: "us-east-1", service: "s3", s3: true}
		var (
			mu      sync.Mutex
			objects []string // object path by request
		)
		e := newAuthEndpoint(t, ca, false, func(n int, rq *authReq) (int, []byte, error) {
			if rq.Method != http.MethodPut {
				return 0, nil, fmt.Errorf("method %s, want PUT", rq.Method)
			}
			if _, err := objectPath("/fleet-bucket/telemetry", "", rq.Path); err != nil {
				return 0, nil, err
			}
			if err := c.verify(rq); err != nil {
				return 0, nil, err
			}
			mu.Lock()
			objects = append(objects, rq.Path)
			mu.Unlock()
			if n == 1 {
				return http.StatusServiceUnavailable, nil, nil
			}
			return 0, nil, nil
		})
		rt := ca.route("s3", e.URL+"/fleet-bucket/telemetry")
		rt.Method = http.MethodPut
		rt.Auth.AWSSigV4 = &config.AWSSigV4{Region: c.region, AccessKeyID: c.keyID, S3: true,
			SecretAccessKey: config.SecretValue(c.secret), SessionToken: config.SecretValue(c.token)}
		r := startAuthRelay(t, nil, rt)
		d, want := deviceSends(t, r, "S3D", 1)
		e.waitMsgs(t, want)
		want = append(want, sendRecords(t, d, "S3D", 3)...)
		e.waitMsgs(t, want)
		mu.Lock()
		defer mu.Unlock()
		if len(objects) < 3 || objects[0] != objects[1] || slices.Contains(objects[2:], objects[0]) {
			t.Fatalf("objects PUT %q: want the retry of the first batch to PUT the same object, later batches others", objects)
		}
	})

	// Azure Blob Storage with a given SAS: PUT a BlockBlob to {YYYY}/{MM}/{DD}/{timestamp}.json
	// with the SAS as the query; a retry PUTs the same blob.
	t.Run("azure_blob_sas", func(t *testing.T) {
		t.Parallel()
		const sas = "sv=2022-11-02&ss=b&srt=co&sp=cw&se=2099-01-01T00:00:00Z&spr=https&sig=Zm9vYmFyYmF6%2Bx%2Fy%3D"
		var (
			mu    sync.Mutex
			blobs []string
		)
		e := newAuthEndpoint(t, ca, false, func(n int, rq *authReq) (int, []byte, error) {
			if rq.Method != http.MethodPut {
				return 0, nil, fmt.Errorf("method %s, want PUT", rq.Method)
			}
			if rq.Query != sas {
				return 0, nil, fmt.Errorf("query %q, want the SAS %q", rq.Query, sas)
			}
			if bt := rq.Header.Get("x-ms-blob-type"); bt != "BlockBlob" {
				return 0, nil, fmt.Errorf("x-ms-blob-type %q, want BlockBlob", bt)
			}
			if _, err := objectPath("/telemetry/fleet", ".json", rq.Path); err != nil {
				return 0, nil, err
			}
			mu.Lock()
			blobs = append(blobs, rq.Path)
			mu.Unlock()
			if n == 1 {
				return http.StatusServiceUnavailable, nil, nil
			}
			return http.StatusCreated, nil, nil
		})
		rt := ca.route("blob", e.URL+"/telemetry/fleet")
		rt.Method = http.MethodPut
		rt.Auth.AzureBlob = &config.AzureBlob{SAS: config.SecretValue("?" + sas)}
		r := startAuthRelay(t, nil, rt)
		d, want := deviceSends(t, r, "AZ1", 1)
		e.waitMsgs(t, want)
		want = append(want, sendRecords(t, d, "AZ1", 2)...)
		e.waitMsgs(t, want)
		mu.Lock()
		defer mu.Unlock()
		if len(blobs) < 3 || blobs[0] != blobs[1] || slices.Contains(blobs[2:], blobs[0]) {
			t.Fatalf("blobs PUT %q: want the retry of the first batch to PUT the same blob, later batches others", blobs)
		}
	})

	// Azure Blob Storage with a SAS generated from the account key (path-style URL, as Azurite):
	// the receiver recomputes sig from the documented string-to-sign.
	t.Run("azure_blob_account_key", func(t *testing.T) {
		t.Parallel()
		const account, container = "fleetrelaytest", "telemetry"
		key := make([]byte, 64)
		_, _ = rand.Read(key)
		e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
			if rq.Method != http.MethodPut || rq.Header.Get("x-ms-blob-type") != "BlockBlob" || rq.Header.Get("x-ms-version") == "" {
				return 0, nil, fmt.Errorf("%s with x-ms-blob-type %q, x-ms-version %q; want a BlockBlob PUT", rq.Method,
					rq.Header.Get("x-ms-blob-type"), rq.Header.Get("x-ms-version"))
			}
			if _, err := objectPath("/"+account+"/"+container+"/in", ".json", rq.Path); err != nil {
				return 0, nil, err
			}
			segs := strings.Split(strings.TrimPrefix(rq.Path, "/"), "/") // path style: account, container, blob
			return 0, nil, verifyBlobSAS(rq, segs[0], key, segs[1])
		})
		rt := ca.route("blobkey", e.URL+"/"+account+"/"+container+"/in")
		rt.Method = http.MethodPut
		rt.Auth.AzureBlob = &config.AzureBlob{Account: account, AccountKey: config.SecretValue(base64.StdEncoding.EncodeToString(key))}
		r := startAuthRelay(t, nil, rt)
		_, want := deviceSends(t, r, "AZ2", 5)
		e.waitMsgs(t, want)
	})

	// Azure Event Hubs: Authorization: SharedAccessSignature sr=…&sig=…&se=…&skn=…, recomputed.
	t.Run("azure_event_hubs", func(t *testing.T) {
		t.Parallel()
		const keyName, key = "RootManageSharedAccessKey", "c2VjcmV0LWV2ZW50LWh1YnMta2V5LXZhbHVl+/=="
		e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
			if rq.Method != http.MethodPost {
				return 0, nil, fmt.Errorf("method %s, want POST", rq.Method)
			}
			return 0, nil, verifyEventHubs(rq, keyName, key)
		})
		rt := ca.route("eventhubs", e.URL+"/MyHub/messages?api-version=2014-01&timeout=60")
		rt.Auth.AzureEventHubs = &config.AzureEventHubs{KeyName: keyName, Key: config.SecretValue(key)}
		r := startAuthRelay(t, nil, rt)
		_, want := deviceSends(t, r, "EH1", 5)
		e.waitMsgs(t, want)
	})

	// TLS: without the CA the server's certificate is refused (transport errors, nothing
	// delivered); insecure_skip_verify delivers and is warned about at start.
	t.Run("tls_ca", func(t *testing.T) {
		t.Parallel()
		e := newAuthEndpoint(t, ca, false, func(int, *authReq) (int, []byte, error) { return 0, nil, nil })
		noCA := ca.route("noca", e.URL+"/noca")
		noCA.TLS.CAFile = ""
		insecure := ca.route("insecure", e.URL+"/insecure")
		insecure.TLS = config.TLS{InsecureSkipVerify: true}
		cfg := testConfig(t, nil)
		cfg.Delivery.AllowPrivateNetworks = true
		cfg.Delivery.ShutdownGrace = config.Duration(100 * time.Millisecond) // noca never delivers
		cfg.Routes = append(cfg.Routes, noCA, insecure)
		r, logs := startLoggedRelay(t, cfg)
		_, want := deviceSends(t, r, "T1", 3)
		checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			got := map[string]int{}
			for _, rq := range e.requests() {
				got[rq.Path]++
			}
			if got["/noca"] > 0 {
				return fmt.Errorf("route noca reached the server without its CA")
			}
			if n := metric(t, r, `fleetrelay_route_delivered_messages_total{route="insecure"}`); n != 3 {
				return fmt.Errorf("insecure delivered %v of 3", n)
			}
			if n := metric(t, r, `fleetrelay_route_requests_total{outcome="error",route="noca"}`); n < 3 {
				return fmt.Errorf("noca: %v failed requests so far", n)
			}
			return nil
		})
		e.waitMsgs(t, want) // each once, through route insecure
		if n := metric(t, r, `fleetrelay_route_delivered_messages_total{route="noca"}`); n != 0 {
			t.Fatalf("noca delivered %v messages without trusting the server's CA", n)
		}
		for _, rq := range e.requests() {
			if rq.Path != "/insecure" {
				t.Fatalf("request to %s", rq.Path)
			}
		}
		if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "insecure_skip_verify") || !strings.Contains(l, "route=insecure") {
			t.Fatalf("no warning about insecure_skip_verify for route insecure in the log:\n%s", l)
		}
	})

	// Mutual TLS: the server requires a client certificate from the CA; the route with one
	// delivers, the route without never gets through.
	t.Run("tls_mtls", func(t *testing.T) {
		t.Parallel()
		e := newAuthEndpoint(t, ca, true, func(_ int, rq *authReq) (int, []byte, error) {
			if rq.TLS == nil || len(rq.TLS.PeerCertificates) == 0 || rq.TLS.PeerCertificates[0].Subject.CommonName != "fleetrelay-client" {
				return 0, nil, errors.New("no client certificate fleetrelay-client")
			}
			return 0, nil, nil
		})
		withCert := ca.route("mtls", e.URL+"/mtls")
		withCert.TLS.CertFile, withCert.TLS.KeyFile = ca.clientFiles(t, "fleetrelay-client")
		noCert := ca.route("nocert", e.URL+"/nocert")
		r := startAuthRelay(t, func(cfg *config.Config) {
			cfg.Delivery.ShutdownGrace = config.Duration(100 * time.Millisecond) // nocert never delivers
		}, withCert, noCert)
		_, want := deviceSends(t, r, "M1", 3)
		checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			if n := metric(t, r, `fleetrelay_route_delivered_messages_total{route="mtls"}`); n != 3 {
				return fmt.Errorf("mtls delivered %v of 3", n)
			}
			if n := metric(t, r, `fleetrelay_route_requests_total{outcome="error",route="nocert"}`); n < 3 {
				return fmt.Errorf("nocert: %v failed requests so far", n)
			}
			return nil
		})
		e.waitMsgs(t, want) // each once, through route mtls
		if n := metric(t, r, `fleetrelay_route_delivered_messages_total{route="nocert"}`); n != 0 {
			t.Fatalf("nocert delivered %v messages without a client certificate", n)
		}
		for _, rq := range e.requests() {
			if rq.Path != "/mtls" {
				t.Fatalf("request to %s got through without a client certificate", rq.Path)
			}
		}
	})
}

// Secrets from the environment and from files are read when the relay starts; a secret that
// cannot be read makes relay.New fail with the config path, never the value of any secret.
// (Not parallel: it sets environment variables.)
func TestAuthSecrets(t *testing.T) {
	ca := newTestCA(t)
	const envPass, fileKey = "env-pässword-1", "file-hmac-key-2"

	t.Run("env_and_file", func(t *testing.T) {
		t.Setenv("FLEETRELAY_E2E_PASSWORD", envPass)
		keyFile := filepath.Join(t.TempDir(), "hmac.key")
		if err := os.WriteFile(keyFile, []byte(fileKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e := newAuthEndpoint(t, ca, false, func(_ int, rq *authReq) (int, []byte, error) {
			return 0, nil, errors.Join(verifyBasic(rq, "env-user", envPass), verifyHMAC(rq, "hash-key", []byte(fileKey)))
		})
		rt := ca.route("secrets", e.URL+"/in")
		rt.Auth.Basic = &config.BasicAuth{Username: "env-user", Password: config.SecretEnv("FLEETRELAY_E2E_PASSWORD")}
		rt.Sign.HMAC = &config.HMACSign{Key: config.SecretFile(keyFile)}
		cfg := testConfig(t, nil)
		cfg.Delivery.AllowPrivateNetworks = true
		cfg.Routes = append(cfg.Routes, rt)
		r, logs := startLoggedRelay(t, cfg)
		// Read at start: later changes do not reach the running relay.
		t.Setenv("FLEETRELAY_E2E_PASSWORD", "changed-after-start")
		if err := os.WriteFile(keyFile, []byte("changed-after-start\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, want := deviceSends(t, r, "SE1", 3)
		e.waitMsgs(t, want)
		for _, s := range []string{envPass, fileKey} {
			if strings.Contains(logs.String(), s) {
				t.Fatalf("the log shows a secret:\n%s", logs.String())
			}
		}
	})

	const literal, setEnv = "literal-hmac-s3cret", "sensoro-env-s3cret"
	for _, c := range []struct {
		name, path, mention string
		mod                 func(t *testing.T, rt *config.Route)
	}{
		{"unset_env", "routes[0].auth.basic.password", "FLEETRELAY_E2E_UNSET", func(t *testing.T, rt *config.Route) {
			t.Setenv("FLEETRELAY_E2E_UNSET", "")
			if err := os.Unsetenv("FLEETRELAY_E2E_UNSET"); err != nil { // restored by Setenv's cleanup
				t.Fatal(err)
			}
			rt.Auth.Basic = &config.BasicAuth{Username: "u", Password: config.SecretEnv("FLEETRELAY_E2E_UNSET")}
		}},
		{"empty_env", "routes[0].auth.basic.password", "FLEETRELAY_E2E_EMPTY", func(t *testing.T, rt *config.Route) {
			t.Setenv("FLEETRELAY_E2E_EMPTY", "")
			rt.Auth.Basic = &config.BasicAuth{Username: "u", Password: config.SecretEnv("FLEETRELAY_E2E_EMPTY")}
		}},
		{"missing_file", "routes[0].auth.basic.password", "no-such-secret", func(t *testing.T, rt *config.Route) {
			rt.Auth.Basic = &config.BasicAuth{Username: "u", Password: config.SecretFile(filepath.Join(t.TempDir(), "no-such-secret"))}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("FLEETRELAY_E2E_SET", setEnv)
			rt := ca.route("bad", "https://127.0.0.1:1/in")
			rt.Format, rt.AppID = "sensoro", "123456" // sign.sensoro needs app_id, which only format sensoro takes
			rt.Sign.HMAC = &config.HMACSign{Key: config.SecretValue(literal)}
			rt.Sign.Sensoro = &config.SensoroSign{AppSecret: config.SecretEnv("FLEETRELAY_E2E_SET")}
			c.mod(t, &rt)
			cfg := testConfig(t, nil)
			cfg.Delivery.AllowPrivateNetworks = true
			cfg.Routes = append(cfg.Routes, rt)
			cfg.Resolve()
			if err := cfg.Validate(); err != nil {
				t.Fatalf("config: %v", err)
			}
			r, err := relay.New(cfg, testLogger(t))
			if err == nil {
				_ = r.Shutdown(context.Background())
				t.Fatal("relay.New succeeded with a secret that cannot be read")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.path) || !strings.Contains(msg, c.mention) {
				t.Fatalf("relay.New: %q, want it to name %s and %s", msg, c.path, c.mention)
			}
			for _, s := range []string{literal, setEnv, envPass, fileKey} {
				if strings.Contains(msg, s) {
					t.Fatalf("relay.New: %q shows a secret value", msg)
				}
			}
			// The failed New released the store: it opens again.
			st, err := store.Open(t.Context(), store.Options{Dir: cfg.DataDir})
			if err != nil {
				t.Fatalf("store after a failed relay.New: %v", err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
