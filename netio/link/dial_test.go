package link

import (
	"io"
	"net/netip"
	"testing"
)

// Spec.Dial: a TCP link's device leg connects there (in cluster mode, another node's link),
// while DeviceAddr, where the device is, stays what the link shows.
func TestTCPLinkDialsSpecDial(t *testing.T) {
	m := startManager(t, 1, 0)
	d := newDevice(t)
	elsewhere := netip.MustParseAddrPort("192.0.2.7:7000") // TEST-NET-1: never dialled
	in := openLink(t, m, Spec{DeviceAddr: elsewhere, Dial: d.addr()})
	client := dialLink(t, in, nil)
	dev := d.accept(t)
	for _, c := range []struct {
		from, to   io.ReadWriter
		who, bytes string
	}{{client, dev, "the device", "to the device"}, {dev, client, "the client", "to the client"}} {
		if _, err := c.from.Write([]byte(c.bytes)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(c.bytes))
		if _, err := io.ReadFull(c.to, got); err != nil || string(got) != c.bytes {
			t.Fatalf("%s read %q, %v; want %q", c.who, got, err, c.bytes)
		}
	}
	if got := linkState(m, in.Token); got.DeviceAddr != elsewhere || got.Dial != d.addr() {
		t.Errorf("List shows device %v, dial %v; want %v and %v", got.DeviceAddr, got.Dial, elsewhere, d.addr())
	}
}
