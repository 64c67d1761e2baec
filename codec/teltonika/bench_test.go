package teltonika_test

import (
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// fmb920 is a record as an FMB920-class device sends it in Codec 8: a moving vehicle with its
// usual IO set (ignition, movement, GSM signal, sleep mode, GNSS status, PDOP/HDOP, voltages,
// speed, operator, odometers).
func fmb920(i int) teltonika.Record {
	return teltonika.Record{
		Time: time.UnixMilli(1765000000000 + int64(i)*10000).UTC(), Priority: 0,
		Lon: 253032016 + int32(i)*100, Lat: 546963999 - int32(i)*50, Alt: 112, Angle: 214,
		Satellites: 12, Speed: 54, EventID: 0,
		IO: []teltonika.IO{
			{ID: 239, Size: 1, Value: 1}, {ID: 240, Size: 1, Value: 1}, {ID: 21, Size: 1, Value: 4},
			{ID: 200, Size: 1, Value: 0}, {ID: 69, Size: 1, Value: 1}, {ID: 80, Size: 1, Value: 1},
			{ID: 181, Size: 2, Value: 9}, {ID: 182, Size: 2, Value: 7}, {ID: 66, Size: 2, Value: 12870},
			{ID: 24, Size: 2, Value: 54}, {ID: 67, Size: 2, Value: 4021}, {ID: 68, Size: 2, Value: 0},
			{ID: 241, Size: 4, Value: 24602}, {ID: 199, Size: 4, Value: 1250}, {ID: 16, Size: 4, Value: 48213377},
		},
	}
}

// BenchmarkParseJSON decodes a TCP frame of 25 FMB920 records and renders each record as
// JSON; the figures are per record.
func BenchmarkParseJSON(b *testing.B) {
	const n = 25
	recs := make([]teltonika.Record, n)
	for i := range recs {
		recs[i] = fmb920(i)
	}
	frame := teltonika.AppendTCP(nil, teltonika.Codec8, recs)
	buf := make([]byte, 0, 16<<10)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, err := teltonika.ParseTCP(frame)
		if err != nil {
			b.Fatal(err)
		}
		buf = buf[:0]
		for i := range p.Records {
			buf = teltonika.AppendJSON(buf, &p.Records[i])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkParseTCP is the decode alone, per frame of 25 records.
func BenchmarkParseTCP(b *testing.B) {
	recs := make([]teltonika.Record, 25)
	for i := range recs {
		recs[i] = fmb920(i)
	}
	frame := teltonika.AppendTCP(nil, teltonika.Codec8, recs)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := teltonika.ParseTCP(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendJSON is the rendering alone, per record.
func BenchmarkAppendJSON(b *testing.B) {
	r := fmb920(0)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = teltonika.AppendJSON(buf[:0], &r)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkParserTCP is the decode with a reused Parser (as the relay's event loops decode),
// per frame of 25 records.
func BenchmarkParserTCP(b *testing.B) {
	recs := make([]teltonika.Record, 25)
	for i := range recs {
		recs[i] = fmb920(i)
	}
	frame := teltonika.AppendTCP(nil, teltonika.Codec8, recs)
	var ps teltonika.Parser
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ps.ParseTCP(frame); err != nil {
			b.Fatal(err)
		}
	}
}
