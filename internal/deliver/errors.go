package deliver

import "errors"

var (
	// ErrPrivateAddress is returned (wrapped with the address) when a route's
	// host is, or resolves only to, a loopback, private, link-local,
	// unspecified, CGNAT or otherwise non-public address and the client does
	// not allow private networks.
	ErrPrivateAddress = errors.New("private network address refused")

	// ErrTimeout is returned (wrapping the transport's error) when an attempt
	// ran out of the client's per-request timeout.
	ErrTimeout = errors.New("request timed out")

	// ErrClosed is returned by attempts made after Client.Close.
	ErrClosed = errors.New("delivery client closed")

	// ErrGaveUp is returned by Deliver when Policy.MaxAttempts attempts
	// failed.
	ErrGaveUp = errors.New("gave up delivery")

	// ErrNotSent, wrapped in an error of Deliver's build callback, fails that
	// attempt without sending it; Deliver retries it like a transport error.
	ErrNotSent = errors.New("attempt not sent")
)
