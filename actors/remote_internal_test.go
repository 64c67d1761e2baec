package actors

import (
	"net/netip"
	"testing"
)

// A device's address is noted on every UDP datagram and NDJSON read: doing so allocates only
// when the address or its transport changes, never for the same one again.
func TestSetRemoteAllocatesOnlyOnChange(t *testing.T) {
	e := &deviceEntry{}
	a := netip.MustParseAddrPort("10.0.0.1:4000")
	b := netip.MustParseAddrPort("[2001:db8::1]:4000")
	e.setRemote(a, TransportUDP)
	if n := testing.AllocsPerRun(1000, func() { e.setRemote(a, TransportUDP) }); n != 0 {
		t.Errorf("setRemote of the same address: %v allocations, want 0", n)
	}
	i := 0
	n := testing.AllocsPerRun(1000, func() {
		i++
		if i%2 == 0 {
			e.setRemote(a, TransportUDP)
		} else {
			e.setRemote(b, TransportNDJSON)
		}
	})
	if n != 1 {
		t.Errorf("setRemote of a new address: %v allocations, want 1", n)
	}
	if w := e.remote.Load(); w == nil || w.addr != b || w.transport != TransportNDJSON {
		t.Errorf("remote = %+v, want %v over ndjson", w, b)
	}
}

// Options.AddressChanged hears of each change of a device's address or transport, once, and
// never of the same address noted again.
func TestSetRemoteTellsAddressChanged(t *testing.T) {
	var heard []string
	e := &deviceEntry{id: "dev-1", moved: func(id string) { heard = append(heard, id) }}
	a := netip.MustParseAddrPort("10.0.0.1:4000")
	e.setRemote(a, TransportTCP)
	e.setRemote(a, TransportTCP)
	e.setRemote(a, TransportNDJSON)
	e.setRemote(netip.MustParseAddrPort("10.0.0.1:4001"), TransportNDJSON)
	if len(heard) != 3 || heard[0] != "dev-1" {
		t.Errorf("AddressChanged heard %q, want dev-1 three times (two changes of transport or port after the first)", heard)
	}
}
