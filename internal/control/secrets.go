package control

import (
	"encoding/json"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// Secret custom fields. A device's custom field may hold its credential — the IoT Hub key a
// route's azure_iot_hub auth signs with, say. The fields that are secret are the config's
// devices.secret_fields and the key_field of every route with auth.azure_iot_hub (the config
// file's and the API's), a set kept in the actor system (actors.System.SetSecrets) and
// recomputed whenever a route changes. A secret field is write-only through the API, as a
// device's token is: the views leave it out and say which are set (DeviceView.SecretFieldsSet),
// a PUT without it keeps the stored value ("" or null clears it), a merge patch likewise; and
// the formats render it as empty in every request body, while the route's URL and headers
// ([CUSTOM1]) and its per-device auth, which carry credentials by design, still use it.

// updateSecrets recomputes the secret fields from the config's and the registry's routes and
// hands them to the actors. It reads the registry (allowed from a watcher).
func (c *Control) updateSecrets() {
	s := c.secretCfg
	for o := (registry.ListOptions{Limit: 1000}); ; {
		page, more := c.reg.ListRoutes(o)
		for i := range page {
			if h := page[i].Spec.Auth.AzureIoTHub; h != nil {
				s |= format.SecretOf(h.KeyField)
			}
		}
		if !more || len(page) == 0 {
			break
		}
		o.After = page[len(page)-1].Name()
	}
	if old := c.sys.Secrets(); old != s {
		c.sys.SetSecrets(s)
		c.log.Info("secret custom fields", "fields", s.Names())
	}
}

// SecretFields returns the custom fields that are secret now.
func (c *Control) SecretFields() format.Secrets { return c.sys.Secrets() }

// customs are the custom fields of a registry device, in the order of format.SecretFields.
func customs(d *registry.Device) [3]*string { return [3]*string{&d.Custom1, &d.Custom2, &d.Custom3} }

// hideSecrets clears v's secret custom fields and lists the ones d has set.
func hideSecrets(v *DeviceView, d *registry.Device, s format.Secrets) {
	if s == 0 {
		return
	}
	shown := [3]*string{&v.Custom1, &v.Custom2, &v.Custom3}
	for i, f := range customs(d) {
		if s&(1<<i) == 0 {
			continue
		}
		*shown[i] = ""
		if *f != "" {
			v.SecretFieldsSet = append(v.SecretFieldsSet, format.SecretFields[i])
		}
	}
}

// absentSecrets returns the secret fields of s that a device body (a JSON object) does not
// name: a PUT keeps their stored values. A body that is not a JSON object names none (the
// parser refuses it).
func absentSecrets(body []byte, s format.Secrets) format.Secrets {
	if s == 0 {
		return 0
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return 0
	}
	for i, f := range format.SecretFields {
		if _, ok := obj[f]; ok {
			s &^= 1 << i
		}
	}
	return s
}
