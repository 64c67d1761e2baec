package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com) header names and secret prefix.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
	WebhookSecretPrefix    = "whsec_"
	// DefaultWebhookTolerance is how far a webhook-timestamp may be from the verifier's clock.
	DefaultWebhookTolerance = 5 * time.Minute
)

// The specification's bounds on a symmetric signing secret.
const (
	minWebhookKey = 24
	maxWebhookKey = 64
)

var (
	// ErrWebhookSecret is returned for a secret that is not "whsec_" and the standard base64 of
	// 24 to 64 bytes.
	ErrWebhookSecret = errors.New("invalid webhook secret")
	// ErrWebhookID is returned by Webhook.Sign when the batch ID is empty or contains a '.',
	// which would make the signed content ambiguous.
	ErrWebhookID = errors.New("webhook id is empty or contains '.'")
	// ErrWebhookHeaders is returned by verification when a webhook header is missing or malformed.
	ErrWebhookHeaders = errors.New("missing or malformed webhook headers")
	// ErrWebhookTimestamp is returned by verification when webhook-timestamp is too far from now.
	ErrWebhookTimestamp = errors.New("webhook timestamp outside tolerance")
	// ErrWebhookSignature is returned by verification when no v1 signature matches.
	ErrWebhookSignature = errors.New("no matching webhook signature")
)

// WebhookOptions configures Standard Webhooks signatures.
type WebhookOptions struct {
	// Secrets are the signing secrets, each "whsec_" followed by the standard base64 (padded) of
	// 24 to 64 random bytes. Every secret signs every attempt, so during a rotation list both the
	// new and the old one: receivers accept a request if any signature verifies. At least one is
	// required. Never printed.
	Secrets []string
	// Now is the clock that stamps attempts; nil means time.Now.
	Now func() time.Time
}

// String describes o with its secrets redacted.
func (o WebhookOptions) String() string {
	return "webhook{secrets=" + strconv.Itoa(len(o.Secrets)) + "×" + redacted + "}"
}

// GoString is String, so that %#v does not print the secrets either.
func (o WebhookOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its secrets redacted.
func (o WebhookOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("secrets", len(o.Secrets)))
}

// Webhook signs attempts as the Standard Webhooks specification describes. It sets
//
//	webhook-id:        the batch ID, the same for every attempt of a batch (an idempotency key)
//	webhook-timestamp: Unix seconds of the attempt
//	webhook-signature: "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)),
//	                   one per secret, separated by spaces
//
// where key is the base64-decoded part of a "whsec_" secret, replacing those headers on a retry.
//
// A Webhook is safe for concurrent use.
type Webhook struct {
	macs []*macPool
	now  func() time.Time
}

var _ Signer = (*Webhook)(nil)

// ParseWebhookSecret returns the key of a "whsec_<base64>" secret. Its errors wrap
// ErrWebhookSecret and never contain the secret.
func ParseWebhookSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, WebhookSecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: no %q prefix", ErrWebhookSecret, WebhookSecretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64 after the prefix", ErrWebhookSecret)
	}
	if len(key) < minWebhookKey || len(key) > maxWebhookKey {
		return nil, fmt.Errorf("%w: %d bytes, want %d to %d", ErrWebhookSecret, len(key), minWebhookKey, maxWebhookKey)
	}
	return key, nil
}

// NewWebhook returns a Webhook signer for o.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	if len(o.Secrets) == 0 {
		return nil, errors.New("webhook.secrets: at least one is required")
	}
	w := &Webhook{now: o.Now, macs: make([]*macPool, 0, len(o.Secrets))}
	if w.now == nil {
		w.now = time.Now
	}
	var errs []error
	for i, s := range o.Secrets {
		key, err := ParseWebhookSecret(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook.secrets[%d]: %w", i, err))
			continue
		}
		w.macs = append(w.macs, newMACPool(sha256.New, key))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return w, nil
}

