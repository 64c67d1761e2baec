package actors

import (
	"time"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Notify stores a notification message of the relay's own — record is its JSON object
// (format.AppendNotification), at when it was generated, account the account of the devices
// it is about ("" for none) — for every notification route that takes it: one that is not
// paused and belongs to that account or to none. It goes through the journal as a notice
// frame (store.Frame.Notice, with account as its Device so that an account's notifications
// keep their order in a route), and from there through each route's queue, batching and
// signing like the devices' data. done, if not nil, gets the store's answer. Notify reports
// whether any route takes the message; if none does, nothing is stored and done is not
// called. Safe for concurrent use; it does not wait for the commit.
func (s *System) Notify(account string, record []byte, at time.Time, done func(error)) bool {
	ids := s.notifiedBy(account, true)
	if len(ids) == 0 {
		return false
	}
	f := &store.Frame{Device: account, ReceivedAt: at.UnixMilli(), Notice: true, Routes: ids,
		Records: [][]byte{record}}
	s.opts.Journal.Append(f, func(err error) {
		if done != nil {
			done(err)
		}
	})
	return true
}

// Notifies reports whether a notification message about account's devices would be taken by a
// route now (see Notify).
func (s *System) Notifies(account string) bool {
	return len(s.notifiedBy(account, false)) > 0
}

// notifiedBy returns the IDs of the routes that take account's notifications (all of them, or
// only whether there is one).
func (s *System) notifiedBy(account string, all bool) []uint16 {
	var ids []uint16
	for _, ref := range s.table.Load().routes {
		r := ref.r
		if r.Notifications && !r.Paused && (r.Account == "" || r.Account == account) {
			ids = append(ids, r.ID)
			if !all {
				break
			}
		}
	}
	return ids
}
