package store_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// record200 is a 200-byte JSON record.
var record200 = func() []byte {
	b := []byte(`{"ts":1700000000000,"lat":52.520008,"lon":13.404954,"speed":42,"io":{"ign":1,"din1":0,"ain1":12.6},"pad":"`)
	b = append(b, bytes.Repeat([]byte("x"), 200-len(b)-2)...)
	return append(b, `"}`...)
}()

// BenchmarkAppend measures group-commit throughput: 256 concurrent appenders
// (one device each), one 200-byte record per frame, one route.
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) { benchAppend(b, sync) })
	}
}

func benchAppend(b *testing.B, syncWrites bool) {
	s := open(b, b.TempDir(), func(o *store.Options) { o.Sync = syncWrites })
	defer mustClose(b, s)
	r, _ := s.RouteID("bench")
	routes := []uint16{r}
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		wg.Done()
	}
	var devs atomic.Int64
	b.SetParallelism(128) // 256 appenders on 2 cores
	b.ReportAllocs()
	b.SetBytes(int64(len(record200)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dev := fmt.Sprintf("bench-%d", devs.Add(1))
		var seq uint64
		for pb.Next() {
			seq++
			wg.Add(1)
			s.Append(&store.Frame{Device: dev, Serial: dev, Seq: seq, Records: [][]byte{record200}, Routes: routes}, done)
		}
	})
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d appends failed", n)
	}
	st := s.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Frames)/float64(max(st.Commits, 1)), "frames/commit")
}

// BenchmarkAppendLatency measures one frame appended alone, waiting for its
// done callback: the latency of an idle group commit.
func BenchmarkAppendLatency(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			s := open(b, b.TempDir(), func(o *store.Options) { o.Sync = sync })
			defer mustClose(b, s)
			r, _ := s.RouteID("bench")
			errs := make(chan error, 1)
			done := func(err error) { errs <- err }
			b.ReportAllocs()
			for i := range b.N {
				s.Append(&store.Frame{Device: "d", Seq: uint64(i + 1), Records: [][]byte{record200}, Routes: []uint16{r}}, done)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarkDelivered measures marking records delivered in batches of
// 100 (one route), including persisting the marks and retiring the segments.
// BenchmarkMarkDelivered is the cost of marking records delivered (in calls of 100 refs) until
// their segments retire. One op marks 100,000 records; the store is refilled, untimed, before
// each op, so the benchmark's length does not grow with b.N's prefill.
func BenchmarkMarkDelivered(b *testing.B) {
	const perOp = 100_000
	s := open(b, b.TempDir())
	defer mustClose(b, s)
	r, _ := s.RouteID("bench")
	routes := []uint16{r}
	seq := uint64(0)
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		var wg sync.WaitGroup
		seq++
		for i := range perOp {
			wg.Add(1)
			f := &store.Frame{Device: fmt.Sprintf("dev%d", i%1000), Seq: seq + uint64(i/1000), Records: [][]byte{record200}, Routes: routes}
			s.Append(f, func(err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
		seq += perOp/1000 - 1
		refs := pendingRefs(b, s, r)
		if len(refs) != perOp {
			b.Fatalf("%d pending refs, want %d", len(refs), perOp)
		}
		b.StartTimer()
		for i := 0; i < len(refs); i += 100 {
			s.MarkDelivered(r, refs[i:min(i+100, len(refs))])
		}
		checkfor.Check(b, hang, 0, func() error {
			if n := s.Stats().SegmentsLive; n != 0 {
				return fmt.Errorf("SegmentsLive = %d", n)
			}
			return nil
		})
	}
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "records/s")
}
