package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// journalNode is one relay node's journal over its own connection.
type journalNode struct {
	conn *cluster.Conn
	j    *cluster.Journal
	once sync.Once
}

func openJournal(t testing.TB, ctx context.Context, url string, o cluster.JournalOptions) *journalNode {
	t.Helper()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: url, Replicas: 3, Prefix: "t", Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	j, err := conn.OpenJournal(ctx, o)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	n := &journalNode{conn: conn, j: j}
	t.Cleanup(n.close)
	return n
}

func (n *journalNode) close() {
	n.once.Do(func() {
		_ = n.j.Close()
		_ = n.conn.Close()
	})
}

// appendWait appends frames in order and returns each one's outcome once all are answered
// (a hang detector bounds the wait: not a timing assert).
func appendWait(t testing.TB, j *cluster.Journal, frames ...*store.Frame) []error {
	t.Helper()
	errs := make([]error, len(frames))
	var wg sync.WaitGroup
	for i, f := range frames {
		wg.Add(1)
		j.Append(f, func(err error) { errs[i] = err; wg.Done() })
	}
	waitGroup(t, &wg, "the journal's answers")
	return errs
}

func waitGroup(t testing.TB, wg *sync.WaitGroup, what string) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(2 * time.Minute):
		t.Fatalf("never: %s", what)
	}
}

func frame(device string, seq, prev uint64, recs ...string) *store.Frame {
	f := &store.Frame{Device: device, Serial: device, Seq: seq, PrevSeq: prev, ReceivedAt: 1700000000000 + int64(seq), Routes: []uint16{1}}
	for _, r := range recs {
		f.Records = append(f.Records, []byte(r))
	}
	return f
}

