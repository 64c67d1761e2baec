package loadgen_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Teltonika fleets through a real relay to a real sink, over TCP and UDP: packets of 1–50
// records answered with their counts, and every record a tracker had acknowledged delivered,
// checked by IMEI and record counter (the relay numbers packets its own way).
func TestTeltonikaThroughRelay(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := relayConfig(t, sink.URL())
	cfg.Devices.Teltonika.TCP = "127.0.0.1:0"
	cfg.Devices.Teltonika.UDP = "127.0.0.1:0"
	rl := relaytest.Start(t, cfg)
	for i, proto := range []string{loadgen.ProtocolTeltonikaTCP, loadgen.ProtocolTeltonikaUDP} {
		t.Run(proto, func(t *testing.T) {
			sink.Reset()
			rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{Protocol: proto,
				Addr: rl.TeltonikaTCPAddr().String(), UDPAddr: rl.TeltonikaUDPAddr().String(),
				Devices: 20, Records: 1, RecordsMax: 50, Rate: 10, Duration: time.Second,
				IMEIBase: 356307042000000 + uint64(i)*1000})
			if err != nil {
				t.Fatal(err)
			}
			tr := rep.Teltonika
			if tr.Packets == 0 || rep.Unacked != 0 || rep.Errors != 0 {
				t.Fatalf("teltonika %+v, unacked %d, errors %d", *tr, rep.Unacked, rep.Errors)
			}
			req := rep.AccountRequest(true)
			a, err := loadgen.WaitAccount(context.Background(), req.Expect().Total(),
				func(context.Context) (int64, error) { return int64(sink.Stats().Unique), nil },
				func(context.Context) (loadgen.AccountReport, error) { return sink.Account(req.Expect()), nil },
				loadgen.DrainOptions{Quiet: 10 * time.Second, Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if a.Lost != 0 || a.Expected != tr.RecordsAcked || a.Extra != 0 {
				t.Fatalf("%d records acknowledged; account: %s", tr.RecordsAcked, a.String())
			}
			if lat := sink.Snapshot().LatencyUs; lat.Count < a.Expected {
				t.Errorf("end-to-end latency of %d records, want one per record delivered (%d)", lat.Count, a.Expected)
			}
		})
	}
}
