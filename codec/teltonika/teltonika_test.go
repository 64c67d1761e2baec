package teltonika_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

func u(id uint16, size uint8, v uint64) teltonika.IO {
	return teltonika.IO{ID: id, Size: size, Value: v}
}

func parseTCP(t *testing.T, s string) teltonika.Packet {
	t.Helper()
	p, err := teltonika.ParseTCP(unhex(t, s))
	if err != nil {
		t.Fatalf("ParseTCP(%.40s…) = %v", s, err)
	}
	return p
}

// The wiki's examples decode to the values the wiki lists field by field.
func TestWikiVectors(t *testing.T) {
	f := func(name, frame string, want teltonika.Packet) {
		t.Helper()
		got := parseTCP(t, frame)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ParseTCP =\n%+v\nwant\n%+v", name, got, want)
		}
	}
	f("codec 8, first example", wikiCodec8a, teltonika.Packet{Codec: teltonika.Codec8, Records: []teltonika.Record{{
		Time: ms(1560161086000), Priority: 1, EventID: 1, Codec: teltonika.Codec8,
		IO: []teltonika.IO{u(21, 1, 3), u(1, 1, 1), u(66, 2, 24079), u(241, 4, 24602), u(78, 8, 0)},
	}}})
	f("codec 8, second example", wikiCodec8b, teltonika.Packet{Codec: teltonika.Codec8, Records: []teltonika.Record{{
		Time: ms(1560161136000), Priority: 1, EventID: 1, Codec: teltonika.Codec8,
		IO: []teltonika.IO{u(21, 1, 3), u(1, 1, 1), u(66, 2, 24080)},
	}}})
	f("codec 8, third example (two records)", wikiCodec8c, teltonika.Packet{Codec: teltonika.Codec8, Records: []teltonika.Record{
		{Time: ms(1560160861000), Priority: 1, EventID: 1, Codec: teltonika.Codec8, IO: []teltonika.IO{u(1, 1, 0)}},
		{Time: ms(1560160879000), Priority: 1, EventID: 1, Codec: teltonika.Codec8, IO: []teltonika.IO{u(1, 1, 1)}},
	}})
	f("codec 8 extended", wikiCodec8E, teltonika.Packet{Codec: teltonika.Codec8E, Records: []teltonika.Record{{
		Time: ms(1560166592000), Priority: 1, EventID: 1, Codec: teltonika.Codec8E,
		IO: []teltonika.IO{u(1, 1, 1), u(17, 2, 29), u(16, 4, 22949000), u(11, 8, 893700218), u(14, 8, 500686954)},
	}}})
	f("codec 16 (two records)", wikiCodec16, teltonika.Packet{Codec: teltonika.Codec16, Records: []teltonika.Record{
		{Time: ms(1562760414000), EventID: 11, Generation: 5, Codec: teltonika.Codec16,
			IO: []teltonika.IO{u(1, 1, 0), u(3, 1, 0), u(11, 2, 39), u(66, 2, 22074)}},
		{Time: ms(1562760415000), EventID: 11, Generation: 5, Codec: teltonika.Codec16,
			IO: []teltonika.IO{u(1, 1, 0), u(3, 1, 0), u(11, 2, 38), u(66, 2, 22074)}},
	}})

	imei, n, err := teltonika.ParseIMEI(unhex(t, wikiIMEI))
	if imei != "356307042441013" || n != 17 || err != nil {
		t.Errorf("ParseIMEI(wiki) = %q, %d, %v", imei, n, err)
	}

	cmd := unhex(t, wikiGetinfo)
	if got := teltonika.AppendCommand(nil, "getinfo"); !bytes.Equal(got, cmd) {
		t.Errorf("AppendCommand(getinfo) = %x, want %x", got, cmd)
	}
	if !teltonika.IsCodec12(cmd) {
		t.Errorf("IsCodec12(getinfo) = false")
	}
	if text, err := teltonika.ParseCommand(cmd); string(text) != "getinfo" || err != nil {
		t.Errorf("ParseCommand(getinfo) = %q, %v", text, err)
	}
	text, err := teltonika.ParseResponse(unhex(t, wikiResponse))
	const wantText = "INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1 SR:0 BR:0 CF:0 FG:0 FL:0 TU:0/0 UT:0 SMS:0 NOGPS:0:30 GPS:1 SAT:0 RS:3 RF:65 SF:1 MD:0"
	if text != wantText || err != nil {
		t.Errorf("ParseResponse(wiki) = %q, %v, want %q", text, err, wantText)
	}
	if teltonika.IsCodec12(unhex(t, wikiCodec8a)) {
		t.Errorf("IsCodec12(codec 8 frame) = true")
	}
}