// journalMsgs reads the whole journal stream, in stream order.
func journalMsgs(t testing.TB, ctx context.Context, url string) []*jetstream.RawStreamMsg {
	t.Helper()
	js := testJS(t, url)
	st, err := js.Stream(ctx, cluster.JournalStream("t"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// replicaLastSeq is the last sequence of the journal stream in node srv's own replica.
func replicaLastSeq(t testing.TB, srv *server.Server) uint64 {
	t.Helper()
	if srv == nil {
		return 0
	}
	acc, err := srv.JszAccount(&server.JSzOptions{Account: "$G", Streams: true})
	if err != nil {
		return 0
	}
	for _, sd := range acc.Streams {
		if sd.Name == cluster.JournalStream("t") {
			return sd.State.LastSeq
		}
	}
	return 0
}

// TestJournalAppend: frames of several devices, pipelined (more than MaxPending at once), are
// in the journal stream once acknowledged — on their device's subject, as EncodeFrame wrote
// them, with their msg IDs, in order per device — on a quorum of replicas at once and on all
// three soon after; a frame without routes or records and the device's results and
// notifications are published too; a resend is answered as a duplicate and stored once; the
// windowed frames of a UDP device are remembered per seq; and the stream's new leader, once
// the old one is stopped, has every acknowledged frame.
func TestJournalAppend(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4, Node: "a", MaxPending: 8})
	j := n.j

	devices := []string{"dev-1", "dev-2", "a.b", "356307042441013"}
	var frames []*store.Frame
	for seq := uint64(1); seq <= 25; seq++ {
		for _, d := range devices {
			frames = append(frames, frame(d, seq, seq-1, fmt.Sprintf(`{"d":%q,"s":%d}`, d, seq)))
		}
	}
	empty := &store.Frame{Device: "dev-1", Serial: "dev-1", Seq: 26, PrevSeq: 25} // no routes, no records
	result := &store.Frame{Device: "dev-2", Serial: "dev-2", Result: true, Task: 9, Records: [][]byte{[]byte(`{"ok":true}`)}, Routes: []uint16{1}}
	notice := &store.Frame{Notice: true, Records: [][]byte{[]byte(`{"n":1}`)}, Routes: []uint16{2}}
	frames = append(frames, empty, result, notice)
	var wg sync.WaitGroup
	for _, f := range frames {
		wg.Add(1)
		j.Append(f, func(err error) {
			if err != nil {
				t.Errorf("%s seq %d: %v", f.Device, f.Seq, err)
			}
			wg.Done()
		})
	}
	waitGroup(t, &wg, "acknowledgements")
	want := uint64(len(frames))
	// Acknowledged means a quorum's raft logs have it; their stores apply it soon after.
	eventually(t, "every replica holds every message", func() bool {
		for i := range 3 {
			if replicaLastSeq(t, c.Server(i)) < want {
				return false
			}
		}
		return true
	})

	msgs := journalMsgs(t, ctx, c.URL())
	if uint64(len(msgs)) != want {
		t.Fatalf("%d messages in the journal, want %d", len(msgs), want)
	}
	next := map[string]uint64{}
	for _, m := range msgs {
		f, err := cluster.DecodeFrame(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if wantSubj := cluster.JournalSubject("t", f, 4); m.Subject != wantSubj {
			t.Errorf("%s seq %d on %q, want %q", f.Device, f.Seq, m.Subject, wantSubj)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != cluster.MsgID(f) {
			t.Errorf("%s seq %d: msg id %q, want %q", f.Device, f.Seq, id, cluster.MsgID(f))
		}
		switch {
		case f.Notice:
			if string(f.Records[0]) != `{"n":1}` {
				t.Errorf("notice %+v", f)
			}
		case f.Result:
			if f.Task != 9 || f.Device != "dev-2" {
				t.Errorf("result %+v", f)
			}
		default:
			if next[f.Device]+1 != f.Seq {
				t.Errorf("%s: seq %d after %d", f.Device, f.Seq, next[f.Device])
			}
			next[f.Device] = f.Seq
			if f.Seq <= 25 && string(f.Records[0]) != fmt.Sprintf(`{"d":%q,"s":%d}`, f.Device, f.Seq) {
				t.Errorf("%s seq %d: records %q", f.Device, f.Seq, f.Records)
			}
		}
	}
	for _, d := range devices {
		wantLast := uint64(25)
		if d == "dev-1" {
			wantLast = 26
		}
		if next[d] != wantLast || j.LastSeq(d) != wantLast {
			t.Errorf("%s: last in the journal %d, LastSeq %d, want %d", d, next[d], j.LastSeq(d), wantLast)
		}
	}

	// Each device's messages, results included, were published one at a time, each expecting
	// the one before it on the subject; the result says its device's lastSeq, which another
	// node reads from it.
	for _, d := range devices {
		checkChain(t, deviceMsgs(t, ctx, c.URL(), d), true)
	}
	for _, m := range msgs {
		if f, _ := cluster.DecodeFrame(m.Data); f.Result {
			if got := m.Header.Get(cluster.LastSeqHeader); got != "25" {
				t.Errorf("result's %s = %q, want 25", cluster.LastSeqHeader, got)
			}
		}
	}
	other := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4, Node: "other"})
	if got, err := other.j.LoadLastSeq(ctx, "dev-2"); err != nil || got != 25 {
		t.Errorf("LoadLastSeq(dev-2), whose last message is a result = %d, %v, want 25", got, err)
	}
	other.close()

	// A resend of a stored seq (by a writer that starts again: no PrevSeq): acknowledged, not
	// stored again.
	if errs := appendWait(t, j, frame("dev-2", 25, 0, `{"again":true}`)); errs[0] != nil {
		t.Fatalf("resend: %v", errs[0])
	}
	if got := len(journalMsgs(t, ctx, c.URL())); uint64(got) != want {
		t.Fatalf("after a resend %d messages, want %d", got, want)
	}

	// Windowed frames (UDP): stored out of order; the window tells which.
	w := func(seq uint64) *store.Frame { f := frame("udp-1", seq, 0, `{}`); f.Window = true; return f }
	for i, err := range appendWait(t, j, w(3), w(1), w(5)) {
		if err != nil {
			t.Fatalf("windowed frame %d: %v", i, err)
		}
	}
	for seq, stored := range map[uint64]bool{1: true, 2: false, 3: true, 4: false, 5: true, 6: false} {
		if got, _ := j.WindowSeq("udp-1", seq); got != stored {
			t.Errorf("WindowSeq(udp-1, %d) = %v, want %v", seq, got, stored)
		}
	}
	if j.LastSeq("udp-1") != 5 {
		t.Errorf("LastSeq(udp-1) = %d, want 5", j.LastSeq("udp-1"))
	}
	want += 3

	// The stream's leader goes: its successor has every acknowledged frame.
	js := testJS(t, c.URL())
	st, err := js.Stream(ctx, cluster.JournalStream("t"))
	if err != nil {
		t.Fatal(err)
	}
	leader := st.CachedInfo().Cluster.Leader
	idx := int(leader[1] - '1') // natstest names its nodes n1, n2, n3
	c.Stop(idx)
	eventually(t, "a new journal leader", func() bool {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err := st.Info(ictx)
		return err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != leader
	})
	if got := len(journalMsgs(t, ctx, c.URL())); uint64(got) != want {
		t.Fatalf("after the leader %s stopped: %d messages, want %d", leader, got, want)
	}
	// And the journal goes on storing through the new leader.
	if errs := appendWait(t, j, frame("dev-3", 1, 0, `{}`)); errs[0] != nil {
		t.Fatalf("append after the leader's loss: %v", errs[0])
	}
	if !j.Healthy() {
		t.Error("not healthy after an acknowledged publish")
	}
}

// testJS is a JetStream client of the test's own, closed at its end.
func testJS(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	conn, err := cluster.Connect(context.Background(), cluster.Options{URL: url, Prefix: "t", Name: "test-reader"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cluster.JetStreamOf(conn)
}

// TestJournalGap: a DATA frame whose publish fails makes the frames chained after it fail with
// store.ErrGap — the one appended with it and one appended after the failure, neither
// published — and the device's lastSeq, also as another node loads it from the journal, stays
// at the last frame before the hole. The device's resend of both then stores them, in order.
func TestJournalGap(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4, Node: "a"})
	b := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4, Node: "b"})

	if errs := appendWait(t, a.j, frame("g", 1, 0, `{}`), frame("g", 2, 1, `{}`)); errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	// The stream refuses the next frame (too large), after its successor was published.
	js := testJS(t, c.URL())
	st, err := js.Stream(ctx, cluster.JournalStream("t"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 64 << 10
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	huge := frame("g", 3, 2, `{"big":"`+strings.Repeat("x", 100<<10)+`"}`)
	errs := appendWait(t, a.j, huge, frame("g", 4, 3, `{"s":4}`))
	if errs[0] == nil || errors.Is(errs[0], store.ErrGap) {
		t.Fatalf("oversized frame: %v, want the stream's refusal", errs[0])
	}
	if !errors.Is(errs[1], store.ErrGap) {
		t.Fatalf("frame after the refused one: %v, want ErrGap", errs[1])
	}
	if errs := appendWait(t, a.j, frame("g", 5, 4, `{}`)); !errors.Is(errs[0], store.ErrGap) {
		t.Fatalf("frame chained past the hole: %v, want ErrGap", errs[0])
	}
	if a.j.LastSeq("g") != 2 {
		t.Fatalf("LastSeq after the failure = %d, want 2", a.j.LastSeq("g"))
	}
	// Seq 4 is in the journal, but another node must not read it as the device's lastSeq.
	if b.j.Known("g") {
		t.Fatal("b knows g before loading it")
	}
	if got, err := b.j.LoadLastSeq(ctx, "g"); err != nil || got != 2 {
		t.Fatalf("b.LoadLastSeq(g) = %d, %v, want 2", got, err)
	}
	if !b.j.Known("g") || b.j.LastSeq("g") != 2 {
		t.Fatalf("after the load b knows g: %v, LastSeq %d", b.j.Known("g"), b.j.LastSeq("g"))
	}
	// The device resends 3 (smaller now) and 4 from its lastSeq.
	errs = appendWait(t, a.j, frame("g", 3, 2, `{"s":3}`), frame("g", 4, 3, `{"s":4}`))
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("resend: %v", errs)
	}
	if a.j.LastSeq("g") != 4 {
		t.Fatalf("LastSeq after the resend = %d, want 4", a.j.LastSeq("g"))
	}
	// Seq 4 was never published before 3 was stored: one publish at a time, and 4 follows 3.
	var seqs []string
	for _, m := range journalMsgs(t, ctx, c.URL()) {
		f, err := cluster.DecodeFrame(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if f.Device == "g" {
			s := fmt.Sprint(f.Seq)
			if len(f.Records) == 0 {
				s = "marker" + s
			}
			seqs = append(seqs, s)
		}
	}
	t.Logf("g's frames in the journal: %v", seqs)
	if got := fmt.Sprint(seqs); got != "[1 2 3 4]" {
		t.Fatalf("g's frames in the journal: %v, want [1 2 3 4]", got)
	}
	checkChain(t, deviceMsgs(t, ctx, c.URL(), "g"), true)

	// Close waits for every frame appended before it to be answered; later ones are refused.
	var closed sync.WaitGroup
	var mu sync.Mutex
	calls := map[uint64]int{}
	for seq := uint64(1); seq <= 100; seq++ {
		b.j.Append(frame("c", seq, seq-1, `{}`), func(err error) {
			mu.Lock()
			calls[seq]++
			mu.Unlock()
		})
	}
	b.close()
	mu.Lock()
	if len(calls) != 100 {
		t.Errorf("%d of 100 frames answered when Close returned", len(calls))
	}
	for seq, n := range calls {
		if n != 1 {
			t.Errorf("seq %d answered %d times", seq, n)
		}
	}
	mu.Unlock()
	closed.Add(1)
	var late error
	b.j.Append(frame("c", 101, 100, `{}`), func(err error) { late = err; closed.Done() })
	closed.Wait()
	if !errors.Is(late, store.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", late)
	}
}

// TestJournalLoadLastSeq: another node (its own connection) loads a device's lastSeq from the
// journal, and, once the device's subject was purged, from the devices bucket, which the first
// node writes lazily and when it forgets the device.
func TestJournalLoadLastSeq(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := openJournal(t, ctx, c.NodeURL(0), cluster.JournalOptions{Partitions: 4, Node: "a"})
	b := openJournal(t, ctx, c.NodeURL(1), cluster.JournalOptions{Partitions: 4, Node: "b"})

	var fs []*store.Frame
	for seq := uint64(1); seq <= 7; seq++ {
		fs = append(fs, frame("x y", seq, seq-1, `{}`), frame("plain", seq, seq-1, `{}`))
	}
	for _, err := range appendWait(t, a.j, fs...) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err := b.j.LoadLastSeq(ctx, "x y"); err != nil || got != a.j.LastSeq("x y") || got != 7 {
		t.Fatalf("LoadLastSeq(x y) = %d, %v, want a's %d", got, err, a.j.LastSeq("x y"))
	}
	// b did not see which seqs below 7 a stored: within the UDP window it counts only 7 stored
	// (a resent datagram is published again and JetStream's duplicate window answers it); a,
	// which stored them in order, counts them all.
	for seq, want := range map[uint64][2]bool{7: {true, true}, 6: {false, true}, 8: {false, false}} {
		sb, _ := b.j.WindowSeq("x y", seq)
		sa, _ := a.j.WindowSeq("x y", seq)
		if sb != want[0] || sa != want[1] {
			t.Errorf("WindowSeq(x y, %d): b %v, a %v, want %v", seq, sb, sa, want)
		}
	}
	if got, err := b.j.LoadLastSeq(ctx, "nobody"); err != nil || got != 0 {
		t.Fatalf("LoadLastSeq(nobody) = %d, %v, want 0", got, err)
	}
	// The bucket: written within a second or so of the acknowledgements.
	kv := bucket(t, ctx, c.URL(), cluster.BucketDevices)
	eventually(t, "the devices bucket has x y", func() bool {
		e, err := kv.Get(ctx, cluster.DeviceKey("x y"))
		return err == nil && strings.Contains(string(e.Value()), `"last_seq":7`)
	})
	// A device forgotten by a: written at once (not waiting for its pass).
	if !a.j.Forget("plain") {
		t.Fatal("Forget(plain) with nothing on its way refused")
	}
	eventually(t, "the devices bucket has plain", func() bool {
		e, err := kv.Get(ctx, cluster.DeviceKey("plain"))
		return err == nil && strings.Contains(string(e.Value()), `"last_seq":7`)
	})
	// Purge the devices' subjects: the bucket alone knows.
	js := testJS(t, c.URL())
	st, err := js.Stream(ctx, cluster.JournalStream("t"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"x y", "plain"} {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(cluster.DeviceSubject("t", d, 4))); err != nil {
			t.Fatal(err)
		}
	}
	d := openJournal(t, ctx, c.NodeURL(2), cluster.JournalOptions{Partitions: 4, Node: "d"})
	for _, dev := range []string{"x y", "plain"} {
		if got, err := d.j.LoadLastSeq(ctx, dev); err != nil || got != 7 {
			t.Fatalf("LoadLastSeq(%s) after the purge = %d, %v, want 7", dev, got, err)
		}
	}
	// b continues the device where a left it; a lower value a writes late never wins.
	if errs := appendWait(t, b.j, frame("x y", 8, 7, `{}`)); errs[0] != nil {
		t.Fatal(errs[0])
	}
	b.close() // writes 8
	a.close() // writes 7 again at most: refused as lower
	if e, err := kv.Get(ctx, cluster.DeviceKey("x y")); err != nil || !strings.Contains(string(e.Value()), `"last_seq":8`) {
		t.Fatalf("bucket after both closed: %v", err)
	}
	// A partition count other than the stream's is refused.
	conn, err := cluster.Connect(ctx, cluster.Options{URL: c.URL(), Replicas: 3, Prefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.OpenJournal(ctx, cluster.JournalOptions{Partitions: 8}); err == nil || !strings.Contains(err.Error(), "has 4 partitions, configured 8") {
		t.Fatalf("OpenJournal with 8 partitions over a journal of 4: %v", err)
	}
}

func bucket(t testing.TB, ctx context.Context, url, what string) jetstream.KeyValue {
	t.Helper()
	kv, err := testJS(t, url).KeyValue(ctx, cluster.Bucket("t", what))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestJournalRouteIDs: two nodes asking at once for the same new route names get one ID per
// name, and no two names share one; a third node, and a node asking again, get the same.
func TestJournalRouteIDs(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := []*journalNode{
		openJournal(t, ctx, c.NodeURL(0), cluster.JournalOptions{Partitions: 4}),
		openJournal(t, ctx, c.NodeURL(1), cluster.JournalOptions{Partitions: 4}),
	}
	names := []string{"r1", "r2", "r3", "r.4", "odd..name", "r6"}
	got := make([]map[string]uint16, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		got[i] = map[string]uint16{}
		wg.Go(func() {
			for k := range names {
				name := names[(k+3*i)%len(names)] // the two nodes start at different names
				id, err := n.j.RouteID(name)
				if err != nil {
					t.Error(err)
					return
				}
				got[i][name] = id
			}
		})
	}
	wg.Wait()
	third := openJournal(t, ctx, c.NodeURL(2), cluster.JournalOptions{Partitions: 4})
	seen := map[uint16]string{}
	for _, name := range names {
		id, err := third.j.RouteID(name)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := nodes[0].j.RouteID(name)
		if id == 0 || got[0][name] != id || got[1][name] != id || again != id {
			t.Errorf("route %q: IDs %d, %d, %d, %d", name, got[0][name], got[1][name], id, again)
		}
		if other, ok := seen[id]; ok {
			t.Errorf("routes %q and %q share ID %d", other, name, id)
		}
		seen[id] = name
	}
}

// TestJournalUnavailable: with every NATS node down, an append is refused with
// store.ErrUnavailable (not left hanging), LoadLastSeq fails the same way, the journal says it
// is not healthy, and Close returns; a journal opened once NATS is back stores again.
func TestJournalUnavailable(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4})
	if errs := appendWait(t, n.j, frame("u", 1, 0, `{}`)); errs[0] != nil {
		t.Fatal(errs[0])
	}
	// Two nodes of three down: connected, but JetStream has no quorum and does not answer.
	// Then the last one too: not even connected.
	for _, stop := range [][]int{{1, 2}, {0}} {
		for _, i := range stop {
			c.Stop(i)
		}
		errs := appendWait(t, n.j, frame("u", 2, 1, `{}`), frame("u", 3, 2, `{}`), frame("v", 1, 0, `{}`))
		for i, err := range errs {
			if !errors.Is(err, store.ErrUnavailable) && !(i == 1 && errors.Is(err, store.ErrGap)) {
				t.Errorf("nodes %v stopped: append %d: %v, want ErrUnavailable", stop, i, err)
			}
		}
		if n.j.LastSeq("u") != 1 {
			t.Errorf("nodes %v stopped: LastSeq(u) = %d, want 1", stop, n.j.LastSeq("u"))
		}
		// The stream's leader answers the load: without a quorum there may be none (never an
		// answer above what was stored); no node left, the load fails.
		got, err := n.j.LoadLastSeq(ctx, "u")
		if len(stop) == 1 && !errors.Is(err, store.ErrUnavailable) || err == nil && got > 1 {
			t.Errorf("nodes %v stopped: LoadLastSeq(u) = %d, %v", stop, got, err)
		}
		if n.j.Healthy() {
			t.Errorf("nodes %v stopped: healthy", stop)
		}
	}
	n.close()
	var wg sync.WaitGroup
	for i := range 2 { // a quorum again (each Restart waits for it)
		wg.Go(func() { c.Restart(i) })
	}
	wg.Wait()
	m := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4})
	// Seq 2's publish may have landed once a quorum was back (its answer was lost, not
	// refused); 3 never was published, since 2 was not acknowledged.
	got, err := m.j.LoadLastSeq(ctx, "u")
	if err != nil || got != 1 && got != 2 {
		t.Fatalf("LoadLastSeq(u) after NATS came back = %d, %v, want 1 or 2", got, err)
	}
	for i, err := range appendWait(t, m.j, frame("u", 2, 1, `{}`), frame("u", 3, 2, `{}`)) {
		if err != nil {
			t.Fatalf("append %d after NATS came back: %v", i, err)
		}
	}
	msgs := deviceMsgs(t, ctx, c.URL(), "u")
	checkChain(t, msgs, true)
	if last := msgs[len(msgs)-1].f.Seq; last != 3 {
		t.Fatalf("u's last seq in the journal %d, want 3", last)
	}
}

