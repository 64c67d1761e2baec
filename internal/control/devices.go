package control

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// DeviceView is a device as the API shows it: its metadata, the resource's meta and its live
// state.
type DeviceView struct {
	ID      string        `json:"id"`
	IMEI    string        `json:"imei,omitempty"`
	ICCID   string        `json:"iccid,omitempty"`
	Custom1 string        `json:"custom1,omitempty"`
	Custom2 string        `json:"custom2,omitempty"`
	Custom3 string        `json:"custom3,omitempty"`
	Tags    []string      `json:"tags,omitempty"`
	Groups  []string      `json:"groups,omitempty"`
	Account string        `json:"account,omitempty"`
	Meta    registry.Meta `json:"meta"`
	State   DeviceState   `json:"state"`

	// HasToken says the device has a token (devices.auth: token); the token is write-only.
	HasToken bool `json:"has_token,omitempty"`
	// SecretFieldsSet names the secret custom fields the device has set (secrets.go): like the
	// token, they are write-only, never shown.
	SecretFieldsSet []string `json:"secret_fields_set,omitempty"`
}

// DeviceState is a device's live state on this relay.
type DeviceState struct {
	Connected bool       `json:"connected"`
	Remote    string     `json:"remote,omitempty"`    // the TCP peer, last UDP source or NDJSON peer
	Transport string     `json:"transport,omitempty"` // what Remote was seen on: tcp, udp, ndjson
	LastSeen  *time.Time `json:"last_seen,omitempty"` // the last frame received since start
	LastSeq   uint64     `json:"last_seq"`            // the highest seq stored
}

// Device returns the device's view; id is case-insensitive.
func (c *Control) Device(id string) (DeviceView, bool) {
	d, ok := c.reg.Device(id)
	if !ok {
		return DeviceView{}, false
	}
	return c.deviceView(&d), true
}

// Devices returns a page of devices (see registry.ListOptions).
func (c *Control) Devices(o registry.ListOptions) (page []DeviceView, more bool) {
	ds, more := c.reg.ListDevices(o)
	page = make([]DeviceView, len(ds))
	for i := range ds {
		page[i] = c.deviceView(&ds[i])
	}
	return page, more
}

func (c *Control) deviceView(d *registry.Device) DeviceView {
	v := DeviceView{ID: d.ID, IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
		Tags: d.Tags, Groups: d.Groups, Account: d.Account, HasToken: d.TokenHash != ([32]byte{}), Meta: d.Meta}
	hideSecrets(&v, d, c.sys.Secrets())
	st := c.sys.Device(d.ID)
	v.State = DeviceState{Connected: st.Connected, LastSeq: st.LastSeq}
	if st.Remote.IsValid() {
		v.State.Remote, v.State.Transport = st.Remote.String(), st.Transport
	}
	if !st.LastSeen.IsZero() {
		t := st.LastSeen.UTC()
		v.State.LastSeen = &t
	}
	return v
}

// DeviceWrite is one write of a device through the API.
type DeviceWrite struct {
	ID string // from the path, any case
	// Body is the device's metadata as JSON (id, imei, iccid, custom1..3, tags, groups,
	// account, token), or with Patch a JSON merge patch of its current form. The token and the
	// secret custom fields (secrets.go) are write-only: a body without one keeps the device's,
	// "" or null removes it.
	Body    []byte
	Patch   bool
	Account string // the caller key's account ("" for a global key)
	// Revision, when not 0, must be the device's current one (registry.ErrConflict otherwise).
	Revision uint64
}

