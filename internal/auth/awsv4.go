package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// ErrBatchIdentity is returned by the signers that name an object after its batch (S3 mode,
// Azure Blob) when the attempt's Batch has no ID or no time.
var ErrBatchIdentity = errors.New("auth: batch has no ID or time to name its object")

// AWSSigV4Options configures AWS Signature Version 4.
type AWSSigV4Options struct {
	// Region of the endpoint, e.g. "eu-west-1". Required.
	Region string
	// Service is the signing name of the endpoint: "execute-api" (API Gateway, the default),
	// "lambda" (function URLs), "s3" (the default in S3 mode), …
	Service string
	// AccessKeyID of the IAM credentials. Required.
	AccessKeyID string
	// SecretAccessKey of the IAM credentials. Required. Never printed.
	SecretAccessKey string
	// SessionToken of temporary credentials, sent as X-Amz-Security-Token. Never printed.
	SessionToken string
	// S3 mode (the HTTPS forwarding spec): every batch is PUT as the object
	// <url>/{YYYY}/{MM}/{DD}/{timestamp}_{batch id}, see ObjectName.
	S3 bool
	// Now is the clock that dates signatures; time.Now if nil.
	Now func() time.Time
}

// String describes o with its secret key and session token redacted.
func (o AWSSigV4Options) String() string {
	return fmt.Sprintf("aws_sigv4{region=%s service=%s access_key_id=%s secret_access_key=%s session_token=%s s3=%t}",
		o.Region, o.Service, o.AccessKeyID, redacted, redactedIfSet(o.SessionToken), o.S3)
}

// GoString is String, so that %#v does not print the secrets either.
func (o AWSSigV4Options) GoString() string { return o.String() }

// LogValue describes o for log/slog with its secret key and session token redacted.
func (o AWSSigV4Options) LogValue() slog.Value {
	return slog.GroupValue(slog.String("region", o.Region), slog.String("service", o.Service),
		slog.String("access_key_id", o.AccessKeyID), slog.String("secret_access_key", redacted),
		slog.String("session_token", redactedIfSet(o.SessionToken)), slog.Bool("s3", o.S3))
}

// AWSSigV4 signs every attempt with AWS Signature Version 4 in the Authorization header, using
// aws-sdk-go-v2's signer. It sets x-amz-content-sha256 to the SHA-256 of the exact body and signs
// it together with X-Amz-Date, X-Amz-Security-Token (temporary credentials), Host and every
// header already in the request except those the SDK never signs (Authorization, User-Agent,
// Expect, Transfer-Encoding, X-Amzn-Trace-Id) and Content-Length, which the client derives from
// the body. So it must come after any signer that adds headers the endpoint should see signed,
// and no later signer may change a signed header.
//
// Sign rewrites r.URL into the form it signed: lower-case host without a default port, the
// query in SigV4's canonical order and encoding, no fragment, and for S3 (S3 mode or service
// s3) a path with every byte outside RFC 3986's unreserved set and '/' percent-encoded, because
// S3 signs the path as it receives it. The client must send r.URL as it is (deliver's fasthttp
// client does not normalise paths). A header given twice is signed with its last value, which
// is the one deliver sends.
//
// In S3 mode, Sign also sets the method to PUT and appends the batch's object name (ObjectName)
// to the path. r.URL must then be the route's URL on every attempt, not the URL of an earlier
// attempt: the name depends only on r.Batch, so every attempt of a batch PUTs the same object
// and a retry overwrites it rather than adding a duplicate. X-Amz-Date is that of the attempt.
//
// An AWSSigV4 is safe for concurrent use. Its derived signing key is cached per day.
type AWSSigV4 struct {
	signer    *v4.Signer
	creds     aws.Credentials
	region    string
	service   string
	s3        bool
	rawS3Path bool // S3: the path is signed as sent, so it is sent strictly encoded
	now       func() time.Time
	desc      string
}

var _ Signer = (*AWSSigV4)(nil)

