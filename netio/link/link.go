// Package link pairs sockets inside gnet's event loops: device links (a client reaches a device
// through the relay, over TCP or UDP, because only the relay knows where the device is) and the
// raw TCP connector (a device's TCP stream forwarded to an end server). Bytes are copied between
// the two sockets of a pair on the event loops, without a goroutine or an actor per pair, through
// a bounded buffer per direction: when one side cannot take more, the other is not read.
package link

import (
	"crypto/cipher"
	"errors"
	"net/netip"
	"time"
)

// Protocols of a device link.
const (
	TCP = "tcp"
	UDP = "udp"
)

// Spec is what a device link is asked to be (the API's POST /api/v1/devicelink/{device}, with
// the config's defaults already applied by the caller).
type Spec struct {
	Device   string // the device's identity, upper case
	Account  string // the device's account ("" none)
	Protocol string // TCP or UDP
	// DeviceAddr is where the relay reaches the device: its last known address with the link's
	// device port (ViaSocket), or its last UDP source (ViaListener).
	DeviceAddr netip.AddrPort
	// Via is how a UDP link's device leg reaches the device: ViaSocket ("" too) or ViaListener.
	Via string
	// Dial, when valid, is where the device leg of a TCP link or a UDP link via a socket
	// connects instead of DeviceAddr, which then only says where the device is: in cluster
	// mode, a link on another relay node that reaches the device.
	Dial netip.AddrPort
	// Source pins the client: only a client from this host:port may use the link (zero: the
	// first client to connect or send inherits it). With UDP, the device's datagrams go to
	// Source at once.
	Source netip.AddrPort
	// Timeout closes a UDP link after this long without a datagram either way (0: never).
	Timeout time.Duration
	// Cipher, when set, encrypts the client leg (see Cipher); the device leg stays as the device
	// speaks it.
	Cipher Cipher
}

// dialAddr is where the device leg of a TCP link or a UDP link via a socket connects.
func (s *Spec) dialAddr() netip.AddrPort {
	if s.Dial.IsValid() {
		return s.Dial
	}
	return s.DeviceAddr
}

// How a UDP link reaches its device (Spec.Via).
const (
	// ViaSocket: from a socket of the link's own (an ephemeral port) to DeviceAddr, the device's
	// host at the link's device port.
	ViaSocket = "socket"
	// ViaListener: from the relay's UDP device listener to DeviceAddr, the device's last UDP
	// source, which the link follows when the device's datagrams come from a new one. The
	// datagrams from that source which are not native frames are the device's side of the link.
	// This reaches a device behind carrier-grade NAT through the mapping its own datagrams to the
	// listener keep open. One link at a time per device source.
	ViaListener = "listener"
)

// DeviceListener is the relay's UDP device listener as the links through it use it (the relay
// wires netio.Server's UDPSender, and the actors' last known addresses, here; the listener's
// tap calls Manager.DeviceDatagram).
type DeviceListener struct {
	// Sender returns a function sending one datagram to dst from the listener's socket, without
	// blocking and safe for concurrent use. Nil: links via the listener are refused.
	Sender func(dst netip.AddrPort) (func(b []byte) error, error)
	// Locate returns device's last UDP source, or false when it was last seen over another
	// transport (or never). Called from the UDP carrier's ticker, never from an event loop; nil:
	// links keep the address they were opened with.
	Locate func(device string) (netip.AddrPort, bool)
}

// Cipher is the client leg's encryption of one link: independent keystreams per direction and,
// for UDP, per datagram, so that no keystream is ever used twice.
type Cipher interface {
	// Streams returns the TCP keystreams: in decrypts what the client sends, out encrypts what
	// the relay sends the client. Each is used for one direction only, from its start.
	Streams() (in, out cipher.Stream)
	// Seal appends to dst the datagram the relay sends the client carrying plain as its n-th
	// datagram to the client (n counts from 0).
	Seal(dst []byte, n uint64, plain []byte) []byte
	// Open appends to dst the plaintext of a datagram the client sent, or fails if it is not
	// one (too short, or refused by an authenticated construction).
	Open(dst []byte, datagram []byte) ([]byte, error)
}

// States of a link.
const (
	StateWaiting = "waiting" // no client yet
	StateOpen    = "open"    // client and device sockets paired
	StateClosed  = "closed"  // ended; kept in List until it is forgotten
)

// Info is what the relay says of a link (the API's create response and list).
type Info struct {
	Spec
	Token string // closes the link (DELETE /api/v1/devicelink/{token}); random, 128 bits or more
	// Port is where the client connects (TCP) or sends (UDP), on the links' listen address.
	Port       uint16
	State      string
	Client     netip.AddrPort // the client that holds the link (zero: none yet)
	ToDevice   uint64         // bytes the client sent that went to the device
	ToClient   uint64         // bytes the device sent that went to the client
	CreatedAt  time.Time
	LastActive time.Time // last byte either way (CreatedAt before any)
}

// Errors of Manager.Open and Manager.Close.
var (
	// ErrPortsExhausted: every port of the configured range holds a link.
	ErrPortsExhausted = errors.New("link: every port of the range is in use")
	// ErrNotFound: no link has that token.
	ErrNotFound = errors.New("link: no such link")
	// ErrClosed: the manager is stopping.
	ErrClosed = errors.New("link: closed")
	// ErrSourceBusy: a link via the listener already carries the device's UDP source.
	ErrSourceBusy = errors.New("link: a link via the device listener already carries this device source")
	// ErrNoListener: a link via the listener was asked of a manager without a DeviceListener.
	ErrNoListener = errors.New("link: no UDP device listener to send from")
)
