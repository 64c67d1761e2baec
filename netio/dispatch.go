// Package netio owns the device sockets: gnet event loops that accept native-protocol devices over
// TCP and UDP, Teltonika trackers over TCP and UDP (teltonika.go), crypto/tls listeners for
// native devices and Teltonika trackers over TLS (a goroutine per connection, gnet having no
// TLS) that feed the same protocol cores as the plain TCP listeners (session.go, teltonika.go),
// and a goroutine per NDJSON gateway
// connection over TCP (so that a full store can stop reading them); it decodes frames and lines
// without blocking, copies them out of its read buffers and hands them to a Dispatcher. It
// enforces the protocols' limits
// (frame and line size, HELLO deadline, idle timeout, connection cap) and answers PING itself. It
// counts what it does (Stats) and owns the Prometheus collectors over those counts
// (Server.RegisterMetrics). It knows nothing about storage or delivery. For the device links
// that reach devices through its UDP listener, it sends from the listener's socket (UDPSender)
// and offers a tap the datagrams that are not native frames (SetUDPTap).
package netio

import (
	"net/netip"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// Conn is the relay's handle on one device connection (TCP) or one device source address (UDP).
// All methods are safe for concurrent use from any goroutine and never block on the network.
type Conn interface {
	// Write queues a complete frame for the device. The bytes must not be modified afterwards.
	Write(frame []byte)
	// Fail sends ERROR code/msg and closes the connection (for UDP: sends nothing and forgets it).
	Fail(code uint16, msg string)
	// Close closes the connection without an ERROR frame.
	Close()
	// Remote is the device's address.
	Remote() netip.AddrPort
	// Datagram reports whether this is a UDP source rather than a TCP connection.
	Datagram() bool
}

// Dispatcher receives what devices send. Its methods are called from gnet event loops (Open over
// TLS: from the connection's reader goroutine; Lines: from NDJSON connection goroutines) and must
// not block: no disk, no network, no bounded
// mailboxes.
type Dispatcher interface {
	// Open is called once per TCP connection after a valid HELLO. A non-nil error refuses the
	// device with ERROR 401, or ERROR 503 if it wraps ErrBusy. The returned Session receives the connection's later frames.
	Open(c Conn, h *native.Hello) (Session, error)
	// UData is called for each well-formed UDATA datagram. frame is a private copy the callee
	// owns; identity, token and records alias it.
	UData(c Conn, u *native.UData, frame []byte)
	// Lines is called with the valid NDJSON lines of one identity that one read of one connection
	// delivered, in the order they arrived (never empty). Nothing can be answered: NDJSON has no
	// acknowledgements. imei says the identity is an IMEI rather than a serial; remote is the
	// connection's peer (the gateway, or the device itself). records alias one
	// private copy the callee owns; they are never modified afterwards. done, if not nil, must be
	// called once, from any goroutine, when the lines are stored or will never be (refused,
	// dropped): until then they count against the NDJSON in-flight budget, and while that is
	// spent no NDJSON connection is read.
	Lines(identity string, imei bool, remote netip.AddrPort, records [][]byte, done func())
}

// Authenticated is what a Session may implement to say that its device proved who it is (its
// HELLO was checked against a credential): such a connection is exempt from
// Options.FirstDataTimeout. A Session that does not implement it is unauthenticated. Called once,
// from the event loop, right after Open.
type Authenticated interface {
	Authenticated() bool
}

// Session is one identified device connection. Its methods are called from the connection's
// event loop (over TLS: from the connection's reader goroutine), in the order frames arrived,
// and must not block.
type Session interface {
	// Data delivers one DATA frame. frame is a private copy the callee owns; records alias it.
	Data(seq uint64, records [][]byte, frame []byte)
	// Result delivers a RESULT frame; r.Data aliases frame, a private copy.
	Result(r *native.Result, frame []byte)
	// Closed is called once when the connection is gone.
	Closed()
}
