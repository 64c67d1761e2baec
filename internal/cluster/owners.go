package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketConns holds which node holds each device's connection (key: ConnKey of the device's
// identity, value: an Owner in JSON). A node writes it when a device's address changes there;
// the last writer wins, as the device's last connection does.
const BucketConns = "conns"

// ConnKey is device's key in the conns bucket: its subject token (Token) of the upper-cased
// identity, with the "~" of an identity that is not a token itself written "=" (JetStream KV
// keys take letters, digits and - / _ = . only; no identity token holds "=").
func ConnKey(device string) string {
	t := Token(strings.ToUpper(device))
	if strings.HasPrefix(t, "~") {
		return "=" + t[1:]
	}
	return t
}

// Owner is what the conns bucket says of a device: the node that holds its connection (or
// last saw its address) and how other nodes reach that node's device links.
type Owner struct {
	// Node is the node's name: its node requests' subject token (NodeName).
	Node string `json:"node"`
	// Links is the IP address (no port) other nodes dial to reach the node's device links
	// (devicelink.advertise, else devicelink.listen); "" when its links are off.
	Links string `json:"links,omitempty"`
	// Transport is how the device was last seen there: tcp, udp or ndjson.
	Transport string `json:"transport"`
}

// OwnersOptions configure a node's side of the conns bucket.
type OwnersOptions struct {
	// Self is this node (Node and Links; Transport is the device's).
	Self Owner
	// Current returns the transport device was last seen over on this node, false if it has
	// no address here (then nothing is written). Called from the writer goroutine.
	Current func(device string) (transport string, ok bool)
}

// Owners records which node holds each device's connection, in the conns bucket, and reads
// what the other nodes recorded. Changed never blocks: a device's changes wait in a set, and
// one writer goroutine puts each device's latest owner record, so many changes of one device
// before the writer gets to it are one write. Its methods are safe for concurrent use; Close
// stops the writer and waits for it.
type Owners struct {
	c       *Conn
	kv      jetstream.KeyValue
	self    Owner
	current func(string) (string, bool)
	subject string // the bucket's keys' subject prefix: $KV.<bucket>.
	log     *slog.Logger

	mu    sync.Mutex
	dirty map[string]struct{} // devices whose record is to be written
	wake  chan struct{}       // cap 1: dirty is not empty
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	// written counts the records NATS acknowledged.
	written atomic.Uint64
	// ctx ends the writes in flight when Close is called.
	ctx    context.Context
	cancel context.CancelFunc
}

// retryWrites is how long the writer waits after a pass whose writes NATS refused.
const retryWrites = time.Second

// OpenOwners opens (or creates) the conns bucket and starts the writer.
func (c *Conn) OpenOwners(ctx context.Context, o OwnersOptions) (*Owners, error) {
	if o.Self.Node == "" || o.Current == nil {
		return nil, errors.New("cluster: owners need the node's name and its devices' transports")
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:      Bucket(c.opts.Prefix, BucketConns),
		Description: "fleetrelay: which node holds each device's connection",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.opts.Replicas,
	}
	kv, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return c.js.CreateOrUpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: bucket %s: %w", cfg.Bucket, err)
	}
	w := &Owners{c: c, kv: kv, self: o.Self, current: o.Current, subject: "$KV." + cfg.Bucket + ".", log: c.log.With("bucket", cfg.Bucket),
		dirty: make(map[string]struct{}), wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.write()
	return w, nil
}

// Changed notes that device's address changed on this node: its record is written soon. It
// never blocks (it may be called on a gnet callback's path).
func (w *Owners) Changed(device string) {
	w.mu.Lock()
	w.dirty[device] = struct{}{}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// write is the writer goroutine: each pass takes the devices changed since the last one and
// puts their records; what NATS refused is tried again after retryWrites.
func (w *Owners) write() {
	defer close(w.done)
	ctx := w.ctx
	var lastLog time.Time
	for {
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		batch := w.dirty
		w.dirty = make(map[string]struct{})
		w.mu.Unlock()
		failed, lastErr := w.putAll(ctx, batch)
		if len(failed) == 0 {
			continue
		}
		if now := time.Now(); now.Sub(lastLog) >= 10*time.Second {
			w.log.Warn("device owners not recorded; tried again every second (logged at most every 10 s)",
				"devices", len(failed), "err", lastErr)
			lastLog = now
		}
		for _, d := range failed {
			w.Changed(d)
		}
		select {
		case <-w.stop:
			return
		case <-time.After(retryWrites):
		}
	}
}

// ownersInFlight bounds the records published and not yet acknowledged by JetStream: a
// reconnection storm's records are pipelined, not written one round trip at a time.
const ownersInFlight = 256

// putAll writes the records of batch's devices: this node, with the transport each was last
// seen over here (none for a device without an address here). It returns the devices whose
// record NATS did not acknowledge.
func (w *Owners) putAll(ctx context.Context, batch map[string]struct{}) (failed []string, lastErr error) {
	type sent struct {
		device string
		f      jetstream.PubAckFuture
	}
	pending := make([]sent, 0, min(len(batch), ownersInFlight))
	settle := func() {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		for _, s := range pending {
			select {
			case <-s.f.Ok():
				w.written.Add(1)
			case err := <-s.f.Err():
				failed, lastErr = append(failed, s.device), err
			case <-actx.Done():
				failed, lastErr = append(failed, s.device), actx.Err()
			}
		}
		pending = pending[:0]
	}
	rec := w.self
	for device := range batch {
		transport, ok := w.current(device)
		if !ok {
			continue
		}
		rec.Transport = transport
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		f, err := w.c.js.PublishAsync(w.subject+ConnKey(device), b)
		if err != nil {
			failed, lastErr = append(failed, device), fmt.Errorf("record owner of %s: %w", device, err)
			continue
		}
		pending = append(pending, sent{device, f})
		if len(pending) == ownersInFlight {
			settle()
		}
	}
	settle()
	return failed, lastErr
}

// Written is how many owner records NATS acknowledged since OpenOwners.
func (w *Owners) Written() uint64 { return w.written.Load() }

// Lookup returns the node that holds device's connection as the conns bucket says, false if
// no node recorded one.
func (w *Owners) Lookup(ctx context.Context, device string) (Owner, bool, error) {
	e, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		return w.kv.Get(ctx, ConnKey(device))
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return Owner{}, false, nil
	case err != nil:
		return Owner{}, false, fmt.Errorf("cluster: owner of %s: %w", device, err)
	}
	var o Owner
	if err := json.Unmarshal(e.Value(), &o); err != nil {
		return Owner{}, false, fmt.Errorf("cluster: owner of %s: %w", device, err)
	}
	return o, o.Node != "", nil
}

// Close stops the writer and waits for it; changes not written yet are dropped (the devices'
// next connections elsewhere write theirs).
func (w *Owners) Close() error {
	w.once.Do(func() {
		w.cancel()
		close(w.stop)
	})
	<-w.done
	return nil
}
