package actors

import (
	"context"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// Deliverer takes one batch of a route to the route's endpoint: it renders, compresses, signs
// and sends it, retrying as the route's policy says, until it is delivered, given up on, its
// oldest message's retention passed before a retry, or ctx ends. The route actor calls it from
// a goroutine of its own per batch (ctx ends at System.Stop), at most Route.Concurrency at once
// apart from batches waiting to retry; an implementation must be safe for concurrent use.
type Deliverer interface {
	Deliver(ctx context.Context, b *Batch) Outcome
}

// Result is how a delivery ended.
type Result uint8

// Results of a delivery.
const (
	// Delivered: the endpoint accepted the batch; its messages leave the route's queue.
	Delivered Result = iota
	// GaveUp: the route's maximum attempts failed; the messages move to the dead-letter list.
	GaveUp
	// Expired: the oldest message's retention passed before a retry (see Batch.Expired); the
	// expired messages move to the dead-letter list, the others go back to the lane.
	Expired
	// Stopped: the delivery ended otherwise (shutdown, or a batch that could not be built);
	// the messages stay stored and go back to the lane.
	Stopped
)

// Outcome is the end of one batch's delivery.
type Outcome struct {
	Result   Result
	Status   int   // the last HTTP status, 0 if none
	Attempts int   // requests made (and attempts that could not be sent)
	Err      error // why it was not delivered: logged, and the dead letter's reason for GaveUp
}

// Batch is one lane's batch on its way to the route's endpoint: up to Route.MaxMessages messages
// (within Route.MaxBytes by their size hints) of one destination, in the order the devices sent
// them. Its fields are read-only; its methods are safe for use from the delivering goroutine,
// for as long as Deliver runs.
type Batch struct {
	URL    string      // the lane's destination, dynamic fields resolved
	Header [][2]string // the route's headers, dynamic fields resolved

	ra     *routeActor
	r      *Route // the settings it was made under
	lane   *lane
	items  []item
	oldest int64 // Unix ms the retention of its oldest message counts from
}

// Len is the number of messages.
func (b *Batch) Len() int { return len(b.items) }

// Message sets *m to message i as the route renders it: the record, its place in the device's
// stream, and the device's metadata (custom fields, which of them are secret, tags, groups,
// account). m.Attempt is 0;
// m.Data aliases the stored record, which must not be modified.
func (b *Batch) Message(i int, m *format.Message) {
	it := &b.items[i]
	messageOf(it.f, int(it.rec), m)
	if it.f.Notice {
		return // no device's: messageOf set its account (notify.go)
	}
	if md := b.ra.sys.meta(it.f.Device); md != nil {
		m.Custom1, m.Custom2, m.Custom3 = md.Custom1, md.Custom2, md.Custom3
		m.Secret = format.Secrets(b.ra.sys.secrets.Load())
		m.Tags, m.Groups, m.Account = md.Tags, md.Groups, md.Account
	}
}

// Waiting tells the route that the batch waits to retry (true: it holds no request slot, and
// another lane may send meanwhile) or that its retry starts (false). A Deliverer calls it after
// every failed attempt and before every retry.
func (b *Batch) Waiting(on bool) {
	b.ra.sys.root.Send(b.ra.self, &waitMsg{lane: b.lane, on: on})
}

// Expired reports whether the retention of the batch's oldest message has passed, by the
// route's clock. A Deliverer asks before every retry and ends with Expired if so.
func (b *Batch) Expired() bool {
	r := b.r.Retention
	return r > 0 && b.ra.now().Sub(time.UnixMilli(b.oldest)) > r
}

// Clock is the time the route actors read (linger, retention) and the timers they arm. nil in
// Options: the wall clock. Tests step a fake one instead of sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func())
}

type wallClock struct{}

func (wallClock) Now() time.Time                      { return time.Now() }
func (wallClock) AfterFunc(d time.Duration, f func()) { time.AfterFunc(d, f) }
