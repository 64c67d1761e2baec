package actors_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Cluster mode below the relay: the actors over the cluster's journal (internal/cluster), whose
// devices' lastSeq may have been stored through another node (actors.SeqLoader).

// clusterJournal is a node's Journal in cluster mode as far as the ingest goes: the cluster's
// journal for the frames and the devices' state, a store for what routes need (no routes here).
type clusterJournal struct {
	*store.Store
	*cluster.Journal
}

var _ actors.SeqLoader = clusterJournal{}

func (c clusterJournal) Append(f *store.Frame, done func(error)) { c.Journal.Append(f, done) }
func (c clusterJournal) LastSeq(d string) uint64                 { return c.Journal.LastSeq(d) }
func (c clusterJournal) DeliveredSeq(d string) uint64            { return c.Journal.DeliveredSeq(d) }
func (c clusterJournal) Forget(d string) bool                    { return c.Journal.Forget(d) }
func (c clusterJournal) WindowSeq(d string, seq uint64) (bool, bool) {
	return c.Journal.WindowSeq(d, seq)
}

// clusterNode is one relay node: its journal on its own NATS connection, the actors, a
// device listener.
type clusterNode struct {
	j   *cluster.Journal
	sys *actors.System
	srv *netio.Server
}

func newClusterNode(t *testing.T, url, name string) *clusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: url, Replicas: 3, Prefix: "a", Name: name})
	if err != nil {
		t.Fatal(err)
	}
	j, err := conn.OpenJournal(ctx, cluster.JournalOptions{Partitions: 4, Node: name})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	n := &clusterNode{j: j}
	n.sys = actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 1 << 16,
		Journal: clusterJournal{st, j}, DeviceIdle: time.Hour})
	if err := st.Start(store.Hooks{OnCommit: n.sys.OnCommit}); err != nil {
		t.Fatal(err)
	}
	n.srv = netio.New(netio.Options{TCP: "127.0.0.1:0", EventLoops: 1}, n.sys)
	if err := n.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.srv.Stop(ctx); err != nil {
			t.Error(err)
		}
		if err := n.sys.Stop(ctx); err != nil {
			t.Error(err)
		}
		_ = j.Close()
		_ = conn.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// hello connects serial to node n and returns the connection and the WELCOME, or the ERROR
// code if the relay answered that instead.
func (n *clusterNode) hello(t *testing.T, serial string) (*device, native.Welcome, uint16) {
	t.Helper()
	c, err := net.Dial("tcp", n.srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := &device{t: t, serial: serial, c: c}
	d.write(native.AppendHello(nil, &native.Hello{Serial: serial}))
	typ, body := d.read()
	switch typ {
	case native.TypeWelcome:
		w, err := native.ParseWelcome(body)
		if err != nil {
			t.Fatal(err)
		}
		return d, w, 0
	case native.TypeError:
		code, _, err := native.ParseError(body)
		if err != nil {
			t.Fatal(err)
		}
		return d, native.Welcome{}, code
	}
	t.Fatalf("%s: frame type %d after HELLO", serial, typ)
	return nil, native.Welcome{}, 0
}

// TestClusterLastSeqAcrossNodes: a native device that stored frames through node A and
// reconnects to node B gets A's lastSeq in B's WELCOME (B loads it from the cluster before it
// answers), and B acknowledges what follows; NDJSON lines of one identity sent through A, then
// B, are numbered on from each other (the same seq twice would be dropped by JetStream as a
// duplicate, and lost); with NATS gone, a device B does not know gets ERROR 503 for its HELLO,
// and a welcomed one for its next DATA.
func TestClusterLastSeqAcrossNodes(t *testing.T) {
	c := natstest.Start(t, 3)
	a := newClusterNode(t, c.NodeURL(0), "a")
	b := newClusterNode(t, c.NodeURL(1), "b")

	d, w, code := a.hello(t, "d1")
	if code != 0 || w.LastSeq != 0 {
		t.Fatalf("first WELCOME from a: %+v, error %d", w, code)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		d.send(seq, 2)
	}
	d.stored(5)
	d.c.Close()

	d, w, code = b.hello(t, "d1")
	if code != 0 || w.LastSeq != 5 {
		t.Fatalf("WELCOME from b after 5 frames through a: lastSeq %d, error %d, want 5", w.LastSeq, code)
	}
	d.send(6, 1)
	d.send(7, 1)
	d.stored(7)
	if got := b.j.LastSeq("d1"); got != 7 {
		t.Fatalf("b's LastSeq(d1) = %d, want 7", got)
	}

	// NDJSON: a numbers the first lines 1; b, which never saw the identity, must load that first.
	var done doneCount
	remote := netip.MustParseAddrPort("127.0.0.1:1")
	a.sys.Lines("gw-1", false, remote, [][]byte{[]byte(`{"n":1}`)}, done.done)
	done.want(t, 1)
	b.sys.Lines("gw-1", false, remote, [][]byte{[]byte(`{"n":2}`)}, done.done)
	done.want(t, 2)
	poll(t, func() error {
		if got := b.j.LastSeq("gw-1"); got != 2 {
			return fmt.Errorf("b's LastSeq(gw-1) = %d, want 2 (numbered after a's 1)", got)
		}
		return nil
	})
	if a.sys.LinesLost()+b.sys.LinesLost() != 0 {
		t.Fatalf("lines lost: a %d, b %d", a.sys.LinesLost(), b.sys.LinesLost())
	}

	// NATS gone: nothing can be loaded or stored.
	for i := range 3 {
		c.Stop(i)
	}
	if _, _, code := b.hello(t, "d2"); code != native.CodeUnavailable {
		t.Fatalf("HELLO of an unknown device with NATS down: error %d, want %d", code, native.CodeUnavailable)
	}
	d.send(8, 1)
	typ, body := d.read()
	if code, _, _ := native.ParseError(body); typ != native.TypeError || code != native.CodeUnavailable {
		t.Fatalf("DATA with NATS down: frame type %d code %d, want ERROR %d", typ, code, native.CodeUnavailable)
	}
}
