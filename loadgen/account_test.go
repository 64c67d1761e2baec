package loadgen_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/loadgen"
)

// fleet is what a set of devices sent: frames of several records, in the order the relay would
// deliver them (every device's messages ascending), cut into batches that mix devices.
type fleet struct {
	first   map[string]uint64 // first seq per device
	last    map[string]uint64 // last seq sent per device
	records func(dev string, seq uint64) int
	stream  []loadgen.MsgKey // every message in delivery order
}

func newFleet() *fleet {
	f := &fleet{
		first: map[string]uint64{"D0": 1, "D1": 1, "D2": 1, "BIG": 1, "LATE": 100},
		last:  map[string]uint64{"D0": 20, "D1": 20, "D2": 20, "BIG": 20, "LATE": 110},
		records: func(dev string, seq uint64) int {
			switch {
			case dev == "BIG" && seq%4 == 0:
				return 130 // indices beyond 64 and beyond 128
			case dev == "BIG" && seq%4 == 1:
				return 70
			case dev == "D2":
				return 1 + int(seq%3)
			}
			return 1
		},
	}
	devs := []string{"BIG", "D0", "D1", "D2", "LATE"}
	for round := uint64(0); ; round++ {
		more := false
		for _, dev := range devs {
			seq := f.first[dev] + round
			if seq > f.last[dev] {
				continue
			}
			more = true
			for i := range f.records(dev, seq) {
				f.stream = append(f.stream, loadgen.MsgKey{Device: dev, Seq: seq, Index: i})
			}
		}
		if !more {
			return f
		}
	}
}

// batches cuts the stream into batches of n.
func (f *fleet) batches(n int) [][]loadgen.MsgKey {
	var out [][]loadgen.MsgKey
	for s := f.stream; len(s) > 0; {
		k := min(n, len(s))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

func body(keys []loadgen.MsgKey) []byte {
	msgs := make([]msg, len(keys))
	for i, k := range keys {
		msgs[i] = msg{dev: k.Device, seq: k.Seq, index: k.Index}
	}
	return envelopes(msgs...)
}

// expected computes, independently of the sink, the report of accounting the stream under chaos
// against acked.
// It also returns how many messages Chaos dropped and duplicated, and how many of the dropped ones
// were acknowledged.
func (f *fleet) expected(c loadgen.Chaos, batchSize int, e loadgen.Expect) (want loadgen.AccountReport, dropped, duped, droppedAcked int) {
	arrived := map[loadgen.MsgKey]bool{}
	var droppedKeys []loadgen.MsgKey
	ordinal := 0
	for _, b := range f.batches(batchSize) {
		distinct := map[string]int{} // per device, distinct survivors in this batch
		for _, k := range b {
			ordinal++
			if c.DropEvery > 0 && ordinal%c.DropEvery == 0 {
				dropped++
				droppedKeys = append(droppedKeys, k)
				continue
			}
			if c.DupEvery > 0 && ordinal%c.DupEvery == 0 {
				duped++
			}
			arrived[k] = true
			distinct[k.Device]++
		}
		if c.Reverse { // every survivor but the latest of each device comes after a later one
			for _, n := range distinct {
				want.Reordered += int64(n - 1)
			}
		}
	}
	want.Dups = int64(duped)
	want.DupMessages = int64(duped) // every message is in the stream once
	acked := map[loadgen.MsgKey]bool{}
	var lost []loadgen.MsgKey
	lostDevs := map[string]bool{}
	for dev, last := range e.Acked {
		first := uint64(1)
		if s, ok := e.First[dev]; ok {
			first = s
		}
		for seq := first; seq <= last; seq++ {
			for i := range e.Records(dev, seq) {
				k := loadgen.MsgKey{Device: dev, Seq: seq, Index: i}
				acked[k] = true
				want.Expected++
				if arrived[k] {
					want.Received++
				} else {
					lost = append(lost, k)
					lostDevs[dev] = true
				}
			}
		}
	}
	for k := range arrived {
		if !acked[k] {
			want.Extra++
		}
	}
	want.Lost = int64(len(lost))
	want.LostDevices = len(lostDevs)
	slices.SortFunc(lost, func(a, b loadgen.MsgKey) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Index, b.Index))
	})
	want.LostSample = lost[:min(len(lost), 10)]
	for _, k := range droppedKeys {
		if acked[k] {
			droppedAcked++
		}
	}
	return want, dropped, duped, droppedAcked
}

// A sink that drops, duplicates and reorders on purpose, fed real HTTP batches, is caught exactly:
// Account reports precisely what Chaos did, and the sink's own counters agree.
func TestAccountCatchesChaos(t *testing.T) {
	f := newFleet()
	const batchSize = 37
	expect := loadgen.Expect{
		// D1 was told about 17 of its 20 frames (the ACK of the last ones was lost): 3 are extra.
		// GHOST was acknowledged 2 frames that never arrived.
		Acked:   map[string]uint64{"D0": 20, "D1": 17, "D2": 20, "BIG": 20, "LATE": 110, "GHOST": 2},
		First:   map[string]uint64{"LATE": 100},
		Records: f.records,
	}
	for _, tc := range []struct {
		name  string
		chaos loadgen.Chaos
	}{
		{"faithful", loadgen.Chaos{}},
		{"drop", loadgen.Chaos{DropEvery: 7}},
		{"duplicate", loadgen.Chaos{DupEvery: 5}},
		{"reverse", loadgen.Chaos{Reverse: true}},
		{"all", loadgen.Chaos{DropEvery: 7, DupEvery: 5, Reverse: true}},
		{"drop-every-one", loadgen.Chaos{DropEvery: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newSink(t, loadgen.SinkOptions{Chaos: tc.chaos})
			for _, b := range f.batches(batchSize) {
				if a := c.post("/ingest", body(b)); a.status != 200 {
					t.Fatalf("POST = %d %s", a.status, a.body)
				}
			}
			want, dropped, duped, droppedAcked := f.expected(tc.chaos, batchSize, expect)
			got := c.sink.Account(expect)
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("Account =\n%+v\nwant\n%+v", got, want)
			}
			if got.Lost != int64(droppedAcked)+2 || got.Dups != int64(duped) {
				t.Errorf("Account lost %d, dups %d; chaos dropped %d acknowledged messages (+2 never sent), duplicated %d",
					got.Lost, got.Dups, droppedAcked, duped)
			}
			st := c.sink.Stats()
			if st.ChaosDropped != dropped || st.ChaosDuplicated != duped || st.Dups != duped ||
				int64(st.Reordered) != want.Reordered || st.Messages != len(f.stream)-dropped+duped {
				t.Errorf("Stats = %+v, want %d dropped, %d duplicated, %d reordered", st, dropped, duped, want.Reordered)
			}
			if got.OK() != (got.Lost == 0) {
				t.Errorf("OK() = %v with %d lost", got.OK(), got.Lost)
			}
		})
	}
}

