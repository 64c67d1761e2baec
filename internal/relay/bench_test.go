package relay_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// BenchmarkEndToEnd pushes b.N ≈200-byte records from 100 TCP devices (window 64, one record per
// frame) through the relay to the sink, in one process: acknowledged and delivered messages/s.
func BenchmarkEndToEnd(b *testing.B) {
	sink := startSink(b)
	cfg := testConfig(b, sink)
	cfg.Routes[0].URL = sink.URL() + "/ingest" // one lane: batches of up to 500
	cfg.Routes[0].Batch.Linger = 0
	r := startRelay(b, cfg)
	const devices = 100
	rec := []byte(`{"ts":1700000000123,"lat":52.370216,"lon":4.895168,"speed":42.5,"heading":271,"alt":12.1,"sats":9,"battery":87,"temp":21.5,"ignition":true,"odometer":123456.7,"event":"position","fix":"3d"}`)
	devs := make([]*loadgen.Device, devices)
	for i := range devs {
		devs[i] = connect(b, r.DeviceTCPAddr().String(), native.Hello{Serial: fmt.Sprintf("B%03d", i)}, 1)
	}
	var next atomic.Int64
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for next.Add(1) <= int64(b.N) {
				seq, err := d.Send(rec)
				if err != nil {
					b.Error(err)
					return
				}
				last = seq
			}
			if last > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := d.WaitAcked(ctx, last); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	acked := time.Since(start)
	checkFor(b, 5*time.Minute, time.Millisecond, func() error {
		if n := sink.Stats().Unique; n < b.N {
			return fmt.Errorf("sink has %d of %d", n, b.N)
		}
		return nil
	})
	delivered := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/acked.Seconds(), "acked/s")
	b.ReportMetric(float64(b.N)/delivered.Seconds(), "delivered/s")
}
