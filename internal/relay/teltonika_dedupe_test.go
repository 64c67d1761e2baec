package relay_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// A packet that holds records of an earlier packet, and one record twice, is answered with its
// full count; only its new records are stored, each once, and the ones left out are counted as
// duplicates.
func TestTeltonikaPartlyResent(t *testing.T) {
	sink := newTelSink(t)
	r := startRelay(t, telConfig(t, sink))
	c, ok := telDial(t, r.TeltonikaTCPAddr().String(), telIMEI)
	if ok != 1 {
		t.Fatalf("handshake answered %d, want 1", ok)
	}
	recs := telRecords(time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC), 5)
	f := func(pkt []teltonika.Record, want uint32) {
		t.Helper()
		if _, err := c.Write(teltonika.AppendTCP(nil, teltonika.Codec8, pkt)); err != nil {
			t.Fatal(err)
		}
		if n := readAck(t, c); n != want {
			t.Fatalf("answer = %d, want %d", n, want)
		}
	}
	f(recs[:2], 2)
	// recs[1] again (from the first packet), then recs[2], recs[3], recs[2] again, recs[4].
	f([]teltonika.Record{recs[1], recs[2], recs[3], recs[2], recs[4]}, 5)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got, _ := sink.got(); len(got) < 5 {
			return fmt.Errorf("%d records delivered, want 5", len(got))
		}
		return nil
	})
	got, _ := sink.got()
	seen := byTS(got)
	for _, rec := range recs {
		ts := rec.Time.Format("2006-01-02T15:04:05.000Z07:00")
		if seen[ts] != 1 {
			t.Errorf("record %s delivered %d times, want 1", ts, seen[ts])
		}
	}
	if len(got) != 5 {
		t.Errorf("%d records delivered, want 5", len(got))
	}
	if st := r.TeltonikaStats(); st.Actors.Duplicates != 2 || st.Actors.Records != 5 {
		t.Errorf("stats %+v: want 5 records stored, 2 duplicates", st.Actors)
	}
}
