package actors_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// journal is an in-memory Journal that refuses frames on demand and, like the store, refuses a
// frame whose PrevSeq is not the device's last stored seq (store.ErrGap). Windowed frames
// (datagrams) are remembered one by one, without a window's limit.
type journal struct {
	mu     sync.Mutex
	last   map[string]uint64
	cum    map[string]uint64          // highest seq of a frame that is not windowed
	win    map[string]map[uint64]bool // windowed seqs stored
	frames []*store.Frame
	refuse int      // refuse this many of the next frames
	hold   bool     // hold appends back until release
	held   []func() // the appends held back
}

// release stops holding appends back and performs the held ones.
func (j *journal) release() {
	j.mu.Lock()
	held := j.held
	j.hold, j.held = false, nil
	j.mu.Unlock()
	for _, f := range held {
		f()
	}
}

func (j *journal) Append(f *store.Frame, done func(error)) {
	j.mu.Lock()
	if j.hold {
		j.held = append(j.held, func() { j.Append(f, done) })
		j.mu.Unlock()
		return
	}
	var err error
	switch {
	case j.refuse > 0:
		j.refuse--
		err = errors.New("disk on fire")
	case f.PrevSeq != 0 && f.PrevSeq != j.last[f.Device]:
		err = store.ErrGap
	case f.Window:
		if j.win == nil {
			j.win = map[string]map[uint64]bool{}
		}
		if j.win[f.Device] == nil {
			j.win[f.Device] = map[uint64]bool{}
		}
		j.win[f.Device][f.Seq] = true
		j.last[f.Device] = max(j.last[f.Device], f.Seq)
		j.frames = append(j.frames, f)
	default:
		j.last[f.Device] = f.Seq
		if j.cum == nil {
			j.cum = map[string]uint64{}
		}
		j.cum[f.Device] = f.Seq
		j.frames = append(j.frames, f)
	}
	j.mu.Unlock()
	done(err)
}

func (j *journal) LastSeq(device string) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last[device]
}

func (j *journal) DeliveredSeq(device string) uint64 { return j.LastSeq(device) }

// WindowSeq: a seq is stored if it was stored windowed, or is at or below a seq that was not (or
// one given as last stored at the start); everything stored is delivered.
func (j *journal) WindowSeq(device string, seq uint64) (stored, delivered bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.win[device][seq] || seq <= j.cum[device] || (j.win[device] == nil && seq <= j.last[device]) {
		return true, true
	}
	return false, false
}

func (j *journal) MarkDelivered(uint16, []store.Ref)                                 {}
func (j *journal) Pending(uint16, uint64, func(*store.Segment, []uint32) bool) error { return nil }
func (j *journal) Spilled(uint16, uint64)                                            {}

// stored returns the stored frames of device and their records.
func (j *journal) stored(device string) (seqs []uint64, records int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, f := range j.frames {
		if f.Device == device {
			seqs = append(seqs, f.Seq)
			records += len(f.Records)
		}
	}
	return seqs, records
}

// The tests here have no routes, so nothing is ever dead-lettered or replayed.
func (j *journal) DeadLetter(*store.DeadLetter, []uint64) error         { return nil }
func (j *journal) Replaying(uint16, func(*store.DeadLetter) bool) error { return nil }
func (j *journal) ReplayDone(uint16, []uint64) error                    { return nil }
func (j *journal) Replay(uint16) (int, int, error)                      { return 0, 0, nil }
func (j *journal) Backlog(uint16) int                                   { return 0 }
func (j *journal) DeadLetterCount(uint16) int                           { return 0 }
func (j *journal) ReplayRecords(uint16) (int, error)                    { return 0, nil }
func (j *journal) DiscardRoute(uint16, func(int)) (int, int, error)     { return 0, 0, nil }
func (j *journal) ReviveRoute(uint16)                                   {}
func (j *journal) Forget(string) bool                                   { return true }

