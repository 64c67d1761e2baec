package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// Notifications of device changes go through the registry's outbox (registry.Outbox): the
// observations of a write are stored as an outbox entry in the write's own store transaction,
// so that a crash cannot keep a device change and lose its notification. Once the write is
// committed the entry becomes notification messages, handed to the notification routes
// (actors.System.Notify: stored in the journal, then queued, batched and signed by each route
// like data); when the journal has them all, the entry is removed. Entries a crash left are
// turned into messages at the next start (Start), with the same ids: a notification is
// delivered at least once.
//
// A notification event is one write (a PUT, PATCH or DELETE of a device) or one whole import,
// whose chunks are written in several transactions: their entries are kept by the import and
// become messages when it finishes. An event is one message per account (environmentHashId),
// with an observation per device change in the order written, unless it holds more than
// maxNoticeObservations of an account: then it is split into messages of that many, which
// share the event's hashId.

// maxNoticeObservations bounds one notification message: ≈200 bytes an observation, ≈400 KB a
// message, under a route's default batch.max_bytes (1 MiB) and the 1 MB an Azure Event Hubs
// event takes.
const maxNoticeObservations = 2000

// note is an outbox entry's value: the device changes of one write, by account, enough to build
// their observations.
type note struct {
	Event  string      `json:"event"` // the event's hashId (an import's for all its writes)
	At     int64       `json:"at"`    // the write's time, Unix milliseconds
	Groups []noteGroup `json:"groups"`
}

type noteGroup struct {
	Account string       `json:"account,omitempty"`
	Changes []noteChange `json:"changes"`
}

type noteChange struct {
	Action  string `json:"a"` // add, update, delete
	Device  string `json:"d"`
	Created int64  `json:"c"` // the device's CreatedAt, Unix milliseconds
}

// noteOverhead is what a change adds to its entry in the store besides its device's ID (for
// the import's chunk bounds).
const noteOverhead = 40

// notices is the control's registry.Outbox.
type notices struct {
	c *Control

	mu      sync.Mutex
	removed []string      // entries whose messages are stored, to remove
	wake    chan struct{} // something in removed
	stop    chan struct{}
	wg      sync.WaitGroup
	started bool
}

// Stage turns the device changes of a write into the entry stored with it; nil when none of
// them is notified (not a device's, or no notification route takes its account now).
func (n *notices) Stage(ctx context.Context, changes []registry.Change) []byte {
	var groups []noteGroup
	for i := range changes {
		ch := &changes[i]
		nc, account, ok := noteOf(ch)
		if !ok {
			continue
		}
		g := 0
		for g < len(groups) && groups[g].Account != account {
			g++
		}
		if g == len(groups) {
			if !n.c.sys.Notifies(account) {
				continue
			}
			groups = append(groups, noteGroup{Account: account})
		}
		groups[g].Changes = append(groups[g].Changes, nc)
	}
	if len(groups) == 0 {
		return nil
	}
	event := ""
	if im := importOf(ctx); im != nil {
		event = im.event
	} else {
		event = newHashID()
	}
	v, err := json.Marshal(note{Event: event, At: changes[0].At.UnixMilli(), Groups: groups})
	if err != nil { // plain strings and numbers: cannot happen
		n.c.log.Error("notification not staged", "err", err)
		return nil
	}
	return v
}

// Committed hands a write's entry on: to its import, which emits its entries when it finishes,
// or straight to the routes.
func (n *notices) Committed(ctx context.Context, e registry.OutboxEntry) {
	if im := importOf(ctx); im != nil {
		im.notes = append(im.notes, e)
		return
	}
	n.emit([]registry.OutboxEntry{e})
}

// noteOf is what a notification says of one device change, and the account it belongs to (the
// device's, or for a deletion the deleted device's); ok is false for a change that is not a
// device's.
func noteOf(ch *registry.Change) (nc noteChange, account string, ok bool) {
	nc.Device = ch.ID
	switch {
	case ch.Kind != registry.Devices:
		return nc, "", false
	case ch.Deleted && ch.Before != nil:
		nc.Action, account = "delete", ch.Before.Account
		nc.Created = ch.Before.CreatedAt.UnixMilli()
	case ch.Device != nil:
		nc.Action, account = "update", ch.Device.Account
		if ch.Before == nil {
			nc.Action = "add"
		}
		nc.Device, nc.Created = ch.Device.ID, ch.Device.CreatedAt.UnixMilli()
	default:
		return nc, "", false
	}
	return nc, account, true
}

