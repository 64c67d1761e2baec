package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Partition ownership. Every node running Queues heartbeats its key in the nodes bucket (bucket
// TTL = Lease) every Lease/3; the live nodes are the keys there. Partition p belongs to the live
// node that wins it by rendezvous hashing (the highest score(node, p)): every node computes the
// same winners from the same list, and a node joining or leaving moves only the partitions it
// wins or won. The owner is whoever holds p's key in the leases bucket (bucket TTL = Lease,
// created only if absent, renewed every Lease/3 by an Update checked against the revision the
// owner wrote last): a renewal refused, or none succeeding for 2/3 of Lease, loses it. A node
// takes a partition it wins once its key is free (released, or expired Lease after its dead
// owner's last renewal), and releases one it no longer wins after handing back nothing (see
// partition.go: release). Releases and joins are announced on <prefix>.leases.changed, which
// wakes every node's loop at once instead of at its next tick.

// score is partition p's rendezvous score for node: FNV-1a over the node's key and p, mixed
// (splitmix64's finaliser), so that scores of neighbouring partitions are independent.
func score(node string, p int) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= 1099511628211
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(p))
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// winner returns the node among live (non-empty) that wins partition p.
func winner(live []string, p int) string {
	var best string
	var bestScore uint64
	for _, n := range live {
		if s := score(n, p); best == "" || s > bestScore || s == bestScore && n > best {
			best, bestScore = n, s
		}
	}
	return best
}

// leaseKey is partition p's key in the leases and cursors buckets.
func leaseKey(p int) string { return "p" + strconv.Itoa(p) }

// nodeKey is a node's key in the nodes bucket: its name when it is a valid key, else "x" and
// its bytes in hex.
func nodeKey(node string) string {
	if safeToken(node) {
		return node
	}
	return fmt.Sprintf("x%x", node)
}

// leasesChanged is the core NATS subject that wakes the nodes' ownership loops.
func (q *Queues) leasesChanged() string { return q.c.opts.Prefix + ".leases.changed" }

// ownLoop is the ownership loop: heartbeat, renewals, takes and releases, every Lease/3 and
// whenever another node announces a change.
func (q *Queues) ownLoop(ctx context.Context) {
	defer q.wg.Done()
	tick := time.NewTicker(q.opts.Lease / 3)
	defer tick.Stop()
	for {
		q.ownPass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-q.wake:
		}
	}
}

// ownPass is one pass of the ownership loop.
func (q *Queues) ownPass(ctx context.Context) {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	_, err := q.nodes.Put(actx, q.nodeKey, []byte(q.opts.Node))
	cancel()
	if err != nil && ctx.Err() == nil {
		q.warn("heartbeat", err)
	}
	if err == nil && !q.joined {
		q.joined = true
		q.announce() // the others make room for this node at once
	}
	q.renew(ctx)
	live, err := q.liveNodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			q.warn("list live nodes", err)
		}
		return // takes and releases wait for a list; renewals went on
	}
	for _, p := range q.parts {
		if ctx.Err() != nil {
			return
		}
		mine := winner(live, p.id) == q.nodeKey
		q.mu.Lock()
		st := p.state
		q.mu.Unlock()
		switch {
		case mine && st == partFree && time.Since(start) < q.opts.Lease/3:
			// (A slow NATS makes takes wait for the next pass: the renewals come first.)
			q.take(ctx, p)
		case !mine && st == partOwned:
			q.mu.Lock()
			if p.state == partOwned {
				p.state = partReleasing
				run := p.run
				q.wg.Add(1)
				go q.release(ctx, p, run)
			}
			q.mu.Unlock()
		}
	}
}

// liveNodes returns the keys of the live nodes, sorted, this node's always among them.
func (q *Queues) liveNodes(ctx context.Context) ([]string, error) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	lister, err := q.nodes.ListKeys(actx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	live := []string{q.nodeKey}
	for k := range lister.Keys() {
		if k != q.nodeKey {
			live = append(live, k)
		}
	}
	if actx.Err() != nil {
		return nil, actx.Err()
	}
	slices.Sort(live)
	return live, nil
}

// renew renews the leases this node holds; a lease refused or not renewed for 2/3 of Lease is
// lost: its partition stops at once, its cursors unwritten (another node may hold it now).
func (q *Queues) renew(ctx context.Context) {
	for _, p := range q.parts {
		q.mu.Lock()
		st, rev, at := p.state, p.rev, p.renewedAt
		q.mu.Unlock()
		if st != partOwned && st != partReleasing {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		nrev, err := q.leases.Update(actx, p.key, []byte(q.opts.Node), rev)
		cancel()
		if ctx.Err() != nil {
			return
		}
		q.mu.Lock()
		switch {
		case p.state != st || p.rev != rev:
			// Released meanwhile.
		case err == nil:
			p.rev, p.renewedAt = nrev, time.Now()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) ||
			time.Since(at) > 2*q.opts.Lease/3:
			q.log.Warn("partition lease lost", "partition", p.id, "err", err)
			q.endRunLocked(p.run)
			p.state, p.run = partFree, nil
			q.metrics.owned.WithLabelValues(strconv.Itoa(p.id)).Set(0)
		default:
			q.warn("renew partition lease", err)
		}
		q.mu.Unlock()
	}
}

// take tries to create p's lease and, holding it, starts delivering p.
func (q *Queues) take(ctx context.Context, p *partition) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	rev, err := q.leases.Create(actx, p.key, []byte(q.opts.Node))
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			q.warn("take partition lease", err)
		}
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		p.state, p.rev = partOwned, rev // Close deletes it
		return
	}
	p.state, p.rev, p.renewedAt = partOwned, rev, time.Now()
	p.run = q.startRun(p)
	q.metrics.moves.Inc()
	q.metrics.owned.WithLabelValues(strconv.Itoa(p.id)).Set(1)
	q.log.Debug("partition taken", "partition", p.id)
}

// announce wakes the other nodes' ownership loops.
func (q *Queues) announce() {
	if err := q.c.nc.Publish(q.leasesChanged(), nil); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		q.warn("announce a lease change", err)
	}
}

// warn logs a repeated failure of the ownership or cursor loops at most every queuesWarnEvery per
// kind, with the number of failures left out meanwhile.
func (q *Queues) warn(what string, err error) {
	q.warnMu.Lock()
	w := q.warned[what]
	w.n++
	due := time.Since(w.at) >= queuesWarnEvery
	if due {
		w.at = time.Now()
	}
	n := w.n
	if due {
		w.n = 0
	}
	q.warned[what] = w
	q.warnMu.Unlock()
	if due {
		q.log.Warn(what, "err", err, "failures", n)
	}
}

const queuesWarnEvery = 10 * time.Second

type warned struct {
	at time.Time
	n  int
}