func TestWikiUDP(t *testing.T) {
	f := func(name, datagram, ack string, wantH teltonika.UDPHeader, want teltonika.Packet) {
		t.Helper()
		d := unhex(t, datagram)
		h, p, err := teltonika.ParseUDP(d)
		if err != nil {
			t.Fatalf("%s: ParseUDP = %v", name, err)
		}
		if h != wantH || !reflect.DeepEqual(p, want) {
			t.Errorf("%s: ParseUDP = %+v %+v, want %+v %+v", name, h, p, wantH, want)
		}
		if got := teltonika.AppendUDPAck(nil, h, uint8(len(p.Records))); !bytes.Equal(got, unhex(t, ack)) {
			t.Errorf("%s: AppendUDPAck = %x, want %s", name, got, ack)
		}
		if got := teltonika.AppendUDP(nil, h, p.Codec, p.Records); !bytes.Equal(got, d) {
			t.Errorf("%s: AppendUDP = %x, want %x", name, got, d)
		}
		id, avl, n, err := teltonika.ParseUDPAck(unhex(t, ack))
		if id != h.PacketID || avl != h.AVLPacketID || int(n) != len(p.Records) || err != nil {
			t.Errorf("%s: ParseUDPAck = %x %x %d %v", name, id, avl, n, err)
		}
	}
	f("codec 8", wikiUDP8, wikiUDP8Ack,
		teltonika.UDPHeader{PacketID: 0xCAFE, AVLPacketID: 5, IMEI: "352093086403655"},
		teltonika.Packet{Codec: teltonika.Codec8, Records: []teltonika.Record{{
			Time: ms(1560407006000), Priority: 1, EventID: 1, Codec: teltonika.Codec8,
			IO: []teltonika.IO{u(21, 1, 3), u(1, 1, 1), u(66, 2, 23996)},
		}}})
	f("codec 8 extended", wikiUDP8E, wikiUDP8EAck,
		teltonika.UDPHeader{PacketID: 0xCAFE, AVLPacketID: 7, IMEI: "352093086403655"},
		teltonika.Packet{Codec: teltonika.Codec8E, Records: []teltonika.Record{{
			Time: ms(1560407121000), Priority: 1, EventID: 1, Codec: teltonika.Codec8E,
			IO: []teltonika.IO{u(1, 1, 1), u(17, 2, 157), u(16, 4, 22949000), u(11, 8, 893700218), u(14, 8, 500686954)},
		}}})
}

