package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
)

// redacted stands in for a secret wherever options are printed or logged.
const redacted = "REDACTED"

// BasicOptions configures HTTP Basic authentication (RFC 7617).
type BasicOptions struct {
	// Username is the user-id. It must not contain a colon or control characters.
	Username string
	// Password is the password; it must not contain control characters. Never printed.
	Password string
}

// String describes o with its password redacted.
func (o BasicOptions) String() string {
	return "basic{username=" + o.Username + " password=" + redacted + "}"
}

// GoString is String, so that %#v does not print the password either.
func (o BasicOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its password redacted.
func (o BasicOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", o.Username), slog.String("password", redacted))
}

// Basic sets "Authorization: Basic base64(username:password)" (RFC 7617, UTF-8) on every
// attempt, replacing an Authorization header already present.
//
// A Basic is immutable and safe for concurrent use; Sign does not allocate.
type Basic struct {
	username string
	value    string // "Basic " + base64(user:pass)
}

var _ Signer = (*Basic)(nil)

// NewBasic returns a Basic signer for o.
func NewBasic(o BasicOptions) (*Basic, error) {
	var errs []error
	if o.Username == "" && o.Password == "" {
		errs = append(errs, errors.New("basic: username and password are both empty"))
	}
	if strings.IndexByte(o.Username, ':') >= 0 {
		errs = append(errs, errors.New("basic.username: must not contain ':' (RFC 7617)"))
	}
	if hasCTL(o.Username) {
		errs = append(errs, errors.New("basic.username: must not contain control characters"))
	}
	if hasCTL(o.Password) {
		errs = append(errs, errors.New("basic.password: must not contain control characters"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Basic{
		username: o.Username,
		value:    "Basic " + base64.StdEncoding.EncodeToString([]byte(o.Username+":"+o.Password)),
	}, nil
}

// Sign sets the Authorization header of r.
func (b *Basic) Sign(_ context.Context, r *Request) error {
	r.SetHeader("Authorization", b.value)
	return nil
}

// String describes b without its credentials.
func (b *Basic) String() string {
	return "basic{username=" + b.username + " password=" + redacted + "}"
}

// GoString is String, so that %#v does not print the credentials either.
func (b *Basic) GoString() string { return b.String() }

// hasCTL reports whether s contains an ASCII control character (0x00–0x1f or 0x7f).
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
