// Package auth authenticates and signs route requests: static and Basic credentials, OAuth2
// client credentials, HMAC body signatures, SENSORO signatures and safe mode, AWS Signature V4,
// Azure SAS (Blob Storage, Event Hubs, and per-device IoT Hub tokens) and Standard Webhooks.
//
// A route has a chain of Signers, applied in order to every attempt after its body is final
// (rendered and compressed): first the ones that choose the URL (S3, Azure Blob), then
// credentials, then signatures over the bytes exactly as sent. A signer never logs a secret.
package auth

import (
	"context"
	"errors"
	"strings"
	"time"
)

// ErrPermanent, wrapped in a Sign error, says that no retry of the batch can be signed either
// (e.g. its device has no key): the batch is given up on at once, its messages dead-lettered
// with the error as the reason, rather than retried. Other Sign errors fail the attempt, which
// is retried.
var ErrPermanent = errors.New("cannot sign")

// Request is one attempt of a batch, as it will be sent.
type Request struct {
	Method string
	URL    string      // absolute; a signer may extend it (S3, Azure Blob)
	Header [][2]string // a signer appends its headers
	Body   []byte      // the exact bytes sent (after compression); read-only
	Batch  Batch
	// Device is the device whose messages the attempt carries, read at this attempt; its ID
	// is "" when they are several devices' (per-device schemes then refuse to sign).
	Device Device
}

// Device is what a per-device scheme (Azure IoT Hub) knows of the batch's one device: its
// identity and its metadata's custom fields, which may hold its credentials.
type Device struct {
	ID     string
	Custom [3]string // custom1, custom2, custom3
}

// Batch identifies the batch an attempt delivers: the same for every attempt of it.
type Batch struct {
	ID   string    // unique per batch, stable across its retries (webhook-id, object names)
	Time time.Time // when its first attempt was built
}

// Signer is one authentication or signing scheme. Sign is called once per attempt and must be
// safe for concurrent use.
type Signer interface {
	Sign(ctx context.Context, r *Request) error
}

// Refresher is implemented by signers that hold a token: told that an attempt was answered 401,
// they get a new token for the next attempt. r is that attempt as it was signed (nil if not
// known), so a signer can tell a 401 for its current token from a late one for an older token.
type Refresher interface {
	Unauthorized(r *Request)
}

// Chain applies signers in order.
type Chain []Signer

// Sign runs every signer of c on r, stopping at the first error.
func (c Chain) Sign(ctx context.Context, r *Request) error {
	for _, s := range c {
		if err := s.Sign(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// Unauthorized tells every Refresher of c that the attempt r was answered 401.
func (c Chain) Unauthorized(r *Request) {
	for _, s := range c {
		if x, ok := s.(Refresher); ok {
			x.Unauthorized(r)
		}
	}
}

// SetHeader replaces the value of header name in r (case-insensitively), or appends it.
func (r *Request) SetHeader(name, value string) {
	for i := range r.Header {
		if strings.EqualFold(r.Header[i][0], name) {
			r.Header[i][1] = value
			return
		}
	}
	r.Header = append(r.Header, [2]string{name, value})
}

// HeaderValue returns the value of header name in r (case-insensitively), "" if absent.
func (r *Request) HeaderValue(name string) string {
	for _, h := range r.Header {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}