// Traccar's samples from real devices: position with its signs, altitude, speed, satellites
// and IO values as the bytes say.
func TestTraccarSamples(t *testing.T) {
	type pos struct {
		lat, lon   int32
		alt        int16
		angle      uint16
		sats       uint8
		speed      uint16
		event      uint16
		generation uint8
	}
	f := func(name, frame string, codec byte, n int, first pos, io map[uint16]uint64) {
		t.Helper()
		p := parseTCP(t, frame)
		if p.Codec != codec || len(p.Records) != n {
			t.Fatalf("%s: codec %#x, %d records, want %#x, %d", name, p.Codec, len(p.Records), codec, n)
		}
		r := p.Records[0]
		got := pos{r.Lat, r.Lon, r.Alt, r.Angle, r.Satellites, r.Speed, r.EventID, r.Generation}
		if got != first {
			t.Errorf("%s: first record %+v, want %+v", name, got, first)
		}
		for id, want := range io {
			found := false
			for _, e := range r.IO {
				if e.ID == id {
					found = true
					if e.Value != want {
						t.Errorf("%s: IO %d = %d, want %d", name, id, e.Value, want)
					}
				}
			}
			if !found {
				t.Errorf("%s: IO %d missing from %+v", name, id, r.IO)
			}
		}
	}
	f("negative altitude", traccarAltNeg, teltonika.Codec8, 1,
		pos{lat: 376743392, lon: 214327760, alt: -4, sats: 9}, map[uint16]uint64{1: 0, 240: 0, 66: 12835, 24: 0})
	f("southern latitude", traccarSouth, teltonika.Codec8, 6,
		pos{lat: -62765800, lon: 1067956096, alt: 66, sats: 10}, map[uint16]uint64{1: 1, 66: 26791, 70: 280, 199: 0})
	f("western longitude", traccarWest, teltonika.Codec8, 14,
		pos{lat: 409420533, lon: -86313433, alt: 13, angle: 72, sats: 8, speed: 6}, nil)
	f("codec 8E southern", traccar8ESouth, teltonika.Codec8E, 2,
		pos{lat: -339656016, lon: 188357883, event: 236}, map[uint16]uint64{69: 2, 67: 3414, 241: 0, 236: 1})
	f("codec 16 south-west", traccar16, teltonika.Codec16, 1,
		pos{lat: -334379166, lon: -706496700, alt: 571, angle: 282, sats: 6, generation: 7}, nil)
	f("codec 8E many", traccar8EMany, teltonika.Codec8E, 4,
		pos{lat: -337335583, lon: -707196233, alt: 446, angle: 61, sats: 18, speed: 0, event: 247}, map[uint16]uint64{239: 0, 240: 0, 66: 12352, 67: 3977, 113: 87, 181: 11, 182: 6})
	f("codec 16 many", traccar16Many, teltonika.Codec16, 4,
		pos{lat: 477225616, lon: 14924083, alt: 105, angle: 226, sats: 17, speed: 81, event: 253, generation: 7}, map[uint16]uint64{1: 1, 22: 3, 71: 3, 240: 1, 21: 4})

	// NX elements keep their bytes.
	p := parseTCP(t, traccar8ENX)
	r := p.Records[0]
	if len(r.IO) != 1 || r.IO[0].ID != 385 || r.IO[0].Size != 0 || len(r.IO[0].Raw) != 23 || r.IO[0].Raw[0] != 0x11 || r.IO[0].Raw[22] != 0xd0 {
		t.Errorf("NX sample: IO %+v, want id 385 with 23 bytes 11…d0", r.IO)
	}
	if r.Alt != 50 || r.Satellites != 12 || r.Lon != 102598799 || r.Lat != 553651850 {
		t.Errorf("NX sample: %+v", r)
	}

	text, err := teltonika.ParseResponse(unhex(t, traccarResponse))
	if text != "#FM2=262032761721396,26203,07.02.05\r\n" || err != nil {
		t.Errorf("ParseResponse(traccar) = %q, %v", text, err)
	}
	text, err = teltonika.ParseResponse(unhex(t, traccarResponseBinary))
	if text != "\x01\x03\x00\x01\x00\x15\xd5\xc5" || err != nil {
		t.Errorf("ParseResponse(traccar binary) = %q, %v", text, err)
	}

	// What Traccar accepts but a strict decoder refuses, and why.
	if _, err := teltonika.FrameLen(unhex(t, traccarZeroLen)); !errors.Is(err, teltonika.ErrLength) {
		t.Errorf("FrameLen(data length 0) = %v, want ErrLength", err)
	}
	if _, err := teltonika.ParseTCP(unhex(t, traccarEditedCRC)); !errors.Is(err, teltonika.ErrCRC) {
		t.Errorf("ParseTCP(edited sample) = %v, want ErrCRC", err)
	}
}

func TestCRC16(t *testing.T) {
	f := func(in []byte, want uint16) {
		t.Helper()
		if got := teltonika.CRC16(in); got != want {
			t.Errorf("CRC16(%x) = %#04x, want %#04x", in, got, want)
		}
	}
	f([]byte("123456789"), 0xBB3D) // CRC-16/ARC's check value
	f(nil, 0)
	f([]byte{0}, 0)
	f([]byte{0x01}, 0xC0C1)
	// Every valid vector's trailer is the CRC of its data.
	for _, s := range tcpVectors {
		b := unhex(t, s)
		data := b[teltonika.HeaderLen : len(b)-teltonika.CRCLen]
		f(data, uint16(b[len(b)-2])<<8|uint16(b[len(b)-1]))
	}
}