func TestAccountFunc(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{})
	// Two lanes: the second batch overtakes the first.
	first := body([]loadgen.MsgKey{{"A", 1, 0}, {"A", 2, 0}, {"A", 2, 1}, {"A", 3, 0}})
	second := body([]loadgen.MsgKey{{"A", 4, 0}, {"A", 4, 1}, {"A", 5, 0}})
	c.post("/", second)
	c.post("/", first)
	c.post("/", second)                                                   // a retry after a lost answer: duplicates
	records := func(_ string, seq uint64) int { return 1 + int(1-seq%2) } // even frames hold 2 records
	got := loadgen.Account(map[string]uint64{"A": 6}, records, c.sink)
	want := loadgen.AccountReport{Expected: 9, Received: 7, Lost: 2, Dups: 3, DupMessages: 3, Reordered: 4, LostDevices: 1,
		LostSample: []loadgen.MsgKey{{"A", 6, 0}, {"A", 6, 1}}}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("Account = %+v, want %+v", got, want)
	}
	if s := got.String(); s != "expected 9, received 7, lost 2 (1 devices), dups 3 (of 3 messages), reordered 4, extra 0; lost e.g. A-6-0 A-6-1" {
		t.Errorf("String() = %q", s)
	}
	// Nothing expected: everything is extra.
	if got := loadgen.Account(nil, nil, c.sink); got.Extra != 7 || got.Expected != 0 || !got.OK() {
		t.Errorf("Account(nil) = %+v", got)
	}
}

// Per device, the account says what each device lost, how often its messages arrived twice and
// what arrived unacknowledged; the sink answers the same over POST /account, and refuses a
// malformed request.
func TestAccountPerDevice(t *testing.T) {
	c := newSink(t, loadgen.SinkOptions{})
	c.post("/", body([]loadgen.MsgKey{{"A", 1, 0}, {"A", 1, 1}, {"A", 2, 0}, {"A", 2, 1}, {"B", 5, 0}, {"B", 5, 1}}))
	c.post("/", body([]loadgen.MsgKey{{"A", 2, 0}, {"A", 2, 1}, {"A", 3, 0}, {"B", 5, 0}, {"C", 1, 0}}))
	c.post("/", body([]loadgen.MsgKey{{"A", 2, 0}}))
	req := loadgen.AccountRequest{Acked: map[string]uint64{"A": 3, "B": 6, "GHOST": 1}, First: map[string]uint64{"B": 5},
		Records: 2, PerDevice: true}
	want := []loadgen.DeviceAccount{
		{Device: "A", First: 1, Acked: 3, Expected: 6, Received: 5, Lost: 1, Dups: 3, DupMessages: 2},
		{Device: "B", First: 5, Acked: 6, Expected: 4, Received: 2, Lost: 2, Dups: 1, DupMessages: 1},
		{Device: "GHOST", First: 1, Acked: 1, Expected: 2, Lost: 2},
	}
	got := c.sink.Account(req.Expect())
	if fmt.Sprint(got.Devices) != fmt.Sprint(want) {
		t.Errorf("Devices =\n%+v\nwant\n%+v", got.Devices, want)
	}
	// C is not expected: its message is extra in the totals, and its duplicates count there.
	if got.Expected != 12 || got.Lost != 5 || got.LostDevices != 3 || got.Dups != 4 || got.DupMessages != 3 || got.Extra != 1 {
		t.Errorf("totals %+v", got)
	}
	remote := loadgen.SinkClient{URL: c.sink.URL()}
	back, err := remote.Account(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", back) != fmt.Sprintf("%+v", got) {
		t.Errorf("POST /account =\n%+v\nwant\n%+v", back, got)
	}
	st, err := remote.Stats(context.Background())
	if err != nil || st.Unique != 8 {
		t.Errorf("GET /stats: unique %d, %v", st.Unique, err)
	}
	for _, bad := range []string{`{"acked":{"A":1},"recordz":2}`, `{"records":-1}`, `[`} {
		if a := c.post("/account", []byte(bad)); a.status != 400 || !strings.Contains(a.body, "account request") {
			t.Errorf("POST /account %s = %d %s", bad, a.status, a.body)
		}
	}
	if a := c.do("GET", "/account", nil); a.status != 405 {
		t.Errorf("GET /account = %d", a.status)
	}
	if st := c.sink.Stats(); st.Bad != 0 || st.Requests != 3 {
		t.Errorf("account requests were taken for batches: %+v", st)
	}
}
