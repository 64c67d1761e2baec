package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strings"
	"sync"
)

// Hash algorithms of HMACOptions.Hash.
const (
	HashSHA512 = "sha512"
	HashSHA256 = "sha256"
)

// Signature encodings of HMACOptions.Encoding.
const (
	EncodingHex    = "hex"    // lowercase hexadecimal
	EncodingBase64 = "base64" // standard alphabet, padded (RFC 4648 §4)
)

// DefaultHMACHeader is the header HMAC writes its signature to unless told otherwise: BeWhere's
// "hash-key".
const DefaultHMACHeader = "hash-key"

// HMACOptions configures an HMAC body signature, such as BeWhere's "hash-key" (HMAC-SHA-512 of the
// payload, keyed with the API key of the user named in the "seed-userid" header).
type HMACOptions struct {
	// Key is the HMAC key, used as given (BeWhere: the bytes of the seed user's API key). Required.
	// Never printed.
	Key []byte
	// Hash is "sha512" (the default) or "sha256".
	Hash string
	// Encoding of the signature: "hex" (lowercase, the default) or "base64" (standard, padded).
	Encoding string
	// Header that carries the signature; default "hash-key".
	Header string
	// Headers are fixed headers set together with the signature, such as
	// {"seed-userid", "api-dealer-user@example.com"}. Their values are not printed.
	Headers [][2]string
}

// String describes o with its key and header values redacted.
func (o HMACOptions) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hmac{hash=%s encoding=%s header=%s key=%s", o.Hash, o.Encoding, o.Header, redacted)
	for _, h := range o.Headers {
		fmt.Fprintf(&b, " %s=%s", h[0], redacted)
	}
	b.WriteByte('}')
	return b.String()
}

// GoString is String, so that %#v does not print the key either.
func (o HMACOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its key and header values redacted.
func (o HMACOptions) LogValue() slog.Value {
	names := make([]string, len(o.Headers))
	for i, h := range o.Headers {
		names[i] = h[0]
	}
	return slog.GroupValue(slog.String("hash", o.Hash), slog.String("encoding", o.Encoding),
		slog.String("header", o.Header), slog.String("key", redacted), slog.Any("headers", names))
}

// HMAC signs the exact bytes of each attempt's body with HMAC (SHA-512 or SHA-256) and sets the
// signature, hex or base64, in one header (replacing it on a retry), together with any fixed
// headers of its options.
//
// An HMAC is safe for concurrent use; Sign allocates only the header value.
type HMAC struct {
	macs    *macPool
	b64     bool
	header  string
	headers [][2]string
	desc    string
}

var _ Signer = (*HMAC)(nil)

// NewHMAC returns an HMAC signer for o.
func NewHMAC(o HMACOptions) (*HMAC, error) {
	if o.Hash == "" {
		o.Hash = HashSHA512
	}
	if o.Encoding == "" {
		o.Encoding = EncodingHex
	}
	if o.Header == "" {
		o.Header = DefaultHMACHeader
	}
	var errs []error
	if len(o.Key) == 0 {
		errs = append(errs, errors.New("hmac.key: required"))
	}
	var newHash func() hash.Hash
	switch o.Hash {
	case HashSHA512:
		newHash = sha512.New
	case HashSHA256:
		newHash = sha256.New
	default:
		errs = append(errs, fmt.Errorf("hmac.hash: %q is not sha512 or sha256", o.Hash))
	}
	if o.Encoding != EncodingHex && o.Encoding != EncodingBase64 {
		errs = append(errs, fmt.Errorf("hmac.encoding: %q is not hex or base64", o.Encoding))
	}
	if !validHeaderName(o.Header) {
		errs = append(errs, fmt.Errorf("hmac.header: %q is not a valid header name", o.Header))
	}
	for i, h := range o.Headers {
		if !validHeaderName(h[0]) {
			errs = append(errs, fmt.Errorf("hmac.headers[%d]: %q is not a valid header name", i, h[0]))
		}
		if !validHeaderValue(h[1]) {
			// The value may be confidential: name the header, not the value.
			errs = append(errs, fmt.Errorf("hmac.headers[%d]: the value of %q contains control characters", i, h[0]))
		}
		if strings.EqualFold(h[0], o.Header) {
			errs = append(errs, fmt.Errorf("hmac.headers[%d]: %q is the signature header", i, h[0]))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &HMAC{
		macs:    newMACPool(newHash, o.Key),
		b64:     o.Encoding == EncodingBase64,
		header:  o.Header,
		headers: cloneHeaders(o.Headers),
		desc:    o.String(),
	}, nil
}

// Sign sets the signature of r.Body, and the fixed headers, on r.
func (s *HMAC) Sign(_ context.Context, r *Request) error {
	for _, h := range s.headers {
		r.SetHeader(h[0], h[1])
	}
	m := s.macs.get()
	m.h.Write(r.Body)
	mac := m.h.Sum(m.sum[:0])
	var out [2 * sha512.Size]byte // hex of SHA-512 is the longest encoding
	var enc []byte
	if s.b64 {
		enc = base64.StdEncoding.AppendEncode(out[:0], mac)
	} else {
		enc = hex.AppendEncode(out[:0], mac)
	}
	s.macs.put(m)
	r.SetHeader(s.header, string(enc))
	return nil
}

// String describes s without its key or header values.
func (s *HMAC) String() string { return s.desc }

// GoString is String, so that %#v does not print the key either.
func (s *HMAC) GoString() string { return s.desc }

// macPool keeps keyed HMAC states, each with a scratch buffer for the short strings a scheme puts
// before the body, so that signing a batch allocates neither. A Reset HMAC returns to its keyed
// state without rehashing the key.
type macPool struct {
	pool sync.Pool
}

type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha512.Size]byte // room for the MAC, which would escape from a local array
}

// maxScratch is the largest scratch buffer kept in the pool (a long URL is not worth keeping).
const maxScratch = 4 << 10

func newMACPool(newHash func() hash.Hash, key []byte) *macPool {
	key = bytes.Clone(key)
	p := &macPool{}
	p.pool.New = func() any { return &macState{h: hmac.New(newHash, key), buf: make([]byte, 0, 256)} }
	return p
}

func (p *macPool) get() *macState { return p.pool.Get().(*macState) }

func (p *macPool) put(m *macState) {
	m.h.Reset()
	if cap(m.buf) > maxScratch {
		m.buf = make([]byte, 0, 256)
	}
	p.pool.Put(m)
}

func cloneHeaders(hs [][2]string) [][2]string {
	if len(hs) == 0 {
		return nil
	}
	return append([][2]string(nil), hs...)
}

// validHeaderName reports whether s is a non-empty RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as a header value: no control characters
// other than horizontal tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