// poll is checkfor.Check with the bounds of these tests: every millisecond, for 10s at most.
func poll(t testing.TB, fn func() error) {
	t.Helper()
	checkfor.Check(t, 10*time.Second, time.Millisecond, fn)
}

// doneCount counts the calls of the done funcs given with Lines: every batch of lines must be
// answered once, stored or not, or netio's in-flight budget would never be given back.
type doneCount struct{ n atomic.Int64 }

func (d *doneCount) done() { d.n.Add(1) }

func (d *doneCount) want(t *testing.T, n int64) {
	t.Helper()
	poll(t, func() error {
		if got := d.n.Load(); got != n {
			return fmt.Errorf("done called %d times, want %d", got, n)
		}
		return nil
	})
}

func lines(n int) [][]byte {
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = []byte(fmt.Sprintf(`{"serial":"A","i":%d}`, i))
	}
	return recs
}

// Each Lines call is one frame numbered by the actor; a refused frame's lines are counted as lost
// and numbering resumes after the last stored frame, so what is stored has no gap.
func TestLinesSeqsAndStoreRefusal(t *testing.T) {
	j := &journal{last: map[string]uint64{"A": 7}} // A stored up to 7 before, natively
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, Journal: j})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	var dn doneCount

	sys.Lines("A", false, netip.AddrPort{}, lines(2), dn.done)
	poll(t, func() error {
		if seqs, n := j.stored("A"); len(seqs) != 1 || seqs[0] != 8 || n != 2 {
			return fmt.Errorf("stored seqs %v with %d records, want [8] with 2", seqs, n)
		}
		return nil
	})
	j.mu.Lock()
	f := j.frames[0]
	j.mu.Unlock()
	if f.Serial != "A" || f.IMEI != "" || f.PrevSeq != 7 {
		t.Errorf("frame serial %q imei %q prev %d", f.Serial, f.IMEI, f.PrevSeq)
	}

	j.mu.Lock()
	j.refuse = 1
	j.mu.Unlock()
	sent := 2
	for _, n := range []int{3, 1, 2, 4} {
		sys.Lines("A", false, netip.AddrPort{}, lines(n), dn.done)
		sent += n
	}
	poll(t, func() error {
		_, stored := j.stored("A")
		if lost := sys.LinesLost(); int(lost)+stored != sent || lost < 3 {
			return fmt.Errorf("%d lines stored, %d lost, of %d sent", stored, lost, sent)
		}
		return nil
	})
	sys.Lines("A", false, netip.AddrPort{}, lines(1), dn.done) // storing works again, right after the last stored seq
	poll(t, func() error {
		seqs, _ := j.stored("A")
		for i, s := range seqs {
			if s != uint64(8+i) {
				return fmt.Errorf("stored seqs %v, want 8, 9, 10…", seqs)
			}
		}
		if _, n := j.stored("A"); n != sent+1-int(sys.LinesLost()) {
			return fmt.Errorf("%d records stored", n)
		}
		return nil
	})
	dn.want(t, 6) // stored and refused alike
}

// An IMEI identity fills the frame's IMEI, not its serial.
func TestLinesIMEI(t *testing.T) {
	j := &journal{last: map[string]uint64{}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, Journal: j})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	var dn doneCount
	sys.Lines("356938035643809", true, netip.AddrPort{}, lines(1), dn.done)
	poll(t, func() error {
		j.mu.Lock()
		defer j.mu.Unlock()
		if len(j.frames) != 1 {
			return fmt.Errorf("%d frames", len(j.frames))
		}
		if f := j.frames[0]; f.IMEI != "356938035643809" || f.Serial != "" || f.Seq != 1 {
			return fmt.Errorf("frame imei %q serial %q seq %d", f.IMEI, f.Serial, f.Seq)
		}
		return nil
	})
	dn.want(t, 1)
}

// conn is a netio.Conn that keeps what is written to it.
type conn struct {
	mu     sync.Mutex
	frames [][]byte
}