func TestParseIMEI(t *testing.T) {
	full := unhex(t, wikiIMEI)
	for i := 0; i < len(full); i++ {
		if imei, n, err := teltonika.ParseIMEI(full[:i]); imei != "" || n != 0 || err != nil {
			t.Errorf("ParseIMEI(%x) = %q, %d, %v, want need more", full[:i], imei, n, err)
		}
	}
	// Bytes after the handshake (an AVL frame coalesced with it) are not its business.
	imei, n, err := teltonika.ParseIMEI(append(full, unhex(t, wikiCodec8a)...))
	if imei != "356307042441013" || n != len(full) || err != nil {
		t.Errorf("ParseIMEI(handshake+frame) = %q, %d, %v", imei, n, err)
	}
	f := func(in []byte) {
		t.Helper()
		if _, n, err := teltonika.ParseIMEI(in); !errors.Is(err, teltonika.ErrIMEI) || n != 0 {
			t.Errorf("ParseIMEI(%x) = %d, %v, want ErrIMEI", in, n, err)
		}
	}
	f([]byte{0, 16})      // refused before the IMEI arrives
	f([]byte{0, 0})       // an AVL frame where a handshake belongs
	f([]byte{0xFF, 0xFF}) // hostile length
	f(teltonika.AppendIMEI(nil, "35630704244101x"))
	f(teltonika.AppendIMEI(nil, "35630704244101 "))
	if got := teltonika.AppendIMEI(nil, "356307042441013"); !bytes.Equal(got, full) {
		t.Errorf("AppendIMEI = %x, want %x", got, full)
	}
}

// A stream reader fed any split of a stream of frames (a handshake, pings, frames coalesced)
// finds exactly the frames that were sent.
func TestFrameLenSplits(t *testing.T) {
	var stream []byte
	var want [][]byte
	for _, s := range tcpVectors {
		stream = append(stream, teltonika.Ping)
		want = append(want, []byte{teltonika.Ping})
		b := unhex(t, s)
		stream = append(stream, b...)
		want = append(want, b)
	}
	// read consumes the stream as chunks arrive, as netio's gnet callback does.
	read := func(chunks [][]byte) [][]byte {
		var buf []byte
		var got [][]byte
		for _, c := range chunks {
			buf = append(buf, c...)
			for {
				n, err := teltonika.FrameLen(buf)
				if errors.Is(err, teltonika.ErrPing) {
					got = append(got, buf[:1])
					buf = buf[1:]
					continue
				}
				if err != nil {
					t.Fatalf("FrameLen(%x…) = %v", buf[:min(len(buf), 16)], err)
				}
				if n == 0 {
					break
				}
				got = append(got, buf[:n])
				buf = buf[n:]
			}
		}
		if len(buf) != 0 {
			t.Fatalf("%d bytes left over", len(buf))
		}
		return got
	}
	check := func(name string, got [][]byte) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames, want %d", name, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%s: frame %d = %x, want %x", name, i, got[i], want[i])
			}
		}
	}
	for i := 0; i <= len(stream); i++ {
		check("split", read([][]byte{stream[:i], stream[i:]}))
	}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	check("byte by byte", read(bytewise))

	// Each vector split at every offset: the prefix is "need more", never an error or a
	// wrong length, and the parsers refuse every proper prefix.
	for _, s := range tcpVectors {
		b := unhex(t, s)
		for i := 1; i < len(b); i++ {
			if n, err := teltonika.FrameLen(b[:i]); n != 0 || err != nil {
				t.Fatalf("FrameLen(%d of %d bytes) = %d, %v", i, len(b), n, err)
			}
			if _, err := teltonika.ParseTCP(b[:i]); err == nil {
				t.Fatalf("ParseTCP(%d of %d bytes) accepted", i, len(b))
			}
		}
	}
	for _, s := range udpVectors {
		b := unhex(t, s)
		for i := 0; i < len(b); i++ {
			if _, _, err := teltonika.ParseUDP(b[:i]); err == nil {
				t.Fatalf("ParseUDP(%d of %d bytes) accepted", i, len(b))
			}
		}
	}
}

// frame builds a TCP frame around data with a correct length and CRC.
func frame(data []byte) []byte {
	b := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	b[4], b[5], b[6], b[7] = byte(len(data)>>24), byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	b = append(b, data...)
	crc := teltonika.CRC16(data)
	return append(b, 0, 0, byte(crc>>8), byte(crc))
}

