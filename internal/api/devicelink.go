package api

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/netio/link"
)

// Links is what the device link endpoints need of the relay's link manager (*link.Manager).
type Links interface {
	Open(ctx context.Context, s link.Spec) (link.Info, error)
	Close(token string) error
	List() []link.Info
}

// LinkOptions are the devicelink section's defaults and the links' cipher.
type LinkOptions struct {
	// DevicePort is the devicePort of a request that names none (0: every request must).
	DevicePort uint16
	// Timeout is a UDP link's idle timeout when its request gives none (0: never).
	Timeout time.Duration
	// NewCipher makes the client leg's cipher from the request's key and IV (linkcrypt.New);
	// nil: a request with encrypt is refused (422).
	NewCipher func(key, iv []byte) (link.Cipher, error)
	// ViaListener: UDP links may reach devices through the relay's UDP device listener
	// (devices.native.udp is set, and the links' manager sends through it).
	ViaListener bool
	// Protocols are the link protocols the relay opens (devicelink.protocols; nil: tcp and
	// udp). A request for another is refused (422 at /protocol).
	Protocols []string
	// Remote reaches devices whose connection another relay node holds (cluster mode); nil:
	// only this relay's devices.
	Remote RemoteLinks
}

// RemoteLinks open links to devices whose connection another relay node holds (cluster mode):
// the link's client leg (its port, token and cipher) is on this relay, its device leg on that
// node. The links it opens are in Links' List, and Links' Close closes both legs.
type RemoteLinks interface {
	// Locate reports whether another node holds device's connection (this relay has none of
	// its), and the transport the device was last seen over there.
	Locate(ctx context.Context, device string) (transport string, ok bool, err error)
	// OpenRemote opens a link as s asks (everything set but DeviceAddr) to the device at its
	// devicePort (0 for via listener) through the node that holds it. It fails with
	// ErrNotConnected when no node holds the device any more, ErrNodeLinksOff, or the link
	// package's errors of either node's manager.
	OpenRemote(ctx context.Context, s link.Spec, devicePort uint16) (link.Info, error)
}

// allows reports whether o lets links of protocol be opened.
func (o *LinkOptions) allows(protocol string) bool {
	return len(o.Protocols) == 0 || slices.Contains(o.Protocols, protocol)
}

// HandleDeviceLinks adds the device links, as the vendor's DeviceLink module defines them:
// POST /api/v1/devicelink/{deviceIdentifier} (deviceLink:create) opens one to a device that
// the registry (or the config file's fleet) knows and that has connected since the relay
// started, DELETE /api/v1/devicelink/{token} (deviceLink:delete) closes one, GET
// /api/v1/devicelink (deviceLink:read) lists them. An account's key sees and closes only its
// account's devices' links. links nil (devicelink.listen unset) answers 503. Must be called
// before Start.
func (s *Server) HandleDeviceLinks(c *control.Control, links Links, o LinkOptions) {
	h := linkHandlers{s: s, c: c, links: links, o: o}
	s.HandleAPI("POST /api/v1/devicelink/{device}", "deviceLink:create", h.create)
	s.HandleAPI("DELETE /api/v1/devicelink/{token}", "deviceLink:delete", h.delete)
	s.HandleAPI("GET /api/v1/devicelink", "deviceLink:read", h.list)
}

type linkHandlers struct {
	s     *Server
	c     *control.Control
	links Links
	o     LinkOptions
}

// Lengths of encrypt's key and IV (AES-256-CTR), in bytes.
const (
	linkKeyBytes = 32
	linkIVBytes  = 16
)

// linkInput is the body of POST /api/v1/devicelink/{deviceIdentifier}.
type linkInput struct {
	Protocol   string      `json:"protocol"`
	Via        string      `json:"via"` // an extension of the vendor's API: socket or listener
	DevicePort *int        `json:"devicePort"`
	Timeout    *int64      `json:"timeout"` // ms
	Source     *LinkSource `json:"source"`
	Encrypt    *struct {
		Key                  string `json:"key"`
		InitializationVector string `json:"initializationVector"`
	} `json:"encrypt"`
}

// LinkSource is the client a link is pinned to.
type LinkSource struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// LinkEncrypt is what a link's answers say of its encryption: the IV only. The key is a secret
// the client already holds; no answer of the API repeats it.
type LinkEncrypt struct {
	InitializationVector string `json:"initializationVector"`
}

