package relay

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/netio/link"
	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

var _ linkManager = (*link.Manager)(nil)

// linkManager is the device links' manager as the relay drives it (*link.Manager).
type linkManager interface {
	api.Links
	CloseDevice(device string)
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Collectors() []prometheus.Collector
}

// buildLinks builds the device links' manager when devicelink.listen is set (r.links stays nil
// otherwise, and the API answers 503), registers its metrics, and closes a device's links when
// the registry deletes the device or moves it to another account.
func (r *Relay) buildLinks() error {
	d := &r.cfg.DeviceLink
	if !d.Enabled() {
		return nil
	}
	addr, err := netip.ParseAddr(strings.Trim(d.Listen, "[]"))
	if err != nil {
		return fmt.Errorf("devicelink.listen: %w", err)
	}
	first, last, err := d.PortRange()
	if err != nil {
		return fmt.Errorf("devicelink.ports: %w", err)
	}
	lc := link.Config{Listen: addr, PortFirst: first, PortLast: last, Buffer: int(d.Buffer),
		EventLoops: r.cfg.Devices.EventLoops, Logger: r.log, Protocols: d.Protocols, BusyPoll: time.Duration(d.BusyPoll)}
	if r.viaListener() {
		lc.Device = link.DeviceListener{Sender: r.net.UDPSender, Locate: r.lastUDPSource}
	}
	m, err := link.NewManager(lc)
	if err != nil {
		return fmt.Errorf("device links: %w", err)
	}
	if r.viaListener() {
		// The listener offers the links the datagrams that are not native frames.
		r.net.SetUDPTap(m.DeviceDatagram)
	}
	r.links = m
	r.watchLinks(m)
	return nil
}

// viaListener reports whether UDP links may reach devices through the UDP device listener: the
// relay has one.
func (r *Relay) viaListener() bool { return r.cfg.Devices.Native.UDP != "" }

// lastUDPSource is a device's last UDP source, which a link via the device listener follows;
// false when the device was last seen over another transport, or never.
func (r *Relay) lastUDPSource(device string) (netip.AddrPort, bool) {
	st := r.sys.Device(device)
	return st.Remote, st.Transport == actors.TransportUDP && st.Remote.IsValid()
}

// watchLinks closes the links of a device the registry deleted, or moved to another account
// (whose keys must not see links the old account opened).
func (r *Relay) watchLinks(m linkManager) {
	r.registry.Watch(func(c registry.Change) {
		if c.Kind != registry.Devices {
			return
		}
		if c.Deleted || (c.Before != nil && c.Device != nil && c.Before.Account != c.Device.Account) {
			m.CloseDevice(strings.ToUpper(c.ID))
		}
	})
}

// linkOptions are the API's defaults for device links, from the devicelink section.
func (r *Relay) linkOptions() api.LinkOptions {
	d := &r.cfg.DeviceLink
	o := api.LinkOptions{DevicePort: uint16(d.DevicePort), Timeout: time.Duration(d.Timeout), NewCipher: newLinkCipher,
		ViaListener: r.viaListener(), Protocols: d.Protocols}
	if r.cross != nil { // cluster mode: other nodes' devices too
		o.Remote = r.cross
	}
	return o
}

// newLinkCipher is the client leg's AES-256-CTR of one link (netio/link/ENCRYPTION.md).
func newLinkCipher(key, iv []byte) (link.Cipher, error) {
	c, err := linkcrypt.New(key, iv)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return c, nil
}