func TestMalformed(t *testing.T) {
	good := unhex(t, wikiCodec8a)
	data := good[teltonika.HeaderLen : len(good)-teltonika.CRCLen]
	with := func(i int, v byte) []byte {
		b := bytes.Clone(data)
		b[i] = v
		return b
	}

	fl := func(name string, in []byte, want error) {
		t.Helper()
		if n, err := teltonika.FrameLen(in); !errors.Is(err, want) || n != 0 {
			t.Errorf("%s: FrameLen(%x) = %d, %v, want %v", name, in, n, err, want)
		}
	}
	fl("preamble", []byte{0, 0, 1}, teltonika.ErrPreamble) // refused at its first wrong byte
	fl("preamble", []byte{0x01}, teltonika.ErrPreamble)
	fl("IMEI where a frame belongs", unhex(t, wikiIMEI), teltonika.ErrPreamble)
	fl("too large", []byte{0, 0, 0, 0, 0, 1, 0, 1}, teltonika.ErrTooLarge)
	fl("too large", []byte{0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF}, teltonika.ErrTooLarge)
	fl("too small", []byte{0, 0, 0, 0, 0, 0, 0, 2}, teltonika.ErrLength)
	if n, err := teltonika.FrameLen([]byte{0, 0, 0, 0, 0, 1, 0, 0}); n != 0 || err != nil {
		t.Errorf("FrameLen(MaxPacket, header only) = %d, %v, want need more", n, err)
	}
	if n, err := teltonika.FrameLen([]byte{teltonika.Ping, 0, 0}); n != 1 || !errors.Is(err, teltonika.ErrPing) {
		t.Errorf("FrameLen(ping) = %d, %v, want 1, ErrPing", n, err)
	}

	pt := func(name string, in []byte, want error) {
		t.Helper()
		if _, err := teltonika.ParseTCP(in); !errors.Is(err, want) {
			t.Errorf("%s: ParseTCP(%x) = %v, want %v", name, in, err, want)
		}
	}
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	pt("CRC", bad, teltonika.ErrCRC)
	bad = bytes.Clone(good)
	bad[len(bad)-4] = 1 // the CRC field's upper half must be 0
	pt("CRC upper half", bad, teltonika.ErrCRC)
	bad = bytes.Clone(good)
	bad[20] ^= 1 // a bit of the data
	pt("corrupted data", bad, teltonika.ErrCRC)
	bad = bytes.Clone(good)
	bad[3] = 1
	pt("preamble", bad, teltonika.ErrPreamble)
	pt("longer than its length", append(bytes.Clone(good), 0), teltonika.ErrLength)
	pt("shorter than its length", good[:len(good)-1], teltonika.ErrLength)
	pt("empty", nil, teltonika.ErrLength)
	pt("counts disagree", frame(with(len(data)-1, 2)), teltonika.ErrCount)
	pt("both counts say 2, one record", frame(with(len(data)-1, 2)), teltonika.ErrCount)
	twoCounts := with(1, 2)
	twoCounts[len(twoCounts)-1] = 2
	pt("both counts 2, one record", frame(twoCounts), teltonika.ErrTruncated)
	zero := with(1, 0)
	zero[len(zero)-1] = 0
	pt("counts 0, a record present", frame(zero), teltonika.ErrLength)
	pt("unknown codec", frame(with(0, 0x09)), teltonika.ErrCodec)
	pt("codec 12", unhex(t, wikiGetinfo), teltonika.ErrCodec)
	// The first record's N1 claims more elements than there are bytes.
	pt("IO count past the end", frame(with(2+24+2, 40)), teltonika.ErrTruncated)
	// 255 records announced in a frame with room for one.
	many := with(1, 255)
	many[len(many)-1] = 255
	pt("255 records announced", frame(many), teltonika.ErrTruncated)

	// An NX element whose length runs past the end of the data.
	nx := unhex(t, traccar8ENX)
	nxData := bytes.Clone(nx[teltonika.HeaderLen : len(nx)-teltonika.CRCLen])
	// record 1 starts at 2; NX length at 2+24 (fixed) +2 event +2 total +4×2 counts +2 NX count +2 id.
	at := 2 + 24 + 2 + 2 + 8 + 2 + 2
	if nxData[at] != 0 || nxData[at+1] != 23 {
		t.Fatalf("NX length not at %d: %x", at, nxData[at:at+2])
	}
	nxData[at], nxData[at+1] = 0xFF, 0xFF
	pt("NX length past the end", frame(nxData), teltonika.ErrTruncated)
	nxData[at], nxData[at+1] = 0, 22 // one byte short: the rest no longer lines up
	pt("NX length one short", frame(nxData), teltonika.ErrTruncated)

	pr := func(name string, in []byte, want error) {
		t.Helper()
		if _, err := teltonika.ParseResponse(in); !errors.Is(err, want) {
			t.Errorf("%s: ParseResponse(%x) = %v, want %v", name, in, err, want)
		}
	}
	resp := unhex(t, traccarResponse)
	respData := resp[teltonika.HeaderLen : len(resp)-teltonika.CRCLen]
	pr("a command, not a response", unhex(t, wikiGetinfo), teltonika.ErrType)
	pr("AVL data", good, teltonika.ErrCodec)
	mod := bytes.Clone(respData)
	mod[1] = 2
	pr("quantity 2", frame(mod), teltonika.ErrCount)
	mod = bytes.Clone(respData)
	mod[6]++
	pr("text size past the end", frame(mod), teltonika.ErrLength)
	pr("too short for codec 12", frame([]byte{teltonika.Codec12, 1, 1}), teltonika.ErrLength)
	bad = bytes.Clone(resp)
	bad[len(bad)-1] ^= 0x80
	pr("CRC", bad, teltonika.ErrCRC)

	pu := func(name string, in []byte, want error) {
		t.Helper()
		if _, _, err := teltonika.ParseUDP(in); !errors.Is(err, want) {
			t.Errorf("%s: ParseUDP(%x) = %v, want %v", name, in, err, want)
		}
	}
	udp := unhex(t, wikiUDP8)
	pu("length field", append(bytes.Clone(udp), 0), teltonika.ErrLength)
	pu("short", udp[:5], teltonika.ErrLength)
	mod = bytes.Clone(udp)
	mod[7] = 14
	pu("IMEI length", mod, teltonika.ErrIMEI)
	mod = bytes.Clone(udp)
	mod[9] = 'a'
	pu("IMEI digits", mod, teltonika.ErrIMEI)
	mod = bytes.Clone(udp)
	mod[len(mod)-1] = 2
	pu("counts disagree", mod, teltonika.ErrCount)
	mod = bytes.Clone(udp)
	mod[23] = 0x0C
	pu("codec 12 over UDP", mod, teltonika.ErrCodec)
	big := make([]byte, 2+6+15+teltonika.MaxPacket+1)
	big[0], big[1] = 0xFF, 0xFF
	pu("length field over 64 KiB", big, teltonika.ErrLength)
}