// DeviceLinkView is a device link as the API shows it: the create request's fields (encrypt
// without its key), where the client connects (port) and the token that closes it, and, in the
// list, its state and counters.
type DeviceLinkView struct {
	Token            string       `json:"token"`
	Port             uint16       `json:"port"`
	DeviceIdentifier string       `json:"deviceIdentifier"`
	Protocol         string       `json:"protocol"`
	Via              string       `json:"via,omitempty"` // UDP links only: link.ViaSocket or link.ViaListener
	DevicePort       uint16       `json:"devicePort"`
	Timeout          int64        `json:"timeout,omitempty"` // ms; UDP links only
	Source           *LinkSource  `json:"source,omitempty"`
	Encrypt          *LinkEncrypt `json:"encrypt,omitempty"`
	State            string       `json:"state"`
	Client           string       `json:"client,omitempty"`
	BytesToDevice    uint64       `json:"bytesToDevice"`
	BytesToClient    uint64       `json:"bytesToClient"`
	CreatedAt        time.Time    `json:"createdAt"`
	LastActiveAt     time.Time    `json:"lastActiveAt"`
}

func linkView(in *link.Info) DeviceLinkView {
	v := DeviceLinkView{Token: in.Token, Port: in.Port, DeviceIdentifier: in.Device, Protocol: in.Protocol,
		DevicePort: in.DeviceAddr.Port(), State: in.State, BytesToDevice: in.ToDevice, BytesToClient: in.ToClient,
		CreatedAt: in.CreatedAt.UTC(), LastActiveAt: in.LastActive.UTC()}
	if in.Protocol == link.UDP {
		v.Timeout = in.Timeout.Milliseconds()
		v.Via = cmp.Or(in.Via, link.ViaSocket)
	}
	if in.Source.IsValid() {
		v.Source = &LinkSource{Host: in.Source.Addr().Unmap().String(), Port: int(in.Source.Port())}
	}
	if in.Client.IsValid() {
		v.Client = in.Client.String()
	}
	return v
}

// disabled answers 503 and returns true when the relay runs no link manager.
func (h linkHandlers) disabled(w http.ResponseWriter) bool {
	if h.links != nil {
		return false
	}
	WriteProblem(w, Problem{Status: http.StatusServiceUnavailable, Title: "Device links are disabled",
		Detail: "this relay opens no device links: set devicelink.listen in its configuration"})
	return true
}

func (h linkHandlers) create(w http.ResponseWriter, r *http.Request) {
	p := access.From(r.Context())
	id := r.PathValue("device")
	dev, ok := h.c.Device(id)
	if !ok || !p.Sees(dev.Account) {
		writeNotFound(w, "device", strings.ToUpper(id))
		return
	}
	var in linkInput
	if !DecodeJSON(w, r, &in) {
		return
	}
	// In cluster mode, a device this relay does not hold may be another node's.
	transport, elsewhere := dev.State.Transport, false
	if h.o.Remote != nil && h.links != nil && !dev.State.Connected {
		t, ok, err := h.o.Remote.Locate(r.Context(), dev.ID)
		if err != nil {
			h.s.log.Warn("locate device for a link", "device", dev.ID, "err", err)
			WriteProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "the cluster cannot say which node holds the device: try again"})
			return
		}
		if ok {
			transport, elsewhere = t, true
		}
	}
	spec, devicePort, iv, errs := h.spec(&in, transport)
	if len(errs) > 0 {
		invalid(w, errs...)
		return
	}
	if h.disabled(w) {
		return
	}
	neverConnected := func() {
		WriteProblem(w, Problem{Status: http.StatusNotFound, Title: "Device never connected",
			Detail: fmt.Sprintf("device %s has not connected since the relay started: its address is unknown", strings.ToUpper(dev.ID))})
	}
	spec.Device, spec.Account = strings.ToUpper(dev.ID), dev.Account
	var info link.Info
	var err error
	if elsewhere {
		info, err = h.o.Remote.OpenRemote(r.Context(), spec, devicePort)
	} else {
		remote, perr := netip.ParseAddrPort(dev.State.Remote)
		if perr != nil {
			neverConnected()
			return
		}
		spec.DeviceAddr = netip.AddrPortFrom(remote.Addr().Unmap(), devicePort)
		if spec.Via == link.ViaListener { // the device's own source, port included
			spec.DeviceAddr = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		}
		info, err = h.links.Open(r.Context(), spec)
	}
	switch {
	case errors.Is(err, ErrNotConnected):
		neverConnected()
		return
	case errors.Is(err, ErrNodeLinksOff):
		WriteProblem(w, Problem{Status: http.StatusServiceUnavailable, Title: "Device links are disabled",
			Detail: "the relay node holding the device's connection opens no device links (devicelink.listen)"})
		return
	case errors.Is(err, link.ErrSourceBusy):
		WriteProblem(w, Problem{Status: http.StatusConflict, Title: "Device source in use",
			Detail: fmt.Sprintf("a link via the device listener already reaches %s from its UDP source%s: close it first, or ask for via socket", spec.Device, sourceText(spec.DeviceAddr))})
		return
	case errors.Is(err, link.ErrPortsExhausted):
		WriteProblem(w, Problem{Status: http.StatusServiceUnavailable, Title: "No port left",
			Detail: "every port of devicelink.ports holds a link: close one (DELETE /api/v1/devicelink/{token}) or widen the range"})
		return
	case errors.Is(err, link.ErrProtocolOff): // the options and the manager disagree: the manager's word
		invalid(w, FieldError{Pointer: "/protocol", Detail: fmt.Sprintf("this relay opens no %s links (devicelink.protocols)", spec.Protocol)})
		return
	case errors.Is(err, link.ErrClosed):
		WriteProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "the relay is stopping"})
		return
	case err != nil:
		h.s.log.Warn("open device link", "device", dev.ID, "protocol", spec.Protocol, "err", err)
		WriteProblem(w, Problem{Status: http.StatusBadGateway, Detail: "the link to the device could not be opened: " + err.Error()})
		return
	}
	h.s.Audit(r, "create", "deviceLink", fmt.Sprintf("%s:%d", info.Device, info.Port))
	v := linkView(&info)
	if iv != "" {
		v.Encrypt = &LinkEncrypt{InitializationVector: iv}
	}
	WriteJSON(w, http.StatusCreated, v)
}

