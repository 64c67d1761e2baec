package teltonika_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// seed adds each vector and each of its splits (the prefix and the rest, as gnet may hand
// them over) to the corpus.
func seed(f *testing.F, vectors []string) {
	for _, s := range vectors {
		b := unhex(f, s)
		f.Add(b)
		for i := 1; i < len(b); i++ {
			f.Add(b[:i])
			f.Add(b[i:])
		}
	}
}

// checkRecords re-encodes what a parser accepted and checks that it decodes to the same
// records, and that every record renders as valid JSON.
func checkRecords(t *testing.T, p teltonika.Packet, reparse func([]teltonika.Record) (teltonika.Packet, error)) {
	t.Helper()
	for i := range p.Records {
		if js := teltonika.AppendJSON(nil, &p.Records[i]); !json.Valid(js) {
			t.Fatalf("AppendJSON(%+v) = %s: invalid JSON", p.Records[i], js)
		}
	}
	q, err := reparse(p.Records)
	if err != nil {
		t.Fatalf("re-encoded packet does not parse: %v", err)
	}
	normalise(p.Records)
	normalise(q.Records)
	if q.Codec != p.Codec || !reflect.DeepEqual(q.Records, p.Records) {
		t.Fatalf("re-encoded packet decodes to %+v, want %+v", q, p)
	}
}

func FuzzParseTCP(f *testing.F) {
	seed(f, append([]string{wikiIMEI, traccarZeroLen, traccarEditedCRC}, tcpVectors...))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := teltonika.FrameLen(b)
		if n < 0 || n > len(b) || (err != nil && n != 0 && n != 1) {
			t.Fatalf("FrameLen = %d, %v for %d bytes", n, err, len(b))
		}
		if _, n, err := teltonika.ParseIMEI(b); n != 0 && (err != nil || n != 2+teltonika.IMEILen) {
			t.Fatalf("ParseIMEI = %d, %v", n, err)
		}
		if text, err := teltonika.ParseResponse(b); err == nil {
			if got := teltonika.AppendResponse(nil, text); !bytes.Equal(got, b) {
				t.Fatalf("AppendResponse(ParseResponse(%x)) = %x", b, got)
			}
		}
		p, err := teltonika.ParseTCP(b)
		if err != nil {
			return
		}
		if n, err := teltonika.FrameLen(b); n != len(b) || err != nil {
			t.Fatalf("ParseTCP accepted %x but FrameLen = %d, %v", b, n, err)
		}
		checkRecords(t, p, func(recs []teltonika.Record) (teltonika.Packet, error) {
			return teltonika.ParseTCP(teltonika.AppendTCP(nil, p.Codec, recs))
		})
	})
}

func FuzzParseUDP(f *testing.F) {
	seed(f, udpVectors)
	for _, s := range tcpVectors[:5] {
		// The wiki's TCP data behind a UDP header.
		b := unhex(f, s)
		p, err := teltonika.ParseTCP(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(teltonika.AppendUDP(nil, teltonika.UDPHeader{PacketID: 1, AVLPacketID: 2, IMEI: "356307042441013"}, p.Codec, p.Records))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		h, p, err := teltonika.ParseUDP(d)
		if err != nil {
			return
		}
		if len(h.IMEI) != teltonika.IMEILen {
			t.Fatalf("ParseUDP accepted IMEI %q", h.IMEI)
		}
		if ack := teltonika.AppendUDPAck(nil, h, uint8(len(p.Records))); len(ack) != teltonika.UDPAckLen {
			t.Fatalf("AppendUDPAck = %x", ack)
		}
		checkRecords(t, p, func(recs []teltonika.Record) (teltonika.Packet, error) {
			gh, q, err := teltonika.ParseUDP(teltonika.AppendUDP(nil, h, p.Codec, recs))
			if err == nil && gh != h {
				t.Fatalf("re-encoded header %+v, want %+v", gh, h)
			}
			return q, err
		})
	})
}
