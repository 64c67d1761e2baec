package control

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// notify is the registry's batch watcher: the device changes of one write (a Create, Update or
// Delete of a device, or a whole Apply: one import chunk) become one notification message per
// account they belong to, with an observation per change in the write's order, handed to the
// notification routes (actors.System.Notify: stored in the journal, then queued, batched and
// signed by each route like data). It runs on the writer's goroutine after the registry write
// is durable and does not wait for the journal's commit: a crash between the two loses the
// notification of that write (the device change itself is kept).
func (c *Control) notify(changes []registry.Change) {
	type group struct {
		account string
		obs     []format.Observation
	}
	var groups []group
	for _, ch := range changes {
		if ch.Kind != registry.Devices {
			continue
		}
		o, account, ok := observation(&ch)
		if !ok {
			continue
		}
		i := 0
		for i < len(groups) && groups[i].account != account {
			i++
		}
		if i == len(groups) {
			groups = append(groups, group{account: account})
		}
		groups[i].obs = append(groups[i].obs, o)
	}
	if len(groups) == 0 {
		return
	}
	at := changes[0].At
	for _, g := range groups {
		n := format.Notification{HashID: newHashID(), Environment: g.account, Observations: g.obs}
		for i := range n.Observations {
			n.Observations[i].HashID = n.HashID + "-" + strconv.Itoa(i)
		}
		rec := format.AppendNotification(nil, &n)
		account, id, count := g.account, n.HashID, len(n.Observations)
		c.sys.Notify(account, rec, at, func(err error) {
			if err != nil {
				c.log.Error("notification not stored; it is lost", "account", account, "notification", id,
					"observations", count, "err", err)
			}
		})
	}
}

// observation is what a notification says of one device change, and the account it belongs
// to (the device's, or for a deletion the deleted device's); ok is false for a change that is
// not a device's.
func observation(ch *registry.Change) (o format.Observation, account string, ok bool) {
	o.Device = ch.ID
	switch {
	case ch.Deleted && ch.Before != nil:
		o.Action, account = "delete", ch.Before.Account
		o.CreatedAt = ch.Before.CreatedAt.UnixMilli()
		o.UpdatedAt, o.DeletedAt = ch.At.UnixMilli(), ch.At.UnixMilli()
	case ch.Device != nil:
		o.Action, account = "update", ch.Device.Account
		if ch.Before == nil {
			o.Action = "add"
		}
		o.Device = ch.Device.ID
		o.CreatedAt, o.UpdatedAt = ch.Device.CreatedAt.UnixMilli(), ch.Device.UpdatedAt.UnixMilli()
	default:
		return o, "", false
	}
	return o, account, true
}

// newHashID returns a new notification id: 16 random hex digits.
func newHashID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}