// sourceText is " " and a device's UDP source, or "" when it is not known here.
func sourceText(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return " " + a.String()
}

// spec checks a create request and makes its link's Spec (without device, account and device
// address) and the device port, with the config's defaults applied; iv is the request's IV in
// lower-case hex ("" without encrypt). transport is how the device was last seen ("" never).
// Every problem is returned at once.
//
// A UDP link goes via the device listener (to the device's last UDP source, from the relay's
// UDP device listener) when the request asks for via listener, or when it names no via and no
// devicePort, the config names no device_port, and the device was last seen over UDP; otherwise
// via a socket of its own to the device's host at devicePort, as before this choice existed.
func (h linkHandlers) spec(in *linkInput, transport string) (s link.Spec, devicePort uint16, iv string, errs []FieldError) {
	bad := func(ptr, format string, args ...any) {
		errs = append(errs, FieldError{Pointer: ptr, Detail: fmt.Sprintf(format, args...)})
	}
	switch s.Protocol = strings.ToLower(in.Protocol); s.Protocol {
	case link.TCP, link.UDP:
		if !h.o.allows(s.Protocol) {
			bad("/protocol", "this relay opens no %s links: devicelink.protocols lists only %s", s.Protocol, strings.Join(h.o.Protocols, ", "))
		}
	case "":
		bad("/protocol", "required: tcp or udp")
	default:
		bad("/protocol", "want tcp or udp, got %q", in.Protocol)
	}
	switch s.Via = strings.ToLower(in.Via); s.Via {
	case "", link.ViaSocket:
	case link.ViaListener:
		switch {
		case s.Protocol == link.TCP:
			bad("/via", "listener: UDP links only")
		case !h.o.ViaListener:
			bad("/via", "this relay has no UDP device listener to reach devices through (devices.native.udp)")
		case transport != "" && transport != "udp":
			bad("/via", "listener: the device was last seen over %s, not UDP: it has no UDP source to reach", transport)
		}
		if in.DevicePort != nil {
			bad("/devicePort", "a link via the listener reaches the device at its own UDP source port: give no devicePort")
		}
	default:
		bad("/via", "want socket or listener, got %q", in.Via)
	}
	if s.Via == "" && s.Protocol == link.UDP && in.DevicePort == nil && h.o.DevicePort == 0 && transport == "udp" && h.o.ViaListener {
		s.Via = link.ViaListener
	}
	if s.Protocol == link.UDP && s.Via == "" {
		s.Via = link.ViaSocket
	}
	if s.Protocol == link.TCP {
		s.Via = ""
	}
	port := int(h.o.DevicePort)
	if in.DevicePort != nil {
		port = *in.DevicePort
	}
	switch {
	case s.Via == link.ViaListener:
		// the port is the device's source's
	case in.DevicePort == nil && port == 0:
		bad("/devicePort", "required: the relay has no default device port (devicelink.device_port)")
	case port < 1 || port > 65535:
		bad("/devicePort", "want a port from 1 to 65535, got %d", port)
	default:
		devicePort = uint16(port)
	}
	s.Timeout = h.o.Timeout
	if in.Timeout != nil {
		if *in.Timeout < 0 || *in.Timeout > maxLinkTimeout.Milliseconds() {
			bad("/timeout", "want milliseconds from 0 (never) to %d, got %d", maxLinkTimeout.Milliseconds(), *in.Timeout)
		}
		s.Timeout = time.Duration(*in.Timeout) * time.Millisecond
	}
	if s.Protocol == link.TCP {
		s.Timeout = 0 // the timeout is a UDP socket's
	}
	if src := in.Source; src != nil {
		a, err := netip.ParseAddr(src.Host)
		if err != nil || a.Zone() != "" {
			bad("/source/host", "want the client's IP address, got %q", src.Host)
		}
		if src.Port < 1 || src.Port > 65535 {
			bad("/source/port", "want a port from 1 to 65535, got %d", src.Port)
		}
		s.Source = netip.AddrPortFrom(a.Unmap(), uint16(src.Port))
	}
	if enc := in.Encrypt; enc != nil {
		key, kerr := hex.DecodeString(enc.Key)
		vec, verr := hex.DecodeString(enc.InitializationVector)
		switch {
		case enc.Key == "":
			bad("/encrypt/key", "required: %d bytes in hex (AES-256)", linkKeyBytes)
		case kerr != nil || len(key) != linkKeyBytes:
			bad("/encrypt/key", "want %d bytes in hex (%d hex digits, AES-256)", linkKeyBytes, 2*linkKeyBytes)
		}
		switch {
		case enc.InitializationVector == "":
			bad("/encrypt/initializationVector", "required: %d bytes in hex", linkIVBytes)
		case verr != nil || len(vec) != linkIVBytes:
			bad("/encrypt/initializationVector", "want %d bytes in hex (%d hex digits)", linkIVBytes, 2*linkIVBytes)
		}
		if len(errs) == 0 {
			if h.o.NewCipher == nil {
				bad("/encrypt", "this relay cannot encrypt device links")
			} else if c, err := h.o.NewCipher(key, vec); err != nil {
				bad("/encrypt", "%v", err)
			} else {
				s.Cipher, iv = c, hex.EncodeToString(vec)
			}
		}
		clear(key)
	}
	return s, devicePort, iv, errs
}