// Records survive the encoders and the parsers unchanged, in every codec.
func TestRoundTrip(t *testing.T) {
	base := teltonika.Record{
		Time: ms(1765000000123), Priority: 2, Lon: -1799999999, Lat: 899999999, Alt: -32768,
		Angle: 359, Satellites: 255, Speed: 65535, EventID: 239,
	}
	ios := []teltonika.IO{u(239, 1, 1), u(240, 1, 0), u(21, 1, 5), u(66, 2, 12345), u(24, 2, 88),
		u(16, 4, 4000000000), u(241, 4, 24602), u(11, 8, 1<<63+5), u(14, 8, 0)}
	for _, codec := range []byte{teltonika.Codec8, teltonika.Codec8E, teltonika.Codec16} {
		var recs []teltonika.Record
		for i := range 50 {
			r := base
			r.Time = r.Time.Add(time.Duration(i) * time.Second)
			r.Lat -= int32(i)
			r.Codec = codec
			if codec == teltonika.Codec16 {
				r.Generation = uint8(i % 8)
			}
			r.IO = ios[:i%len(ios)]
			if codec == teltonika.Codec8E && i%3 == 0 {
				r.IO = append(append([]teltonika.IO(nil), r.IO...), teltonika.IO{ID: 10000 + uint16(i), Raw: []byte{1, 2, byte(i)}},
					teltonika.IO{ID: 385, Raw: []byte{}})
			}
			if len(r.IO) == 0 {
				r.IO = nil
			}
			recs = append(recs, r)
		}
		fr := teltonika.AppendTCP([]byte("prefix"), codec, recs)[len("prefix"):]
		if n, err := teltonika.FrameLen(fr); n != len(fr) || err != nil {
			t.Fatalf("codec %#x: FrameLen = %d, %v, want %d", codec, n, err, len(fr))
		}
		p, err := teltonika.ParseTCP(fr)
		if err != nil {
			t.Fatalf("codec %#x: ParseTCP(AppendTCP) = %v", codec, err)
		}
		// Raw of an empty NX decodes as an empty, non-nil slice of the frame.
		normalise(p.Records)
		normalise(recs)
		if p.Codec != codec || len(p.Records) != len(recs) {
			t.Fatalf("codec %#x: round trip: codec %#x, %d records", codec, p.Codec, len(p.Records))
		}
		for i := range recs {
			if !reflect.DeepEqual(p.Records[i], recs[i]) {
				t.Fatalf("codec %#x: record %d round trip =\n%+v\nwant\n%+v", codec, i, p.Records[i], recs[i])
			}
		}
		h := teltonika.UDPHeader{PacketID: 0xBEEF, AVLPacketID: 9, IMEI: "123456789012345"}
		gh, up, err := teltonika.ParseUDP(teltonika.AppendUDP(nil, h, codec, recs))
		normalise(up.Records)
		if err != nil || gh != h || !reflect.DeepEqual(up.Records, recs) {
			t.Errorf("codec %#x: UDP round trip = %+v, %v, records equal: %v", codec, gh, err, reflect.DeepEqual(up.Records, recs))
		}
	}
	for _, text := range []string{"", "getinfo", "setdigout 1", string(make([]byte, 5000))} {
		fr := teltonika.AppendResponse(nil, text)
		if got, err := teltonika.ParseResponse(fr); got != text || err != nil {
			t.Errorf("ParseResponse(AppendResponse(%.20q)) = %.20q, %v", text, got, err)
		}
		if n, err := teltonika.FrameLen(teltonika.AppendCommand(nil, text)); n != len(fr) || err != nil {
			t.Errorf("FrameLen(AppendCommand(%.20q)) = %d, %v", text, n, err)
		}
	}
	if got := teltonika.AppendAck(nil, 258); !bytes.Equal(got, []byte{0, 0, 1, 2}) {
		t.Errorf("AppendAck(258) = %x", got)
	}
}

