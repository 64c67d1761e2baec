package store

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Discarding a route. A route that is removed for good with what it holds
// (the relay's forced delete) must not keep segments alive: every record
// still undone for it is marked done, in resident and cold segments alike,
// and persisted like MarkDelivered's marks, so the segments retire once their
// other routes are done; its dead letters and replay entries are deleted.
//
// Frames routed to it just before it was removed may commit afterwards. The
// store remembers the route as discarded for the rest of the run (until
// ReviveRoute): such records are marked done as their segment registers, and
// reported to the discard's late callback. Cold segments warmed later (a
// discard reads them back at once, but another reader may get there first)
// get the same treatment; their records were counted by the discard.

// discardState is the discarded routes, guarded by Store.state.
type discardState struct {
	// late is, per discarded route, the callback told of records discarded
	// after DiscardRoute returned (never nil in the map).
	late map[uint16]func(records int)
}

// DiscardRoute discards everything route holds: it marks every record not yet
// done for it done (resident and cold segments; persisted by the next
// commits), deletes its dead letters and replay entries, and remembers the
// route as discarded until ReviveRoute, so records for it that commit later
// are marked done as they commit and reported to late (from the committer
// goroutine, without store locks held; nil: not reported). It returns the
// records it discarded from the journal and from the dead-letter and replay
// lists. The caller must no longer deliver for route: marks, dead letters and
// replays of it made after DiscardRoute starts are not undone.
func (s *Store) DiscardRoute(route uint16, late func(records int)) (records, deadLetters int, err error) {
	if late == nil {
		late = func(int) {}
	}
	s.state.Lock()
	if s.discard.late == nil {
		s.discard.late = make(map[uint16]func(int))
	}
	s.discard.late[route] = late
	records = int(s.res.coldUndone[route])
	for _, seg := range s.segs {
		records += s.discardSegLocked(seg, route)
	}
	delete(s.flows, route) // a route gone never holds ingest (admit.go)
	delete(s.res.loaded, route)
	s.state.Unlock()
	s.signal()

	// Cold segments come back one at a time; warming one marks its records
	// for route done (see discardWarmedLocked).
	var cursor uint64
	for {
		s.state.RLock()
		cold := s.res.coldHas[route] > 0
		s.state.RUnlock()
		if !cold {
			break
		}
		id, err := s.nextColdKey(route, cursor, 0)
		if err != nil {
			return records, 0, fmt.Errorf("discard route %d: %w", route, err)
		}
		if id == 0 {
			break
		}
		if _, err := s.warm(id, 0); err != nil {
			return records, 0, fmt.Errorf("discard route %d: %w", route, err)
		}
		cursor = id
		s.signal()
	}

	_, dead, err := s.Purge(route, time.Time{})
	if err != nil {
		return records, dead, fmt.Errorf("discard route %d: %w", route, err)
	}
	replays, err := s.dropReplays(route)
	if err != nil {
		return records, dead + replays, fmt.Errorf("discard route %d: %w", route, err)
	}
	return records, dead + replays, nil
}

// ReviveRoute ends the discard of route (DiscardRoute): records for it that
// commit from now on stay undone until delivered. Safe for concurrent use.
func (s *Store) ReviveRoute(route uint16) {
	s.state.Lock()
	delete(s.discard.late, route)
	s.state.Unlock()
}

// discardSegLocked marks every record of seg not yet done for route done and
// returns how many it marked.
func (s *Store) discardSegLocked(seg *segState, route uint16) int {
	rt := seg.track(route)
	if rt == nil || rt.done == rt.total || seg.retiring {
		return 0
	}
	n := 0
	for _, p := range seg.undoneLocked(nil, rt) {
		if s.markLocked(seg, rt, p) {
			n++
		}
	}
	return n
}

// discardNewLocked marks the records of a segment that just registered (a
// commit) done for the discarded routes it has, and returns the callbacks to
// tell with their counts.
func (s *Store) discardNewLocked(seg *segState) (told []lateDiscard) {
	if len(s.discard.late) == 0 {
		return nil
	}
	for i := range seg.routes {
		route := seg.routes[i].route
		if fn, ok := s.discard.late[route]; ok {
			if n := s.discardSegLocked(seg, route); n > 0 {
				told = append(told, lateDiscard{fn: fn, n: n})
				delete(s.flows, route)
			}
		}
	}
	return told
}

// discardWarmedLocked marks the records of a segment read back from cold
// done for the discarded routes it has: DiscardRoute counted them already.
func (s *Store) discardWarmedLocked(seg *segState) {
	for route := range s.discard.late {
		s.discardSegLocked(seg, route)
	}
}

// lateDiscard is a late discard to report.
type lateDiscard struct {
	fn func(int)
	n  int
}

// ReplayRecords returns how many records route's replay list holds: dead
// letters moved back by Replay and not yet delivered or dead again.
func (s *Store) ReplayRecords(route uint16) (int, error) {
	n := 0
	err := s.Replaying(route, func(d *DeadLetter) bool {
		n += len(d.Items)
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("count replays of route %d: %w", route, err)
	}
	return n, nil
}

// dropReplays deletes route's replay entries and returns their records.
func (s *Store) dropReplays(route uint16) (int, error) {
	type entry struct {
		id uint64
		n  int
	}
	var all []entry
	err := s.Replaying(route, func(d *DeadLetter) bool {
		all = append(all, entry{d.ID, len(d.Items)})
		return true
	})
	if err != nil {
		return 0, err
	}
	records := 0
	for len(all) > 0 {
		batch := all[:min(len(all), 1000)]
		err := s.update(func(txn *badger.Txn) error {
			for _, e := range batch {
				if err := txn.Delete(appendDeadKey(nil, prefixReplay, route, e.id)); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, badger.ErrConflict) {
			continue
		}
		if err != nil {
			return records, fmt.Errorf("delete replay entries: %w", err)
		}
		for _, e := range batch {
			records += e.n
		}
		all = all[len(batch):]
	}
	return records, nil
}