// devMsg is one message on a device's journal subject.
type devMsg struct {
	seq      uint64 // the stream's
	expected string // its Nats-Expected-Last-Subject-Sequence
	f        *store.Frame
}

// deviceMsgs reads the messages of device (a journal of 4 partitions), in stream order.
func deviceMsgs(t testing.TB, ctx context.Context, url, device string) []devMsg {
	t.Helper()
	var out []devMsg
	for _, m := range journalMsgs(t, ctx, url) {
		if m.Subject != cluster.DeviceSubject("t", device, 4) {
			continue
		}
		f, err := cluster.DecodeFrame(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, devMsg{seq: m.Sequence, expected: m.Header.Get(jetstream.ExpectedLastSubjSeqHeader), f: f})
	}
	return out
}

// checkChain checks a device's messages: each was published expecting the one before it on the
// subject (none: 0), and the DATA seqs increase strictly — by one at a time if consecutive.
func checkChain(t testing.TB, msgs []devMsg, consecutive bool) {
	t.Helper()
	var prevSeq, prevData uint64
	for i, m := range msgs {
		if want := fmt.Sprint(prevSeq); m.expected != want {
			t.Errorf("message %d (stream seq %d): expected last subject sequence %q, want %s", i, m.seq, m.expected, want)
		}
		prevSeq = m.seq
		if m.f.Result || m.f.Window {
			continue
		}
		switch {
		case prevData != 0 && m.f.Seq <= prevData:
			t.Errorf("message %d (stream seq %d): seq %d after %d", i, m.seq, m.f.Seq, prevData)
		case consecutive && prevData != 0 && m.f.Seq != prevData+1:
			t.Errorf("message %d (stream seq %d): seq %d after %d: a hole", i, m.seq, m.f.Seq, prevData)
		}
		prevData = m.f.Seq
	}
}

