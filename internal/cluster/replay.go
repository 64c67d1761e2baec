package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Dead-letter replay in cluster mode. Replay, on the node whose API was asked, moves a route's
// dead letters from <prefix>.dlq.<route> to <prefix>.dlq.<route>.replay (publish, then delete
// the original: a move cut half way leaves a letter in both, replayed and still listed — never
// lost), and that node's route actor delivers them again (Replaying), deleting each once all its
// records are delivered or dead again (ReplayDone, DeadLetter's finished). A node whose route
// actor starts reads every replay entry too, so entries of a node that died mid-replay are
// delivered by the next node to start, at least once. Listing and purging the dead letters
// read the dead-letter subject only: a letter being replayed is not listed, as in one node.

// ReplaySubject returns the subject of route's dead letters being replayed.
func ReplaySubject(prefix string, route uint16) string {
	return DeadLetterSubject(prefix, route) + ".replay"
}

// Replay moves every dead letter of route to its replay subject, where this node's route
// actor delivers it again, and returns how many dead letters and records it moved.
func (q *Queues) Replay(route uint16) (letters, records int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*opTimeout)
	defer cancel()
	to := ReplaySubject(q.c.opts.Prefix, route)
	err = q.each(ctx, DeadLetterSubject(q.c.opts.Prefix, route), func(m *jetstream.RawStreamMsg) (bool, error) {
		msg := &nats.Msg{Subject: to, Data: m.Data, Header: nats.Header{}}
		n := m.Header.Get(deadRecordsHeader)
		msg.Header.Set(deadRecordsHeader, n)
		// A move tried again after a lost answer lands once.
		msg.Header.Set(jetstream.MsgIDHeader, "replay:"+strconv.FormatUint(m.Sequence, 10))
		if _, err := retry(ctx, func(ctx context.Context) (*jetstream.PubAck, error) { return q.c.js.PublishMsg(ctx, msg) }); err != nil {
			return false, err
		}
		if err := q.deleteLetter(ctx, m.Sequence); err != nil {
			return false, err
		}
		k, _ := strconv.Atoi(n)
		letters++
		records += k
		return true, nil
	})
	if err != nil {
		return letters, records, fmt.Errorf("cluster: replay dead letters of route %d: %w", route, err)
	}
	return letters, records, nil
}

// Replaying calls fn for each dead letter of route being replayed, oldest first, until fn
// returns false. It waits for NATS (opTimeout at most).
func (q *Queues) Replaying(route uint16, fn func(*store.DeadLetter) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := q.letters(ctx, ReplaySubject(q.c.opts.Prefix, route), route, fn); err != nil {
		return fmt.Errorf("cluster: read replayed dead letters of route %d: %w", route, err)
	}
	return nil
}

// ReplayDone deletes the replay entries ids of route: all their records were delivered (or
// are dead again). An entry already gone (another node delivered it) is no error.
func (q *Queues) ReplayDone(route uint16, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for _, id := range ids {
		if err := q.deleteLetter(ctx, id); err != nil {
			return fmt.Errorf("cluster: replayed dead letter %d of route %d: %w", id, route, err)
		}
	}
	return nil
}

// ReplayRecords returns how many records route's replay entries hold.
func (q *Queues) ReplayRecords(route uint16) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	n, err := q.records(ctx, ReplaySubject(q.c.opts.Prefix, route))
	if err != nil {
		return n, fmt.Errorf("cluster: count replayed dead letters of route %d: %w", route, err)
	}
	return n, nil
}

// Purge deletes route's dead letters written before the given time (all of them for the zero
// time) and returns how many dead letters and records it deleted.
func (q *Queues) Purge(ctx context.Context, route uint16, before int64) (letters, records int, err error) {
	err = q.letters(ctx, DeadLetterSubject(q.c.opts.Prefix, route), route, func(d *store.DeadLetter) bool {
		if before != 0 && d.At >= before {
			return true
		}
		if err = q.deleteLetter(ctx, d.ID); err != nil {
			return false
		}
		letters++
		records += len(d.Items)
		return true
	})
	if err != nil {
		return letters, records, fmt.Errorf("cluster: purge dead letters of route %d: %w", route, err)
	}
	return letters, records, nil
}

// letters calls fn for each dead letter on subj (route's), oldest first, until fn returns false.
func (q *Queues) letters(ctx context.Context, subj string, route uint16, fn func(*store.DeadLetter) bool) error {
	return q.each(ctx, subj, func(m *jetstream.RawStreamMsg) (bool, error) {
		d, err := store.DecodeDeadLetter(route, m.Sequence, m.Data)
		if err != nil {
			return false, fmt.Errorf("dead letter %d: %w", m.Sequence, err)
		}
		return fn(d), nil
	})
}

// records sums the records of the dead letters on subj (their headers).
func (q *Queues) records(ctx context.Context, subj string) (int, error) {
	n := 0
	err := q.each(ctx, subj, func(m *jetstream.RawStreamMsg) (bool, error) {
		k, _ := strconv.Atoi(m.Header.Get(deadRecordsHeader))
		n += k
		return true, nil
	})
	return n, err
}

// each calls fn for each message on subj of the dead letters' stream, in stream order, until
// fn returns false or an error.
func (q *Queues) each(ctx context.Context, subj string, fn func(*jetstream.RawStreamMsg) (bool, error)) error {
	var seq uint64 = 1
	for {
		m, err := retry(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
			return q.dlq.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if more, err := fn(m); err != nil || !more {
			return err
		}
		seq = m.Sequence + 1
	}
}

// deleteLetter deletes message seq of the dead letters' stream; one already gone is no error.
func (q *Queues) deleteLetter(ctx context.Context, seq uint64) error {
	_, err := retry(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, q.dlq.DeleteMsg(ctx, seq) })
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "no message found") {
		return nil
	}
	return err
}
