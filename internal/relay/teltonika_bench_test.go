package relay_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// BenchmarkTeltonikaTCP pushes b.N AVL records from 200 Teltonika trackers over TCP (packets
// of 10 Codec 8 records with 2 IO elements, each tracker waiting for its packet's answer, as
// trackers do) through the relay to an HTTP endpoint, in one process: answered and delivered
// records/s.
func BenchmarkTeltonikaTCP(b *testing.B) {
	var delivered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		delivered.Add(int64(bytes.Count(body, []byte(`"ts":`))))
	}))
	b.Cleanup(srv.Close)
	cfg := relaytest.Config(b, "")
	cfg.Devices.Teltonika.TCP = "127.0.0.1:0"
	rt := config.DefaultRoute()
	rt.Name, rt.URL = "bench", srv.URL+"/ingest"
	cfg.Routes = append(cfg.Routes, rt)
	r := startRelay(b, cfg)
	const trackers, perPacket = 200, 10
	conns := make([]net.Conn, trackers)
	for i := range conns {
		c, err := net.Dial("tcp", r.TeltonikaTCPAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		if _, err := c.Write(teltonika.AppendIMEI(nil, fmt.Sprintf("35630704%07d", i))); err != nil {
			b.Fatal(err)
		}
		var ok [1]byte
		if _, err := io.ReadFull(c, ok[:]); err != nil || ok[0] != 1 {
			b.Fatalf("handshake: %v %d", err, ok[0])
		}
		conns[i] = c
	}
	packets := int64((b.N + perPacket - 1) / perPacket)
	sent := packets * perPacket // records: b.N rounded up to whole packets
	var next atomic.Int64       // packets taken
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour)
			var ans [4]byte
			for p := 0; next.Add(1) <= packets; p++ {
				pkt := teltonika.AppendTCP(nil, teltonika.Codec8, telRecords(base.Add(time.Duration(p)*perPacket*time.Second), perPacket))
				if _, err := c.Write(pkt); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, ans[:]); err != nil || binary.BigEndian.Uint32(ans[:]) != perPacket {
					b.Errorf("answer %v %d", err, binary.BigEndian.Uint32(ans[:]))
					return
				}
			}
		}()
	}
	wg.Wait()
	answered := time.Since(start)
	checkFor(b, 5*time.Minute, time.Millisecond, func() error {
		if n := delivered.Load(); n < sent {
			return fmt.Errorf("endpoint has %d of %d", n, sent)
		}
		return nil
	})
	all := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(sent)/answered.Seconds(), "answered/s")
	b.ReportMetric(float64(sent)/all.Seconds(), "delivered/s")
}
