package loadgen

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkLedger is the accounting cost per message and the memory the ledger holds per
// message: 10,000 devices sending frames of one record (the worst case: nothing is amortised over
// several records of a frame), each batch holding 50 devices' next 10 frames.
func BenchmarkLedger(b *testing.B) {
	const devices, perBatch = 10000, 500
	names := make([][]byte, devices)
	for i := range names {
		names[i] = fmt.Appendf(nil, "SN%06d", i)
	}
	batch := make([]EnvelopeRef, perBatch)
	now := time.Now().UnixMicro()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := newLedger(time.Now())
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range batch {
			m := n + i
			// runs of 10 consecutive seqs per device, devices in turn
			batch[i] = EnvelopeRef{Serial: names[m/10%devices], Seq: uint64(m/(10*devices)*10 + m%10 + 1),
				HasSentAt: true, SentAt: now - 1000}
		}
		for i := range batch {
			l.add(&batch[i], now)
		}
		l.arrived(now, len(batch))
		n += perBatch
	}
	b.StopTimer()
	if l.dups != 0 || l.reordered != 0 || l.unique != int64(n) {
		b.Fatalf("ledger: %d unique, %d dups, %d reordered of %d", l.unique, l.dups, l.reordered, n)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/msg")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heapB/msg")
	runtime.KeepAlive(l)
}