// NewAWSSigV4 returns an AWS Signature Version 4 signer for o.
func NewAWSSigV4(o AWSSigV4Options) (*AWSSigV4, error) {
	if o.Service == "" {
		o.Service = "execute-api"
		if o.S3 {
			o.Service = "s3"
		}
	}
	var errs []error
	// Region, service and key id go into the credential scope of the Authorization header.
	if o.Region == "" {
		errs = append(errs, errors.New("aws_sigv4.region: required"))
	} else if !scopeToken(o.Region) {
		errs = append(errs, fmt.Errorf("aws_sigv4.region: %q is not a region name", o.Region))
	}
	if !scopeToken(o.Service) {
		errs = append(errs, fmt.Errorf("aws_sigv4.service: %q is not a service signing name", o.Service))
	}
	if o.AccessKeyID == "" {
		errs = append(errs, errors.New("aws_sigv4.access_key_id: required"))
	} else if !scopeToken(o.AccessKeyID) {
		errs = append(errs, errors.New("aws_sigv4.access_key_id: must be letters and digits"))
	}
	if o.SecretAccessKey == "" {
		errs = append(errs, errors.New("aws_sigv4.secret_access_key: required"))
	}
	if !validHeaderValue(o.SessionToken) {
		errs = append(errs, errors.New("aws_sigv4.session_token: must not contain control characters"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AWSSigV4{
		signer: v4.NewSigner(),
		creds: aws.Credentials{
			AccessKeyID:     o.AccessKeyID,
			SecretAccessKey: o.SecretAccessKey,
			SessionToken:    o.SessionToken,
			Source:          "fleetrelay route",
		},
		region:    o.Region,
		service:   o.Service,
		s3:        o.S3,
		rawS3Path: o.S3 || o.Service == "s3",
		now:       o.Now,
		desc:      o.String(),
	}, nil
}

// Sign signs r as described on AWSSigV4.
func (s *AWSSigV4) Sign(ctx context.Context, r *Request) error {
	u, err := parseRouteURL(r.URL)
	if err != nil {
		return fmt.Errorf("aws_sigv4: %w", err)
	}
	path := appendPath(nil, rawPath(u), s.rawS3Path)
	if s.s3 {
		if err := checkBatch(r.Batch); err != nil {
			return err
		}
		r.Method = http.MethodPut
		path = AppendObjectName(appendSlash(path), r.Batch, "")
	}
	setRawPath(u, path)
	if r.Method == "" {
		r.Method = http.MethodPost // what deliver sends for an empty method
	}

	sum := sha256.Sum256(r.Body)
	payloadHash := hex.EncodeToString(sum[:])
	r.SetHeader("x-amz-content-sha256", payloadHash)

	hr := &http.Request{Method: r.Method, URL: u, Host: u.Host, Header: make(http.Header, len(r.Header)+3)}
	hostHeader := false
	for _, h := range r.Header {
		switch {
		case strings.EqualFold(h[0], "Host"):
			hr.Host, hostHeader = strings.ToLower(h[1]), true
		case strings.EqualFold(h[0], "Content-Length"):
			// Not signed: deliver sends the body's length whatever the header says.
		default:
			hr.Header.Set(h[0], h[1]) // the last value wins, as in deliver
		}
	}
	err = s.signer.SignHTTP(ctx, s.creds, hr, payloadHash, s.service, s.region, s.now().UTC(), func(o *v4.SignerOptions) {
		o.DisableURIPathEscaping = s.rawS3Path
	})
	if err != nil {
		return fmt.Errorf("aws_sigv4: %w", err)
	}
	r.SetHeader("X-Amz-Date", hr.Header.Get("X-Amz-Date"))
	if s.creds.SessionToken != "" {
		r.SetHeader("X-Amz-Security-Token", s.creds.SessionToken)
	}
	r.SetHeader("Authorization", hr.Header.Get("Authorization"))
	if hostHeader {
		r.SetHeader("Host", hr.Host) // as signed: without a default port
	}
	r.URL = u.String() // the signer left the canonical query in u.RawQuery
	return nil
}

// String describes s without its secrets.
func (s *AWSSigV4) String() string { return s.desc }

// ObjectName returns the name under which S3 mode and Azure Blob store batch b, without
// extension: "YYYY/MM/DD/YYYYMMDDTHHMMSS.mmmZ_<id>" from b's time in UTC and its ID, e.g.
// "2024/03/05/20240305T140312.457Z_01HRB6Q4". It is the {YYYY}/{MM}/{DD}/{timestamp} of
// the HTTPS forwarding spec; the timestamp is ISO 8601 basic format (no ':' to escape, sorts by time) and the
// batch ID after it makes the name unique per batch, however many batches start in the same
// millisecond, and the same for every attempt of one batch. Bytes of the ID outside RFC 3986's
// unreserved set are percent-encoded, except '/', which stays a folder separator: S3 may sign
// an escaped "%2F" either as sent or decoded, so it is never sent.
func ObjectName(b Batch) string {
	return string(AppendObjectName(nil, b, ""))
}

// AppendObjectName appends ObjectName(b) and then ext (e.g. ".json") to dst.
func AppendObjectName(dst []byte, b Batch, ext string) []byte {
	t := b.Time.UTC()
	dst = t.AppendFormat(dst, "2006/01/02/20060102T150405.000")
	dst = append(dst, 'Z', '_')
	dst = appendObjectID(dst, b.ID)
	return append(dst, ext...)
}

func checkBatch(b Batch) error {
	if b.ID == "" || b.Time.IsZero() {
		return ErrBatchIdentity
	}
	return nil
}

// scopeToken reports whether s can be a field of a SigV4 credential scope: letters, digits and
// '-', '_', '.'.
func scopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func redactedIfSet(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// parseRouteURL parses an attempt's absolute http(s) URL and normalises what the client would
// change on the wire anyway: the fragment is dropped, the host lower-cased and a default or
// empty port removed. A host must be a DNS name or IP address, and user information is refused
// (the client would turn it into a Basic Authorization header). Its errors never quote the URL,
// which may hold credentials (an API key in the query), only net/url's reason (e.g. the
// invalid escape or port).
func parseRouteURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("request URL: %w", err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, errors.New("request URL: not an absolute http or https URL")
	}
	if u.User != nil {
		return nil, errors.New("request URL: must not contain user information")
	}
	if u.Opaque != "" {
		return nil, errors.New("request URL: no host")
	}
	u.Host = strings.TrimSuffix(strings.ToLower(u.Host), ":")
	if !hostChars(u.Host) {
		return nil, errors.New("request URL: host has characters other than letters, digits and -._:[]")
	}
	if _, err := url.ParseQuery(u.RawQuery); err != nil {
		return nil, errors.New("request URL: invalid query")
	}
	u.Fragment, u.RawFragment = "", ""
	if p := u.Port(); (p == "443" && u.Scheme == "https") || (p == "80" && u.Scheme == "http") {
		u.Host = u.Host[:len(u.Host)-len(p)-1]
	}
	if u.Hostname() == "" {
		return nil, errors.New("request URL: no host")
	}
	return u, nil
}

// setRawPath sets u's path to the escaped path raw, which must be valid percent-encoding.
func setRawPath(u *url.URL, raw []byte) {
	u.RawPath = string(raw)
	u.Path, _ = url.PathUnescape(u.RawPath)
}

// rawPath returns u's path as it was written in the URL parsed, escapes included.
func rawPath(u *url.URL) string {
	if u.RawPath != "" {
		return u.RawPath // kept even when invalid (e.g. with a space), unlike EscapedPath
	}
	return u.EscapedPath()
}

// appendPath appends the escaped path p as it is to be sent: existing escapes are kept (their
// hex upper-cased) and bytes a path cannot hold are percent-encoded; if strict, every byte
// outside RFC 3986's unreserved set and '/' is. A strict path is S3's canonical URI, so S3,
// which signs the path as sent, gets it in that form.
func appendPath(dst []byte, p string, strict bool) []byte {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%' && i+2 < len(p) && ishex(p[i+1]) && ishex(p[i+2]):
			dst = append(dst, '%', upperhex(p[i+1]), upperhex(p[i+2]))
			i += 2
		case c == '/' || unreserved(c) || !strict && strings.IndexByte("!$&'()*+,;=:@", c) >= 0:
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
		}
	}
	return dst
}

// appendSlash appends '/' to path unless it ends in one: the folder of an object name.
func appendSlash(path []byte) []byte {
	if len(path) == 0 || path[len(path)-1] != '/' {
		path = append(path, '/')
	}
	return path
}

// appendObjectID appends a batch ID to an object name: bytes outside RFC 3986's unreserved set
// and '/' percent-encoded.
func appendObjectID(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; unreserved(c) || c == '/' {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
		}
	}
	return dst
}

const hexUpper = "0123456789ABCDEF"

// hostChars reports whether host (lower-case) has only the characters of DNS names, IP
// addresses and a port.
func hostChars(host string) bool {
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._:[]", c) >= 0) {
			return false
		}
	}
	return true
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func upperhex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}
