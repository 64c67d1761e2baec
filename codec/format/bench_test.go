package format_test

import (
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// benchRecord is a ≈200-byte SENSORO-like sensor reading (loadgen's sensor profile).
const benchRecord = `{"sentAt":1795341600123456,"battery":87,"interval":60,"temperature":21.57,"humidity":45.2,` +
	`"light":7827.5,"magnetic":{"x":-0.123,"y":0.456,"z":0.789},"lonlat":[4.895168,52.370216],"customer":"loadgen"}`

// benchGPS is a ≈200-byte BeWhere-like tracker position (loadgen's gps profile).
const benchGPS = `{"sentAt":1795341600123456,"eventType":"position","timestamp":1795341600,"latitude":45.501689,` +
	`"longitude":-73.567256,"speed":52.3,"direction":271,"altitude":35.5,"batteryLevel":87,"hdop":0.9,"numSvs":9,` +
	`"rsrp":-95,"mcc":302,"mnc":720}`

// benchTemplate is a typical custom template: identity, times, a few typed fields, one text
// substitution.
const benchTemplate = `{"id":"$$msgId","device":"$$serial","imei":"$$imei","at":"$$timestamp_seconds",` +
	`"received":"$$receivedAt","battery":"$$data.battery","temperature":"$$data.temperature",` +
	`"position":{"lon":"$$data.lonlat.0","lat":"$$data.lonlat.1"},"label":"$$serial at $$data.temperature C"}`

// BenchmarkFormat renders one message per op into a reused buffer: ns/op is ns per message.
func BenchmarkFormat(b *testing.B) {
	cases := []struct {
		name, format, record string
		opts                 format.Options
	}{
		{"envelope", format.NameEnvelope, benchRecord, format.Options{}},
		{"raw", format.NameRaw, benchRecord, format.Options{}},
		{"sensoro", format.NameSENSORO, benchRecord, format.Options{AppID: "123456", DeviceType: "node"}},
		{"bewhere", format.NameBeWhere, benchGPS, format.Options{}},
		{"bewhere-full", format.NameBeWhereFull, benchGPS, format.Options{}},
		{"measurement", format.NameMeasurement, benchRecord, format.Options{}},
		{"template", format.NameTemplate, benchRecord, format.Options{Template: benchTemplate}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f, err := format.Lookup(c.format, c.opts)
			if err != nil {
				b.Fatal(err)
			}
			m := &format.Message{
				Device: "0117C9A1B2", Serial: "0117C9A1B2", IMEI: "356307042441013", ICCID: "8944500102198304826",
				Tags: []string{"cold-chain"}, Account: "2J8mLuc84N",
				Seq: 123456, Index: 3, ReceivedAt: 1795341600123, Attempt: 0, Data: []byte(c.record),
			}
			buf := f.Append(nil, m)
			b.SetBytes(int64(len(c.record)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				buf = f.Append(buf[:0], m)
			}
			b.ReportMetric(float64(len(buf)), "out-B/msg")
		})
	}
}

// BenchmarkCompile compiles the BeWhere custom payload (done once per route configuration).
func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := format.Compile([]byte(format.BeWhereFullTemplate)); err != nil {
			b.Fatal(err)
		}
	}
}

// batch500 is 500 envelope messages of 100 devices, as a route batches them.
func batch500() []format.Message {
	msgs := make([]format.Message, 500)
	for i := range msgs {
		dev := "SN" + string(rune('A'+i%26)) + string(rune('a'+i/26%26))
		msgs[i] = format.Message{Device: dev, Serial: dev, IMEI: "356938035643809", ICCID: "8944501234567890123",
			Seq: uint64(1000 + i), Index: i % 3, ReceivedAt: 1795341600123 + int64(i), Data: []byte(benchRecord)}
	}
	return msgs
}

// BenchmarkBatch500 is a route's request body: 500 envelopes in one JSON array.
func BenchmarkBatch500(b *testing.B) {
	msgs := batch500()
	var bl format.Builder
	bl.Reset(nil)
	for i := range msgs {
		bl.Add(&msgs[i])
	}
	b.SetBytes(int64(len(bl.Bytes())))
	b.ReportAllocs()
	for b.Loop() {
		bl.Reset(nil)
		for i := range msgs {
			bl.Add(&msgs[i])
		}
		_ = bl.Bytes()
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}

func TestBatch500Allocs(t *testing.T) {
	msgs := batch500()
	var bl format.Builder
	build := func() {
		bl.Reset(nil)
		for i := range msgs {
			bl.Add(&msgs[i])
		}
		_ = bl.Bytes()
	}
	build() // grow the buffer once
	if n := testing.AllocsPerRun(20, build); n != 0 {
		t.Fatalf("a batch of 500 envelopes: %v allocs, want 0", n)
	}
}