// writer appends one device's frames through a journal the way a device actor does: up to window
// frames on their way, each chained to the one before; after a refusal it starts again from the
// highest seq acknowledged (loading it first if the journal's knowledge is not authoritative,
// as after ErrGap for frames another node stored), once per failure. It stops once seq upTo is
// acknowledged, and reports every seq acknowledged.
type writer struct {
	j       *cluster.Journal
	device  string
	window  int
	tag     string
	failed  atomic.Int64 // refusals seen
	mu      sync.Mutex
	acked   map[uint64]bool
	waitErr func(err error) // called with each refusal, for the test to wait on
}

func (w *writer) run(t testing.TB, ctx context.Context, upTo uint64) {
	type result struct {
		seq, gen uint64
		err      error
	}
	ch := make(chan result, w.window)
	var stored, appended, gen uint64
	inflight := 0
	reload := func() {
		for ctx.Err() == nil {
			last, err := w.j.LoadLastSeq(ctx, w.device)
			if err == nil {
				stored = max(stored, last)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	reload()
	appended = stored
	for stored < upTo && ctx.Err() == nil {
		for inflight < w.window && appended < upTo {
			seq, g := appended+1, gen
			w.j.Append(frame(w.device, seq, appended, fmt.Sprintf(`{"w":%q,"s":%d}`, w.tag, seq)), func(err error) {
				ch <- result{seq, g, err}
			})
			appended = seq
			inflight++
		}
		r := <-ch
		inflight--
		if r.err == nil {
			stored = max(stored, r.seq)
			w.mu.Lock()
			w.acked[r.seq] = true
			w.mu.Unlock()
			continue
		}
		if r.gen != gen {
			continue // the tail of a failure already taken
		}
		w.failed.Add(1)
		if w.waitErr != nil {
			w.waitErr(r.err)
		}
		if !errors.Is(r.err, store.ErrGap) && !errors.Is(r.err, store.ErrUnavailable) {
			t.Errorf("%s seq %d: %v", w.tag, r.seq, r.err)
		}
		gen++
		for inflight > 0 { // the refused frame's successors are refused too
			if r := <-ch; r.err == nil {
				stored = max(stored, r.seq)
				w.mu.Lock()
				w.acked[r.seq] = true
				w.mu.Unlock()
			}
			inflight--
		}
		if errors.Is(r.err, store.ErrUnavailable) {
			time.Sleep(100 * time.Millisecond)
		}
		if !w.j.Known(w.device) || errors.Is(r.err, store.ErrGap) {
			reload()
		}
		stored = max(stored, w.j.LastSeq(w.device))
		appended = stored
	}
	for inflight > 0 {
		<-ch
		inflight--
	}
}

// checkAcked checks that every seq a writer saw acknowledged is on the device's subject.
func checkAcked(t testing.TB, msgs []devMsg, ws ...*writer) {
	t.Helper()
	on := map[uint64]bool{}
	for _, m := range msgs {
		if !m.f.Result {
			on[m.f.Seq] = true
		}
	}
	for _, w := range ws {
		for seq := range w.acked {
			if !on[seq] {
				t.Errorf("%s: seq %d acknowledged, not in the journal", w.tag, seq)
			}
		}
	}
}

// TestJournalTwoNodes: two nodes append frames of one device at once, racing — each from what it
// knows of the device, taking turns being overtaken by the other. The device's messages are on
// its subject in strictly increasing seq order without holes, each published expecting the one
// before, every frame either node saw acknowledged is there, and a third node loads the last.
func TestJournalTwoNodes(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := openJournal(t, ctx, c.NodeURL(0), cluster.JournalOptions{Partitions: 4, Node: "a"})
	b := openJournal(t, ctx, c.NodeURL(1), cluster.JournalOptions{Partitions: 4, Node: "b"})
	const upTo = 300
	ws := []*writer{
		{j: a.j, device: "race", window: 8, tag: "a", acked: map[uint64]bool{}},
		{j: b.j, device: "race", window: 8, tag: "b", acked: map[uint64]bool{}},
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.run(t, ctx, upTo) })
	}
	waitGroup(t, &wg, "both writers reach the last seq")
	if ctx.Err() != nil {
		t.Fatal("the writers did not finish in time")
	}
	t.Logf("refusals: a %d, b %d; acknowledged: a %d, b %d", ws[0].failed.Load(), ws[1].failed.Load(), len(ws[0].acked), len(ws[1].acked))
	if ws[0].failed.Load()+ws[1].failed.Load() == 0 {
		t.Log("the nodes never overtook each other this time")
	}
	msgs := deviceMsgs(t, ctx, c.URL(), "race")
	checkChain(t, msgs, true)
	checkAcked(t, msgs, ws...)
	if first, last := msgs[0].f.Seq, msgs[len(msgs)-1].f.Seq; first != 1 || last != upTo {
		t.Errorf("the journal holds seqs %d to %d, want 1 to %d", first, last, upTo)
	}
	third := openJournal(t, ctx, c.NodeURL(2), cluster.JournalOptions{Partitions: 4, Node: "c"})
	if got, err := third.j.LoadLastSeq(ctx, "race"); err != nil || got != upTo {
		t.Errorf("third node's LoadLastSeq(race) = %d, %v, want %d", got, err, upTo)
	}
}

// TestJournalQuorumLoss: a device streams with a full window when two of the three NATS nodes
// stop: the frame being published fails, and so do those queued behind it; once they are back
// the device resends and goes on. The journal then holds the device's seqs strictly increasing
// without holes, every acknowledged one among them, and another node loads the highest.
func TestJournalQuorumLoss(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4, Node: "a"})
	failed := make(chan struct{})
	var once sync.Once
	w := &writer{j: a.j, device: "streamer", window: 32, tag: "a", acked: map[uint64]bool{},
		waitErr: func(error) { once.Do(func() { close(failed) }) }}
	const upTo = 400
	var wg sync.WaitGroup
	wg.Go(func() { w.run(t, ctx, upTo) })
	eventually(t, "frames acknowledged", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.acked) >= 50
	})
	c.Stop(1)
	c.Stop(2)
	select {
	case <-failed:
	case <-ctx.Done():
		t.Fatal("no refusal while two NATS nodes of three are down")
	}
	var rg sync.WaitGroup
	for _, i := range []int{1, 2} {
		rg.Go(func() { c.Restart(i) })
	}
	rg.Wait()
	waitGroup(t, &wg, "the writer reaches the last seq")
	if ctx.Err() != nil {
		t.Fatal("the writer did not finish in time")
	}
	t.Logf("refusals %d, acknowledged %d", w.failed.Load(), len(w.acked))
	msgs := deviceMsgs(t, ctx, c.URL(), "streamer")
	checkChain(t, msgs, true)
	checkAcked(t, msgs, w)
	if first, last := msgs[0].f.Seq, msgs[len(msgs)-1].f.Seq; first != 1 || last != upTo {
		t.Errorf("the journal holds seqs %d to %d, want 1 to %d", first, last, upTo)
	}
	b := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4, Node: "b"})
	if got, err := b.j.LoadLastSeq(ctx, "streamer"); err != nil || got != upTo {
		t.Errorf("another node's LoadLastSeq(streamer) = %d, %v, want %d", got, err, upTo)
	}
}

