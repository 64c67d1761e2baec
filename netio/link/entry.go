package link

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// entry is one link as the Manager and the engine that carries it (TCP or UDP) share it: what
// it was asked to be, where the client reaches it, and counters the event loops update.
type entry struct {
	token     string
	spec      Spec
	port      uint16
	createdAt time.Time

	state      atomic.Value  // string: StateWaiting, StateOpen, StateClosed
	client     atomic.Value  // netip.AddrPort of the client holding the link
	toDevice   atomic.Uint64 // bytes client → device
	toClient   atomic.Uint64 // bytes device → client
	lastActive atomic.Int64  // unix nanoseconds of the last byte either way (0: none)
	// deviceAddr is where a link via the device listener sends now, when it followed the
	// device to another source than spec.DeviceAddr (nil: spec.DeviceAddr).
	deviceAddr atomic.Pointer[netip.AddrPort]
	// peakHeld is the most bytes the relay held at once for one direction of the link (read
	// from one side and not yet taken by the other), as its engine measured it.
	peakHeld atomic.Int64
}

func newEntry(token string, spec Spec, port uint16, now time.Time) *entry {
	e := &entry{token: token, spec: spec, port: port, createdAt: now}
	e.state.Store(StateWaiting)
	return e
}

// info is what the API shows of e.
func (e *entry) info() Info {
	in := Info{Spec: e.spec, Token: e.token, Port: e.port, CreatedAt: e.createdAt, LastActive: e.createdAt,
		ToDevice: e.toDevice.Load(), ToClient: e.toClient.Load()}
	in.State, _ = e.state.Load().(string)
	in.Client, _ = e.client.Load().(netip.AddrPort)
	if t := e.lastActive.Load(); t != 0 {
		in.LastActive = time.Unix(0, t)
	}
	if a := e.deviceAddr.Load(); a != nil {
		in.DeviceAddr = *a
	}
	in.Spec.Cipher = nil // the key stays inside the relay
	return in
}

// closed reports whether e has ended.
func (e *entry) closed() bool {
	s, _ := e.state.Load().(string)
	return s == StateClosed
}

// end sets e's state closed; it reports whether e was not closed already.
func (e *entry) end() bool {
	return e.state.CompareAndSwap(StateWaiting, StateClosed) || e.state.CompareAndSwap(StateOpen, StateClosed)
}

// held records that the relay holds n bytes for one direction of e.
func (e *entry) held(n int) {
	for {
		p := e.peakHeld.Load()
		if int64(n) <= p || e.peakHeld.CompareAndSwap(p, int64(n)) {
			return
		}
	}
}