func normalise(recs []teltonika.Record) {
	for i := range recs {
		for j := range recs[i].IO {
			if recs[i].IO[j].Size == 0 && len(recs[i].IO[j].Raw) == 0 {
				recs[i].IO[j].Raw = nil
			}
		}
	}
}

// Each record's JSON is valid, carries the documented keys and values, and costs no
// allocation beyond its buffer.
func TestAppendJSON(t *testing.T) {
	f := func(r *teltonika.Record, want string) {
		t.Helper()
		got := teltonika.AppendJSON(nil, r)
		if string(got) != want {
			t.Errorf("AppendJSON =\n%s\nwant\n%s", got, want)
		}
		if !json.Valid(got) {
			t.Errorf("AppendJSON(%+v) is not valid JSON: %s", r, got)
		}
	}
	p := parseTCP(t, wikiCodec8a)
	f(&p.Records[0], `{"ts":"2019-06-10T10:04:46.000Z","timestamp":1560161086000,"priority":1,"lat":0,"lon":0,"alt":0,"angle":0,"satellites":0,"speed":0,"eventId":1,`+
		`"latitude":0,"longitude":0,"altitude":0,"direction":0,"numSvs":0,"gsmSignal":3,"externalVoltage":24.079,"gsmOperator":24602,`+
		`"io":{"21":3,"1":1,"66":24079,"241":24602,"78":0}}`)
	p = parseTCP(t, traccarAltNeg)
	f(&p.Records[0], `{"ts":"2013-08-31T15:00:41.710Z","timestamp":1377961241710,"priority":0,"lat":37.6743392,"lon":21.432776,"alt":-4,"angle":0,"satellites":9,"speed":0,"eventId":0,`+
		`"latitude":37.6743392,"longitude":21.432776,"altitude":-4,"direction":0,"numSvs":9,"movement":false,"externalVoltage":12.835,"gnssSpeed":0,`+
		`"io":{"1":0,"240":0,"66":12835,"24":0}}`)
	p = parseTCP(t, traccar16)
	got := teltonika.AppendJSON(nil, &p.Records[0])
	if !bytes.Contains(got, []byte(`"lat":-33.4379166,"lon":-70.64967,"alt":571,"angle":282,"satellites":6,"speed":0,"eventId":0,"generation":7,`)) {
		t.Errorf("AppendJSON(codec 16) = %s", got)
	}
	p = parseTCP(t, traccar8ENX)
	got = teltonika.AppendJSON(nil, &p.Records[0])
	if !bytes.HasSuffix(got, []byte(`"io":{"385":"11210102030405060708090a0b0c0d0e0f10020b010ad0"}}`)) {
		t.Errorf("AppendJSON(NX) = %s", got)
	}
	f(&teltonika.Record{Time: ms(0), Lat: -2147483648, Lon: 1, Alt: 32767, IO: []teltonika.IO{
		u(239, 1, 1), u(67, 2, 4000), u(182, 2, 7), u(17, 2, 0xFFE5), u(16, 4, 123456), {ID: 500, Raw: []byte{0xAB}}, {ID: 239, Raw: []byte{1}},
	}}, `{"ts":"1970-01-01T00:00:00.000Z","timestamp":0,"priority":0,"lat":-214.7483648,"lon":0.0000001,"alt":32767,"angle":0,"satellites":0,"speed":0,"eventId":0,`+
		`"latitude":-214.7483648,"longitude":0.0000001,"altitude":32767,"direction":0,"numSvs":0,"ignition":true,"batteryVoltage":4,"hdop":0.7,"axisX":-27,"odometer":123456,`+
		`"io":{"239":1,"67":4000,"182":7,"17":65509,"16":123456,"500":"ab","239":"01"}}`)

	// The JSON decodes to the values of the record.
	p = parseTCP(t, traccarSouth)
	for i := range p.Records {
		r := &p.Records[i]
		var m map[string]any
		if err := json.Unmarshal(teltonika.AppendJSON(nil, r), &m); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if m["lat"] != float64(r.Lat)/1e7 || m["lon"] != float64(r.Lon)/1e7 || m["alt"] != float64(r.Alt) ||
			m["timestamp"] != float64(r.Time.UnixMilli()) || m["numSvs"] != float64(r.Satellites) {
			t.Errorf("record %d: JSON %v disagrees with %+v", i, m, r)
		}
	}

	many := parseTCP(t, traccar8EMany)
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for i := range many.Records {
			buf = teltonika.AppendJSON(buf, &many.Records[i])
		}
	})
	if allocs != 0 {
		t.Errorf("AppendJSON: %v allocations per run, want 0", allocs)
	}
}