func (c *conn) Write(frame []byte) {
	c.mu.Lock()
	c.frames = append(c.frames, frame)
	c.mu.Unlock()
}
func (c *conn) Fail(uint16, string)    {}
func (c *conn) Close()                 {}
func (c *conn) Remote() netip.AddrPort { return netip.AddrPort{} }
func (c *conn) Datagram() bool         { return false }

func (c *conn) written() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// A HELLO that arrives while NDJSON lines of its identity are being stored is answered once they
// are, so WELCOME's lastSeq covers their seq; NDJSON lines for a connected identity are refused.
func TestLinesThenHello(t *testing.T) {
	j := &journal{last: map[string]uint64{}, hold: true}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, Journal: j})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	var dn doneCount
	sys.Lines("A", false, netip.AddrPort{}, lines(2), dn.done)
	poll(t, func() error {
		j.mu.Lock()
		defer j.mu.Unlock()
		if len(j.held) != 1 {
			return fmt.Errorf("%d appends held", len(j.held))
		}
		return nil
	})
	c := &conn{}
	if _, err := sys.Open(c, &native.Hello{Serial: "A"}); err != nil {
		t.Fatal(err)
	}
	sys.Lines("A", false, netip.AddrPort{}, lines(3), dn.done) // refused once the HELLO is in
	poll(t, func() error {
		if n := sys.LinesRefused(); n != 3 {
			return fmt.Errorf("%d lines refused", n)
		}
		return nil
	})
	if w := c.written(); len(w) != 0 {
		t.Fatalf("answered HELLO with % x while NDJSON lines were in flight", w[0])
	}
	dn.want(t, 1) // the refused lines; the first ones are still being stored
	j.release()
	dn.want(t, 2)
	poll(t, func() error {
		w := c.written()
		if len(w) == 0 {
			return errors.New("no WELCOME")
		}
		typ, body, _, err := native.Next(w[0], native.MaxFrameLimit)
		if err != nil || typ != native.TypeWelcome {
			return fmt.Errorf("first frame % x, want WELCOME", w[0])
		}
		if wel, err := native.ParseWelcome(body); err != nil || wel.LastSeq != 1 {
			return fmt.Errorf("WELCOME %+v, %v; want lastSeq 1", wel, err)
		}
		return nil
	})
}

// An NDJSON identity's address is its connection's peer, over ndjson; once a native connection
// holds the identity, that connection's address stays, whatever NDJSON lines arrive.
func TestLinesRemote(t *testing.T) {
	j := &journal{last: map[string]uint64{}}
	sys := actors.New(actors.Options{AckMode: actors.AckPersist, Journal: j})
	t.Cleanup(func() { _ = sys.Stop(context.Background()) })
	var dn doneCount
	gw := netip.MustParseAddrPort("10.0.0.7:5100")
	sys.Lines("A", false, gw, lines(1), dn.done)
	if st := sys.Device("a"); st.Remote != gw || st.Transport != actors.TransportNDJSON || st.LastSeen.IsZero() {
		t.Fatalf("Device(a) = %+v after NDJSON lines, want remote %v over ndjson", st, gw)
	}
	dn.want(t, 1)
	native1 := netip.MustParseAddrPort("10.0.0.8:40000")
	if _, err := sys.Open(&from{addr: native1}, &native.Hello{Serial: "A"}); err != nil {
		t.Fatal(err)
	}
	poll(t, func() error {
		if st := sys.Device("A"); st.Remote != native1 || st.Transport != actors.TransportTCP || !st.Connected {
			return fmt.Errorf("Device(A) = %+v after HELLO, want remote %v over tcp", st, native1)
		}
		return nil
	})
	sys.Lines("A", false, gw, lines(1), dn.done) // refused: the native connection holds A
	dn.want(t, 2)
	if st := sys.Device("A"); st.Remote != native1 || st.Transport != actors.TransportTCP {
		t.Fatalf("Device(A) = %+v after NDJSON lines, want the native connection's %v kept", st, native1)
	}
}