// A device whose journal messages were purged after delivery (a device that reports less
// often than the duplicate window) goes on: the next frame, published with the expected last
// sequence of a message that is gone, is refused by JetStream, the node asks the leader (the
// subject is empty now) and publishes it again; another node loads the device's lastSeq from
// the devices bucket.
func TestJournalAfterPurge(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4})
	for i, err := range appendWait(t, a.j, frame("p", 1, 0, `{}`), frame("p", 2, 1, `{}`)) {
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
	}
	// The bucket holds lastSeq 2 before the purge (the flusher writes it within a second or so).
	b := openJournal(t, ctx, c.URL(), cluster.JournalOptions{Partitions: 4})
	purge := func() {
		t.Helper()
		js := testJS(t, c.URL())
		st, err := js.Stream(ctx, cluster.JournalStream("t"))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(cluster.DeviceSubject("t", "p", 4))); err != nil {
			t.Fatal(err)
		}
	}
	checkfor.Check(t, 30*time.Second, 50*time.Millisecond, func() error {
		purge()
		if got, err := b.j.LoadLastSeq(ctx, "p"); err != nil || got != 2 {
			return fmt.Errorf("LoadLastSeq(p) on b with the subject purged = %d, %v; want 2 (from the bucket)", got, err)
		}
		return nil
	})
	if n := len(deviceMsgs(t, ctx, c.URL(), "p")); n != 0 {
		t.Fatalf("%d messages of p left after the purge", n)
	}
	// a still expects the purged message's sequence.
	if errs := appendWait(t, a.j, frame("p", 3, 2, `{}`)); errs[0] != nil {
		t.Fatalf("append after the purge: %v", errs[0])
	}
	msgs := deviceMsgs(t, ctx, c.URL(), "p")
	if len(msgs) != 1 || msgs[0].f.Seq != 3 {
		t.Fatalf("p's messages after the purge and one append: %+v, want seq 3 alone", msgs)
	}
}
