package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Route IDs. A frame names its routes by number (store.Frame.Routes), and every node must mean
// the same route by the same number: the routes bucket holds the cluster's numbering, two keys a
// route — "id.<n>" holding the name that took number n, and "name.<route name>" holding n.
// A new name first takes a number with a create of its "id." key (exclusive: two names never
// share one), then creates its "name." key; of two nodes naming one new route at once, the
// second's create fails, it reads the first's number back and gives its own number up.

// routeIDs is the journal's cache of the routes bucket, under mu (which also serialises
// RouteID's writes).
type routeIDs struct {
	mu   sync.Mutex
	ids  map[string]uint16
	next uint64 // the lowest number not known to be taken; 0: the taken ones not listed yet
}

// RouteID returns the cluster-wide ID of route name, taking a new one (1 to 65535) on its
// first use anywhere in the cluster. Known names are answered from memory; a new one waits for
// JetStream (15 s at most). Safe for concurrent use.
func (j *Journal) RouteID(name string) (uint16, error) {
	r := &j.routes
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.ids[name]; ok {
		return id, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	nameKey := "name." + keySegment(name)
	for range 8 {
		ent, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
			return j.routesKV.Get(ctx, nameKey)
		})
		if err == nil {
			n, err := strconv.ParseUint(string(ent.Value()), 10, 16)
			if err != nil || n == 0 {
				return 0, fmt.Errorf("cluster: route %q: routes bucket holds ID %q", name, ent.Value())
			}
			return r.keep(name, uint16(n)), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, fmt.Errorf("cluster: route %q: read its ID: %w", name, err)
		}
		n, err := j.reserveRouteID(ctx, name)
		if err != nil {
			return 0, err
		}
		_, err = retry(ctx, func(ctx context.Context) (uint64, error) {
			return j.routesKV.Create(ctx, nameKey, []byte(strconv.FormatUint(n, 10)))
		})
		if err == nil {
			return r.keep(name, uint16(n)), nil
		}
		if !conflict(err) {
			return 0, fmt.Errorf("cluster: route %q: store its ID %d: %w", name, n, err)
		}
		// Another node named it first: give the number up and read the name's back (a direct
		// get may be answered by a replica that has not the other's create yet: try again).
		_ = j.routesKV.Delete(ctx, "id."+strconv.FormatUint(n, 10))
	}
	return 0, fmt.Errorf("cluster: route %q: no stable ID after 8 tries", name)
}

func (r *routeIDs) keep(name string, id uint16) uint16 {
	if r.ids == nil {
		r.ids = make(map[string]uint16)
	}
	r.ids[name] = id
	return id
}

// reserveRouteID takes the lowest free number for name (its "id." key), under routeIDs.mu.
func (j *Journal) reserveRouteID(ctx context.Context, name string) (uint64, error) {
	r := &j.routes
	if r.next == 0 {
		taken, err := j.takenRouteIDs(ctx)
		if err != nil {
			return 0, err
		}
		r.next = taken + 1
	}
	for ; r.next <= math.MaxUint16; r.next++ {
		n := r.next
		_, err := retry(ctx, func(ctx context.Context) (uint64, error) {
			return j.routesKV.Create(ctx, "id."+strconv.FormatUint(n, 10), []byte(name))
		})
		if err == nil {
			r.next++
			return n, nil
		}
		if !conflict(err) {
			return 0, fmt.Errorf("cluster: route %q: take ID %d: %w", name, n, err)
		}
	}
	return 0, fmt.Errorf("cluster: route %q: %w", name, store.ErrTooManyRoutes)
}

// takenRouteIDs returns the highest number taken in the routes bucket (0: none).
func (j *Journal) takenRouteIDs(ctx context.Context) (uint64, error) {
	kl, err := j.routesKV.ListKeysFiltered(ctx, "id.>")
	if err != nil {
		return 0, fmt.Errorf("cluster: list route IDs: %w", err)
	}
	var top uint64
	for k := range kl.Keys() {
		if n, err := strconv.ParseUint(strings.TrimPrefix(k, "id."), 10, 64); err == nil {
			top = max(top, n)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("cluster: list route IDs: %w", err)
	}
	return top, nil
}

// keySegment returns name as the end of a key: itself when it makes valid subject tokens, else
// "=" and its bytes in hex (a route name has no "=").
func keySegment(name string) string {
	ok := name != "" && !strings.HasPrefix(name, ".") && !strings.HasSuffix(name, ".") && !strings.Contains(name, "..")
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if ok {
		return name
	}
	return fmt.Sprintf("=%x", name)
}