// maxLinkTimeout is the longest timeout a request may give (a day; a longer idle UDP mapping
// is unlikely to survive in any NAT anyway).
const maxLinkTimeout = 24 * time.Hour

// visible returns the links p may see, oldest first.
func (h linkHandlers) visible(p *access.Principal) []link.Info {
	all := h.links.List()
	out := all[:0:0]
	for _, in := range all {
		if p.Sees(in.Account) {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b link.Info) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.Token, b.Token))
	})
	return out
}

func (h linkHandlers) delete(w http.ResponseWriter, r *http.Request) {
	if h.disabled(w) {
		return
	}
	token := r.PathValue("token")
	links := h.visible(access.From(r.Context()))
	i := slices.IndexFunc(links, func(in link.Info) bool { return subtle.ConstantTimeCompare([]byte(in.Token), []byte(token)) == 1 })
	if i < 0 {
		WriteProblem(w, Problem{Status: http.StatusNotFound, Detail: "no device link has this token"})
		return
	}
	in := links[i]
	if err := h.links.Close(token); err != nil {
		if errors.Is(err, link.ErrNotFound) {
			WriteProblem(w, Problem{Status: http.StatusNotFound, Detail: "no device link has this token"})
			return
		}
		h.s.log.Error("close device link", "device", in.Device, "port", in.Port, "err", err)
		WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: "the link could not be closed"})
		return
	}
	h.s.Audit(r, "delete", "deviceLink", fmt.Sprintf("%s:%d", in.Device, in.Port))
	w.WriteHeader(http.StatusNoContent)
}

func (h linkHandlers) list(w http.ResponseWriter, r *http.Request) {
	if h.disabled(w) {
		return
	}
	device := strings.ToUpper(r.URL.Query().Get("device"))
	links := h.visible(access.From(r.Context()))
	page := make([]DeviceLinkView, 0, len(links))
	for i := range links {
		if device == "" || links[i].Device == device {
			page = append(page, linkView(&links[i]))
		}
	}
	WriteJSON(w, http.StatusOK, List[DeviceLinkView]{Data: page})
}
