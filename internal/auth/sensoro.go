package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SENSORO webhook headers ("API authentication – body message signature").
const (
	HeaderSensoroID        = "X-ACCESS-ID"
	HeaderSensoroNonce     = "X-ACCESS-NONCE"
	HeaderSensoroSignature = "X-ACCESS-SIGNATURE"
)

var (
	// ErrSensoroDecrypt is returned by DecryptSensoro for a body that is not a safe-mode body
	// sealed with the given AppKey (malformed, truncated, tampered with, or another key).
	ErrSensoroDecrypt = errors.New("sensoro safe mode: cannot decrypt")
	// ErrSensoroEncoded is returned by SensoroSafeMode.Sign when the request carries a
	// Content-Encoding: safe mode replaces the body, so the encoding would no longer apply.
	ErrSensoroEncoded = errors.New("sensoro safe mode: body has a Content-Encoding; disable compression on this route")
)

// SensoroOptions configures SENSORO body message signatures.
type SensoroOptions struct {
	// AppID is the application identifier, sent as X-ACCESS-ID. Required.
	AppID string
	// AppSecret is the message signature key, used as given (the bytes of the console's
	// string). Required. Never printed.
	AppSecret []byte
	// Now is the clock that stamps attempts; nil means time.Now.
	Now func() time.Time
}

// String describes o with its secret redacted.
func (o SensoroOptions) String() string {
	return "sensoro{app_id=" + o.AppID + " app_secret=" + redacted + "}"
}

// GoString is String, so that %#v does not print the secret either.
func (o SensoroOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its secret redacted.
func (o SensoroOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("app_id", o.AppID), slog.String("app_secret", redacted))
}

// Sensoro signs attempts the way SENSORO signs its webhooks. It sets
//
//	X-ACCESS-ID:        AppID
//	X-ACCESS-NONCE:     Unix time of the attempt in milliseconds, decimal
//	X-ACCESS-SIGNATURE: base64(HMAC-SHA256(AppSecret, nonce + METHOD + URL + body))
//
// replacing them on a retry. The signed string is the plain concatenation, without separators,
// of the nonce exactly as sent, the method in upper case (POST when r.Method is empty, as the
// delivery client sends), the complete URL as the receiver sees it and the exact body bytes.
// SENSORO's sample verifier rebuilds the URL as protocol + "://" + Host + request URI, so the URL
// is signed that way: scheme and host in lower case (as the delivery client sends them), port
// and escaping kept as configured, userinfo and #fragment left out, "/" for an empty path,
// query kept. base64 is the standard, padded alphabet (Node's digest('base64')).
//
// SENSORO's sample verifier re-serialises the parsed body with JSON.stringify rather than
// hashing the raw bytes; it agrees with this signature when the body is compact JSON (which
// rendered batches and safe-mode bodies are) and no compression is configured.
//
// In safe mode, put SensoroSafeMode before Sensoro in the route's Chain, so that the signature
// covers the encrypted body that is sent.
//
// A Sensoro is safe for concurrent use.
type Sensoro struct {
	id   string
	macs *macPool
	now  func() time.Time
}

var _ Signer = (*Sensoro)(nil)