// emit turns entries into notification messages, one event after the other (entries of one
// event are consecutive: one write's, or one import's), and removes the entries once the
// journal has stored every message made of them. An entry that does not decode is logged and
// removed.
func (n *notices) emit(entries []registry.OutboxEntry) {
	for len(entries) > 0 {
		var (
			notes []note
			ids   []string
			event string
		)
		for len(entries) > 0 {
			var v note
			if err := json.Unmarshal(entries[0].Value, &v); err != nil {
				n.c.log.Error("notification entry unreadable; dropped", "entry", entries[0].ID, "err", err)
				n.remove(entries[0].ID)
				entries = entries[1:]
				continue
			}
			if len(notes) > 0 && v.Event != event {
				break
			}
			event = v.Event
			notes, ids = append(notes, v), append(ids, entries[0].ID)
			entries = entries[1:]
		}
		if len(notes) > 0 {
			n.emitEvent(event, notes, ids)
		}
	}
}

// emitEvent stores the messages of one event (see the comment at the top); ids are its entries.
func (n *notices) emitEvent(event string, notes []note, ids []string) {
	type group struct {
		account string
		obs     []format.Observation
	}
	var groups []group
	at := int64(0)
	for _, v := range notes {
		at = max(at, v.At)
		for _, ng := range v.Groups {
			g := 0
			for g < len(groups) && groups[g].account != ng.Account {
				g++
			}
			if g == len(groups) {
				groups = append(groups, group{account: ng.Account})
			}
			for _, c := range ng.Changes {
				o := format.Observation{Action: c.Action, Device: c.Device, CreatedAt: c.Created, UpdatedAt: v.At}
				if c.Action == "delete" {
					o.DeletedAt = v.At
				}
				groups[g].obs = append(groups[g].obs, o)
			}
		}
	}
	var (
		mu      sync.Mutex
		pending = 1 // the messages not yet stored, and this function until it has handed them all
		failed  bool
	)
	settle := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failed = failed || err != nil
		if pending--; pending > 0 {
			return
		}
		if failed {
			n.c.log.Error("notification not stored; kept, sent again at the next start", "notification", event)
			return
		}
		n.remove(ids...)
	}
	seq := 0
	for _, g := range groups {
		for len(g.obs) > 0 {
			k := min(len(g.obs), maxNoticeObservations)
			msg := format.Notification{HashID: event, Environment: g.account, Observations: g.obs[:k]}
			g.obs = g.obs[k:]
			for i := range msg.Observations {
				msg.Observations[i].HashID = event + "-" + strconv.Itoa(seq)
				seq++
			}
			rec := format.AppendNotification(nil, &msg)
			mu.Lock()
			pending++
			mu.Unlock()
			account, count := msg.Environment, len(msg.Observations)
			taken := n.c.sys.Notify(account, rec, time.UnixMilli(at), func(err error) {
				if err != nil {
					n.c.log.Error("notification message not stored", "account", account, "notification", event,
						"observations", count, "err", err)
				}
				settle(err)
			})
			if !taken { // no route takes the account's notifications now
				settle(nil)
			}
		}
	}
	settle(nil)
}

// remove queues entries for removal by the remover goroutine (the journal's callbacks must not
// write the store themselves).
func (n *notices) remove(ids ...string) {
	n.mu.Lock()
	n.removed = append(n.removed, ids...)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// start emits the entries a crash left and starts the remover.
func (n *notices) start() {
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return
	}
	n.started = true
	n.mu.Unlock()
	n.wg.Add(1)
	go n.remover()
	if p := n.c.reg.PendingOutbox(); len(p) > 0 {
		n.c.log.Info("notifications left by the last run: sending them", "entries", len(p))
		n.emit(p)
	}
}

func (n *notices) remover() {
	defer n.wg.Done()
	for {
		select {
		case <-n.wake:
		case <-n.stop:
			n.removeNow() // the last ones
			return
		}
		n.removeNow()
	}
}

func (n *notices) removeNow() {
	n.mu.Lock()
	ids := n.removed
	n.removed = nil
	n.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if err := n.c.reg.RemoveOutbox(context.Background(), ids...); err != nil {
		// Kept: sent again at the next start (the receivers see the same hashIds).
		n.c.log.Warn("notification entries not removed", "entries", len(ids), "err", err)
	}
}

// close stops the remover after a last removal; entries whose messages are stored later stay,
// and are sent again at the next start.
func (n *notices) close() {
	n.mu.Lock()
	started := n.started
	n.started = false
	n.mu.Unlock()
	if started {
		close(n.stop)
		n.wg.Wait()
	}
}

// newHashID returns a new notification id: 16 random hex digits.
func newHashID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}