// WriteDevice creates or replaces a device's metadata (every problem at once, *InvalidError).
// It applies to the messages stored from the moment it returns. A device of the config file
// fails with ErrConfigOwned, another account's with registry.ErrNotFound.
func (c *Control) WriteDevice(ctx context.Context, w DeviceWrite) (v DeviceView, created bool, err error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	id := strings.ToUpper(w.ID)
	cur, exists, err := c.visibleDevice(id, w.Account)
	if err != nil {
		return DeviceView{}, false, err
	}
	body, token, setToken, err := takeToken(w.Body)
	if err != nil {
		return DeviceView{}, false, err
	}
	if w.Patch {
		if !exists {
			return DeviceView{}, false, registry.ErrNotFound
		}
		if body, err = patchJSON(configDevice(&cur), body); err != nil {
			return DeviceView{}, false, err
		}
	}
	d, err := config.ParseDevice(body)
	if err != nil {
		return DeviceView{}, false, invalid(err)
	}
	var bad []Field
	switch {
	case d.ID == "":
		d.ID = id
	case strings.ToUpper(d.ID) != id:
		bad = append(bad, Field{"/id", fmt.Sprintf("%q is not the device's identity %q (identities are case-insensitive)", d.ID, id)})
	}
	d.ID = id
	bad = append(bad, fields(d.Check(""))...)
	bad = append(bad, c.checkAccount(&d.Account, w.Account)...)
	if len(bad) > 0 {
		return DeviceView{}, false, &InvalidError{Fields: bad}
	}
	dev := &registry.Device{ID: id, IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
		Tags: d.Tags, Groups: d.Groups, Account: d.Account, TokenHash: cur.TokenHash}
	if !w.Patch { // a merge patch keeps what it does not name already: it applies to the stored device
		keep, now := absentSecrets(body, c.sys.Secrets()), customs(&cur)
		for i, f := range customs(dev) {
			if keep&(1<<i) != 0 {
				*f = *now[i]
			}
		}
	}
	if setToken {
		dev.TokenHash = [32]byte{}
		if token != "" {
			dev.TokenHash = actors.TokenHash([]byte(token))
		}
	}
	if exists {
		dev.Meta = cur.Meta
		err = c.reg.Update(ctx, dev, w.Revision)
	} else {
		err = c.reg.Create(ctx, dev)
	}
	if err != nil {
		return DeviceView{}, false, err
	}
	stored, ok := c.reg.Device(id)
	if !ok {
		return DeviceView{}, false, registry.ErrNotFound
	}
	return c.deviceView(&stored), !exists, nil
}

// takeToken takes the token out of a device body (a JSON object; anything else is left for the
// parser to refuse): set says the body has one, token "" removing the device's.
func takeToken(body []byte) (rest []byte, token string, set bool, err error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return body, "", false, nil
	}
	raw, set := obj["token"]
	if !set {
		return body, "", false, nil
	}
	delete(obj, "token")
	if string(raw) != "null" {
		if json.Unmarshal(raw, &token) != nil {
			return nil, "", false, &InvalidError{Fields: []Field{{"/token", "must be a string (or null to remove it)"}}}
		}
		if len(token) > config.MaxDeviceToken {
			return nil, "", false, &InvalidError{Fields: []Field{{"/token", fmt.Sprintf("longer than %d bytes", config.MaxDeviceToken)}}}
		}
	}
	if rest, err = json.Marshal(obj); err != nil {
		return nil, "", false, fmt.Errorf("encode device body: %w", err)
	}
	return rest, token, true, nil
}

// FleetTokenHash is the hash of a config fleet device's token (revealed now; zero: none).
func FleetTokenHash(d *config.Device) ([32]byte, error) {
	v, err := d.Token.Reveal()
	switch {
	case err != nil:
		return [32]byte{}, err
	case v == "":
		return [32]byte{}, nil
	case len(v) > config.MaxDeviceToken:
		return [32]byte{}, fmt.Errorf("longer than %d bytes", config.MaxDeviceToken)
	}
	return actors.TokenHash([]byte(v)), nil
}

// DeleteDevice removes a device's metadata: the messages stored from then on have none.
func (c *Control) DeleteDevice(ctx context.Context, id, account string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	id = strings.ToUpper(id)
	_, exists, err := c.visibleDevice(id, account)
	if err != nil {
		return err
	}
	if !exists {
		return registry.ErrNotFound
	}
	return c.reg.Delete(ctx, registry.Devices, id)
}

// visibleDevice is the device if the caller of account may write it (see visibleRoute).
func (c *Control) visibleDevice(id, account string) (registry.Device, bool, error) {
	d, ok := c.reg.Device(id)
	switch {
	case !ok:
		return registry.Device{}, false, nil
	case account != "" && d.Account != account:
		return registry.Device{}, false, registry.ErrNotFound
	case d.Source == registry.SourceConfig:
		return registry.Device{}, false, ErrConfigOwned
	}
	return d, true, nil
}

// configDevice is d in the config file's schema (what a merge patch applies to).
func configDevice(d *registry.Device) *config.Device {
	return &config.Device{ID: d.ID, IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
		Tags: d.Tags, Groups: d.Groups, Account: d.Account}
}