// Sign sets webhook-id, webhook-timestamp and webhook-signature on r. It fails with ErrWebhookID
// if r.Batch.ID is empty or contains a '.'.
func (w *Webhook) Sign(_ context.Context, r *Request) error {
	id := r.Batch.ID
	if id == "" || strings.IndexByte(id, '.') >= 0 {
		return ErrWebhookID
	}
	var tsb [20]byte
	ts := strconv.AppendInt(tsb[:0], w.now().Unix(), 10)

	const sigLen = len("v1,") + 44 // base64 of 32 bytes
	var out [4 * (sigLen + 1)]byte
	sig := out[:0]
	for i, p := range w.macs {
		if i > 0 {
			sig = append(sig, ' ')
		}
		sig = append(sig, "v1,"...)
		m := p.get()
		sig = appendWebhookMAC(sig, m, id, ts, r.Body)
		p.put(m)
	}
	r.SetHeader(HeaderWebhookID, id)
	r.SetHeader(HeaderWebhookTimestamp, string(ts))
	r.SetHeader(HeaderWebhookSignature, string(sig))
	return nil
}

// String describes w without its secrets.
func (w *Webhook) String() string {
	return "webhook{secrets=" + strconv.Itoa(len(w.macs)) + "×" + redacted + "}"
}

// GoString is String, so that %#v does not print the keys either.
func (w *Webhook) GoString() string { return w.String() }

// appendWebhookMAC appends base64(HMAC(id "." ts "." body)) to dst, with m freshly keyed.
func appendWebhookMAC(dst []byte, m *macState, id string, ts, body []byte) []byte {
	m.buf = append(append(append(append(m.buf[:0], id...), '.'), ts...), '.')
	m.h.Write(m.buf)
	m.h.Write(body)
	return base64.StdEncoding.AppendEncode(dst, m.h.Sum(m.sum[:0]))
}

// VerifyWebhook checks a request signed with the Standard Webhooks scheme: header returns a
// request header's value ("" if absent; http.Header.Get and Request.HeaderValue fit), body is
// the raw request body and secret a "whsec_" secret. It accepts the request if any v1
// signature matches (compared in constant time) and webhook-timestamp is within
// DefaultWebhookTolerance of time.Now. Receivers should also reject a webhook-id they have
// already processed.
func VerifyWebhook(secret string, header func(name string) string, body []byte) error {
	return VerifyWebhookAt(secret, header, body, time.Now(), DefaultWebhookTolerance)
}

// VerifyWebhookAt is VerifyWebhook with the verifier's clock reading now and a tolerance
// (DefaultWebhookTolerance if not positive). Its errors wrap ErrWebhookSecret,
// ErrWebhookHeaders, ErrWebhookTimestamp or ErrWebhookSignature.
func VerifyWebhookAt(secret string, header func(name string) string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := ParseWebhookSecret(secret)
	if err != nil {
		return err
	}
	id, tsh, sigs := header(HeaderWebhookID), header(HeaderWebhookTimestamp), header(HeaderWebhookSignature)
	if id == "" || tsh == "" || sigs == "" {
		return fmt.Errorf("%w: want %s, %s and %s", ErrWebhookHeaders, HeaderWebhookID, HeaderWebhookTimestamp, HeaderWebhookSignature)
	}
	ts, err := strconv.ParseInt(tsh, 10, 64)
	if err != nil || strconv.FormatInt(ts, 10) != tsh {
		return fmt.Errorf("%w: %s is not a Unix time in seconds", ErrWebhookHeaders, HeaderWebhookTimestamp)
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	var d uint64 // |now - ts|, without overflow
	if t := now.Unix(); t >= ts {
		d = uint64(t) - uint64(ts)
	} else {
		d = uint64(ts) - uint64(t)
	}
	if d > uint64(tolerance/time.Second) {
		return ErrWebhookTimestamp
	}
	want := appendWebhookMAC(nil, &macState{h: hmac.New(sha256.New, key)}, id, []byte(tsh), body)
	for sig := range strings.SplitSeq(sigs, " ") {
		v, b64, ok := strings.Cut(sig, ",")
		if ok && v == "v1" && hmac.Equal([]byte(b64), want) {
			return nil
		}
	}
	return ErrWebhookSignature
}