// ParseTCP allocates the records and one block of IO elements per packet, never per record.
func TestParseAllocs(t *testing.T) {
	fr := unhex(t, traccarWest) // 14 records
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := teltonika.ParseTCP(fr); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("ParseTCP: %v allocations per packet of 14 records, want at most 2", allocs)
	}
}

// crc16Bitwise is CRC-16/IBM bit by bit, as Teltonika's documentation describes it.
func crc16Bitwise(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

func FuzzCRC16(f *testing.F) {
	f.Add([]byte("123456789"))
	f.Add([]byte{})
	for _, s := range tcpVectors {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := teltonika.CRC16(b), crc16Bitwise(b); got != want {
			t.Fatalf("CRC16(%x) = %#04x, bit by bit %#04x", b, got, want)
		}
	})
}

// A Parser reused over every vector, in both orders (codecs, record and IO counts growing and
// shrinking), decodes each as ParseTCP does, and allocates nothing once it has seen the
// largest.
func TestParserReuse(t *testing.T) {
	var ps teltonika.Parser
	frames := make([][]byte, 0, 2*len(tcpVectors))
	for _, s := range tcpVectors {
		frames = append(frames, unhex(t, s))
	}
	for i := len(tcpVectors) - 1; i >= 0; i-- {
		frames = append(frames, unhex(t, tcpVectors[i]))
	}
	for _, fr := range frames {
		want, werr := teltonika.ParseTCP(fr)
		got, err := ps.ParseTCP(fr)
		if !errors.Is(err, werr) || got.Codec != want.Codec || !reflect.DeepEqual(got.Records, want.Records) {
			t.Errorf("Parser.ParseTCP(%x) = %+v, %v, want %+v, %v", fr, got, err, want, werr)
		}
	}
	fr := unhex(t, traccarWest)
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := ps.ParseTCP(fr); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Parser.ParseTCP: %v allocations per packet, want 0", allocs)
	}
}

// A Parser reused over datagrams of growing and shrinking size decodes each as ParseUDP does.
func TestParserReuseUDP(t *testing.T) {
	var ps teltonika.Parser
	base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i, n := range []int{3, 1, 5, 2} {
		recs := make([]teltonika.Record, n)
		for j := range recs {
			recs[j] = teltonika.Record{Codec: teltonika.Codec8, Time: base.Add(time.Duration(i*10+j) * time.Second), Lat: int32(j),
				IO: []teltonika.IO{{ID: 239, Size: 1, Value: uint64(j % 2)}, {ID: 16, Size: 4, Value: uint64(j)}}[:j%3]}
		}
		d := teltonika.AppendUDP(nil, teltonika.UDPHeader{PacketID: uint16(i), AVLPacketID: uint8(i), IMEI: "356307042441013"}, teltonika.Codec8, recs)
		wh, wp, werr := teltonika.ParseUDP(d)
		h, p, err := ps.ParseUDP(d)
		if err != nil || werr != nil || h != wh || !reflect.DeepEqual(p, wp) {
			t.Errorf("Parser.ParseUDP(%x) = %+v, %+v, %v, want %+v, %+v, %v", d, h, p, err, wh, wp, werr)
		}
	}
}