// NewSensoro returns a SENSORO signer for o.
func NewSensoro(o SensoroOptions) (*Sensoro, error) {
	var errs []error
	if o.AppID == "" {
		errs = append(errs, errors.New("sensoro.app_id: required"))
	} else if !validHeaderValue(o.AppID) {
		errs = append(errs, errors.New("sensoro.app_id: contains control characters"))
	}
	if len(o.AppSecret) == 0 {
		errs = append(errs, errors.New("sensoro.app_secret: required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s := &Sensoro{id: o.AppID, macs: newMACPool(sha256.New, o.AppSecret), now: o.Now}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Sign sets X-ACCESS-ID, X-ACCESS-NONCE and X-ACCESS-SIGNATURE on r.
func (s *Sensoro) Sign(_ context.Context, r *Request) error {
	method := r.Method
	if method == "" {
		method = "POST"
	}
	m := s.macs.get()
	m.buf = strconv.AppendInt(m.buf[:0], s.now().UnixMilli(), 10)
	n := len(m.buf)
	for i := 0; i < len(method); i++ {
		c := method[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		m.buf = append(m.buf, c)
	}
	m.buf = appendSensoroURL(m.buf, r.URL)
	m.h.Write(m.buf)
	m.h.Write(r.Body)
	var out [44]byte // base64 of 32 bytes
	sig := string(base64.StdEncoding.AppendEncode(out[:0], m.h.Sum(m.sum[:0])))
	nonce := string(m.buf[:n])
	s.macs.put(m)

	r.SetHeader(HeaderSensoroID, s.id)
	r.SetHeader(HeaderSensoroNonce, nonce)
	r.SetHeader(HeaderSensoroSignature, sig)
	return nil
}

// appendSensoroURL appends raw as a receiver rebuilds it from the request it gets (protocol +
// "://" + Host + request URI): scheme and host in lower case (the delivery client lowercases
// them), without userinfo or #fragment (never sent), and with "/" for an empty path.
func appendSensoroURL(dst []byte, raw string) []byte {
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	i := strings.Index(raw, "://")
	if i < 0 {
		return append(dst, raw...) // not absolute: the delivery client will refuse it anyway
	}
	rest := raw[i+3:]
	j := strings.IndexAny(rest, "/?")
	if j < 0 {
		j = len(rest)
	}
	host := rest[:j]
	if k := strings.LastIndexByte(host, '@'); k >= 0 {
		host = host[k+1:]
	}
	dst = appendLower(dst, raw[:i])
	dst = append(dst, "://"...)
	dst = appendLower(dst, host)
	if j == len(rest) || rest[j] == '?' {
		dst = append(dst, '/')
	}
	return append(dst, rest[j:]...)
}

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// String describes s without its secret.
func (s *Sensoro) String() string {
	return "sensoro{app_id=" + s.id + " app_secret=" + redacted + "}"
}

// GoString is String, so that %#v does not print the key either.
func (s *Sensoro) GoString() string { return s.String() }

// SensoroSafeModeOptions configures SENSORO safe mode.
type SensoroSafeModeOptions struct {
	// AppKey is the message encryption key, used as given (the bytes of the console's string).
	// Required. Never printed.
	AppKey []byte
}

// String describes o with its key redacted.
func (o SensoroSafeModeOptions) String() string { return "sensoro_safe_mode{app_key=" + redacted + "}" }

// GoString is String, so that %#v does not print the key either.
func (o SensoroSafeModeOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its key redacted.
func (o SensoroSafeModeOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("app_key", redacted))
}

// SensoroSafeMode encrypts each attempt's body with the AppKey, replacing r.Body with
//
//	{"encryptData":"<base64(nonce || ciphertext || tag)>"}
//
// and setting nothing else. It must come before Sensoro (or any other signature over the body)
// in the route's Chain, so that the signature covers the bytes sent. It refuses a request with a
// Content-Encoding (ErrSensoroEncoded): the encoding would describe the old body.
//
// SENSORO does not publish its safe-mode cipher, so this is our own, standard construction:
//
//	key         = SHA-256(AppKey)                   32 bytes, an AES-256 key
//	nonce       = 12 random bytes, new for every attempt (crypto/rand)
//	sealed      = AES-256-GCM-Seal(key, nonce, body, no additional data)
//	            = ciphertext (len(body) bytes) || tag (16 bytes)
//	encryptData = base64(nonce || sealed)           standard alphabet, padded
//
// The key is SHA-256 of the AppKey rather than an HKDF output because the AppKey is a random
// console secret used for nothing else, so extraction and domain separation add nothing a
// receiver would not have to reproduce; SHA-256 is one call in every language. GCM
// authenticates, so a receiver detects any change to encryptData. With random nonces, one AppKey
// should seal fewer than 2^32 bodies (NIST SP 800-38D), far beyond a route's lifetime at
// realistic batch rates; rotate the AppKey long before that. DecryptSensoro, and the command
// sensoro-decrypt built on it, reverse the construction for receivers.
//
// A SensoroSafeMode is safe for concurrent use.
type SensoroSafeMode struct {
	aead cipher.AEAD
}

var _ Signer = (*SensoroSafeMode)(nil)

const (
	sensoroPrefix = `{"encryptData":"`
	sensoroSuffix = `"}`
)

// NewSensoroSafeMode returns a safe-mode encrypter for o.
func NewSensoroSafeMode(o SensoroSafeModeOptions) (*SensoroSafeMode, error) {
	if len(o.AppKey) == 0 {
		return nil, errors.New("sensoro.app_key: required")
	}
	aead, err := sensoroAEAD(o.AppKey)
	if err != nil {
		return nil, err
	}
	return &SensoroSafeMode{aead: aead}, nil
}

// Sign replaces r.Body with its safe-mode encryption, in a new slice.
func (s *SensoroSafeMode) Sign(_ context.Context, r *Request) error {
	if ce := r.HeaderValue("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return ErrSensoroEncoded
	}
	bp := sealBufs.Get().(*[]byte)
	sealed := s.aead.Seal((*bp)[:0], nil, r.Body, nil)
	body := make([]byte, 0, len(sensoroPrefix)+base64.StdEncoding.EncodedLen(len(sealed))+len(sensoroSuffix))
	body = append(body, sensoroPrefix...)
	body = base64.StdEncoding.AppendEncode(body, sealed)
	if cap(sealed) <= maxSealBuf {
		*bp = sealed
		sealBufs.Put(bp)
	}
	r.Body = append(body, sensoroSuffix...)
	return nil
}

// sealBufs holds the intermediate sealed bodies of safe mode, which base64 then copies into the
// new body: pooling them saves allocating the size of a batch on every attempt.
var sealBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxSealBuf is the largest sealed buffer worth keeping in sealBufs.
const maxSealBuf = 8 << 20

// String describes s without its key.
func (s *SensoroSafeMode) String() string { return "sensoro_safe_mode{app_key=" + redacted + "}" }

// GoString is String.
func (s *SensoroSafeMode) GoString() string { return s.String() }

// DecryptSensoro returns the plaintext of a safe-mode body sealed by SensoroSafeMode with appKey:
// body is a JSON object whose "encryptData" member is decoded and opened as SensoroSafeMode
// describes; other members are ignored. Its errors wrap ErrSensoroDecrypt and never contain the
// key or the plaintext.
func DecryptSensoro(appKey, body []byte) ([]byte, error) {
	if len(appKey) == 0 {
		return nil, fmt.Errorf("%w: empty AppKey", ErrSensoroDecrypt)
	}
	var msg struct {
		EncryptData *string `json:"encryptData"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, fmt.Errorf("%w: body is not a JSON object: %v", ErrSensoroDecrypt, err)
	}
	if msg.EncryptData == nil {
		return nil, fmt.Errorf("%w: no encryptData", ErrSensoroDecrypt)
	}
	sealed, err := base64.StdEncoding.Strict().DecodeString(*msg.EncryptData)
	if err != nil {
		return nil, fmt.Errorf("%w: encryptData is not standard base64", ErrSensoroDecrypt)
	}
	aead, err := sensoroAEAD(appKey)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, nil, sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (wrong AppKey, or encryptData altered or truncated)", ErrSensoroDecrypt)
	}
	return plain, nil
}

// sensoroAEAD returns AES-256-GCM keyed with SHA-256(appKey), with random nonces prepended.
func sensoroAEAD(appKey []byte) (cipher.AEAD, error) {
	key := sha256.Sum256(appKey)
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("sensoro safe mode: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("sensoro safe mode: %w", err)
	}
	return aead, nil
}
