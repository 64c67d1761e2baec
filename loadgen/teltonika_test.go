package loadgen_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// telServer is a small Teltonika server for the tests of the device side, as a peer: it
// answers IMEI handshakes and AVL packets over TCP and UDP as the protocol says, with answers
// a test may alter (answer), keeps every record it decoded by IMEI and record counter, and can
// forward records to a sink as the relay's envelopes (each packet a new seq, as the relay
// numbers a tracker's packets).
type telServer struct {
	t      *testing.T
	ln     net.Listener
	udp    *net.UDPConn
	wg     sync.WaitGroup
	sink   string // forward to this URL, if set
	answer func(imei string, packet, n int) (count int, answer bool)

	mu       sync.Mutex
	conns    map[net.Conn]bool
	packets  map[string]int            // per IMEI, packets received (resends included)
	counts   map[string]map[uint64]int // per IMEI, record counter → arrivals
	records  map[string][]teltonika.Record
	seq      map[string]uint64 // per IMEI, the last envelope seq forwarded
	refuse   map[string]bool
	command  map[string]string // IMEI → a command to send after its next packet, before the answer
	response chan string
}

func startTelServer(t *testing.T) *telServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &telServer{t: t, ln: ln, udp: uc, conns: map[net.Conn]bool{}, packets: map[string]int{},
		counts: map[string]map[uint64]int{}, records: map[string][]teltonika.Record{}, seq: map[string]uint64{},
		refuse: map[string]bool{}, command: map[string]string{}, response: make(chan string, 16)}
	s.wg.Add(2)
	go s.accept()
	go s.serveUDP()
	t.Cleanup(s.close)
	return s
}

func (s *telServer) close() {
	s.ln.Close()
	s.udp.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *telServer) addr() string    { return s.ln.Addr().String() }
func (s *telServer) udpAddr() string { return s.udp.LocalAddr().String() }

func (s *telServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { s.mu.Lock(); delete(s.conns, c); s.mu.Unlock(); c.Close() }()
			s.serveTCP(c)
		}()
	}
}

// decide is the answer to a packet of n records: the count, and whether to answer at all.
func (s *telServer) decide(imei string, n int) (int, bool) {
	s.mu.Lock()
	s.packets[imei]++
	k := s.packets[imei]
	answer := s.answer
	s.mu.Unlock()
	if answer != nil {
		return answer(imei, k, n)
	}
	return n, true
}

// keep records the packet's records and forwards them to the sink, if any.
func (s *telServer) keep(imei string, recs []teltonika.Record) {
	s.mu.Lock()
	m := s.counts[imei]
	if m == nil {
		m = map[uint64]int{}
		s.counts[imei] = m
	}
	for _, r := range recs {
		m[counter(s.t, r)]++
	}
	s.records[imei] = append(s.records[imei], recs...)
	s.seq[imei]++
	seq := s.seq[imei]
	sink := s.sink
	s.mu.Unlock()
	if sink == "" {
		return
	}
	body := []byte{'['}
	for i := range recs {
		if i > 0 {
			body = append(body, ',')
		}
		body = fmt.Appendf(body, `{"imei":%q,"seq":%d,"index":%d,"data":`, imei, seq, i)
		body = teltonika.AppendJSON(body, &recs[i])
		body = append(body, '}')
	}
	body = append(body, ']')
	resp, err := http.Post(sink, "application/json", bytes.NewReader(body))
	if err != nil {
		s.t.Error(err)
		return
	}
	resp.Body.Close()
}

func counter(t *testing.T, r teltonika.Record) uint64 {
	for _, io := range r.IO {
		if io.ID == loadgen.TeltonikaCounterIO {
			return io.Value
		}
	}
	t.Errorf("record of %v without the counter IO %d", r.Time, loadgen.TeltonikaCounterIO)
	return 0
}

func (s *telServer) serveTCP(c net.Conn) {
	br := bufio.NewReader(c)
	h := make([]byte, 2+teltonika.IMEILen)
	if _, err := io.ReadFull(br, h); err != nil {
		return
	}
	imei, _, err := teltonika.ParseIMEI(h)
	if err != nil {
		s.t.Errorf("IMEI handshake %x: %v", h, err)
		return
	}
	s.mu.Lock()
	refused := s.refuse[imei]
	s.mu.Unlock()
	if refused {
		_, _ = c.Write([]byte{0})
		return
	}
	if _, err := c.Write([]byte{1}); err != nil {
		return
	}
	for {
		hdr, err := br.Peek(teltonika.HeaderLen)
		if err != nil {
			return
		}
		n, err := teltonika.FrameLen(hdr)
		if err != nil || n != 0 {
			s.t.Errorf("device %s: frame header %x: %v", imei, hdr, err)
			return
		}
		frame := make([]byte, teltonika.HeaderLen+int(binary.BigEndian.Uint32(hdr[4:]))+teltonika.CRCLen)
		if _, err := io.ReadFull(br, frame); err != nil {
			return
		}
		if teltonika.IsCodec12(frame) {
			text, err := teltonika.ParseResponse(frame)
			if err != nil {
				s.t.Errorf("device %s: Codec 12 response: %v", imei, err)
				return
			}
			s.response <- text
			continue
		}
		p, err := teltonika.ParseTCP(frame)
		if err != nil {
			s.t.Errorf("device %s: packet: %v", imei, err)
			return
		}
		s.keep(imei, p.Records)
		s.mu.Lock()
		cmd, ok := s.command[imei]
		delete(s.command, imei)
		s.mu.Unlock()
		if ok { // a command the server sent just before it read the packet
			if _, err := c.Write(teltonika.AppendCommand(nil, cmd)); err != nil {
				return
			}
		}
		count, answer := s.decide(imei, len(p.Records))
		if answer {
			if _, err := c.Write(teltonika.AppendAck(nil, uint32(count))); err != nil {
				return
			}
		}
	}
}

func (s *telServer) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := s.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		h, p, err := teltonika.ParseUDP(buf[:n])
		if err != nil {
			s.t.Errorf("datagram from %v: %v", from, err)
			continue
		}
		s.keep(h.IMEI, p.Records)
		count, answer := s.decide(h.IMEI, len(p.Records))
		if answer {
			_, _ = s.udp.WriteToUDP(teltonika.AppendUDPAck(nil, h, uint8(count)), from)
		}
	}
}

// set runs f under the server's lock, to change its behaviour.
func (s *telServer) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// recs returns the IMEI's records as they arrived.
func (s *telServer) recs(imei string) []teltonika.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]teltonika.Record(nil), s.records[imei]...)
}

// arrivals is how often the IMEI's record counter arrived.
func (s *telServer) arrivals(imei string, c uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[imei][c]
}

// sendCommand writes a Codec 12 command on every connection of the server.
func (s *telServer) sendCommand(t *testing.T, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		t.Fatal("no connection to send a command on")
	}
	for c := range s.conns {
		if _, err := c.Write(teltonika.AppendCommand(nil, text)); err != nil {
			t.Fatal(err)
		}
	}
}

const testIMEI = "356307042441013"

// A tracker over TCP: the handshake, packets answered with their count; a packet whose answer
// does not come is sent again on a new connection, one answered short or with 0 again on the same
// one, and none of its records is acknowledged before its full count. Every record the device
// counts as acknowledged reached the server, with an FMB920 IO set and a moving position.
func TestTeltonikaTCPDevice(t *testing.T) {
	srv := startTelServer(t)
	srv.set(func() {
		srv.answer = func(_ string, packet, n int) (int, bool) {
			switch packet {
			case 2:
				return 0, false // lost answer
			case 4:
				return n - 1, true // short
			case 6:
				return 0, true // bad packet
			}
			return n, true
		}
	})
	d := loadgen.NewTeltonikaDevice(loadgen.TeltonikaConfig{Addr: srv.addr(), IMEI: testIMEI,
		AckTimeout: 300 * time.Millisecond}, nil)
	defer d.Close()
	ctx := context.Background()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	sizes := []int{1, 5, 50, 7, 255}
	var total uint64
	for _, n := range sizes {
		before := d.Acked()
		if _, err := d.Send(ctx, n); err != nil {
			t.Fatalf("Send(%d): %v", n, err)
		}
		total += uint64(n)
		if got := d.Acked(); got != before+uint64(n) || got != total {
			t.Fatalf("after a packet of %d: Acked() = %d, want %d", n, got, total)
		}
	}
	st := d.Stats()
	// Packets as the server counts them: 1, 2 (no answer), 2 again, 3 (short), 3 again, 4 (0), 4
	// again, 5.
	if got := []int64{st.Packets.Load(), st.Records.Load(), st.Sends.Load(), st.Resends.Load(), st.AckTimeouts.Load(), st.ShortAcks.Load(), st.Reconnects.Load()}; fmt.Sprint(got) != fmt.Sprint([]int64{5, int64(total), 8, 3, 1, 2, 1}) {
		t.Errorf("packets, records, sends, resends, timeouts, short, reconnects = %v, want [5 %d 8 3 1 2 1]", got, total)
	}
	for c := uint64(1); c <= total; c++ {
		if srv.arrivals(testIMEI, c) == 0 {
			t.Fatalf("record %d acknowledged but never received", c)
		}
	}
	if got := srv.arrivals(testIMEI, 6); got != 2 { // the 2nd packet holds records 2..6
		t.Errorf("record 6 arrived %d times, want 2 (its packet's answer was lost)", got)
	}
	checkRecords(t, srv.recs(testIMEI))
}

// checkRecords checks a tracker's records as the server decoded them: increasing times, the
// FMB920 IO set, plausible positions that move, an odometer that grows with them.
func checkRecords(t *testing.T, recs []teltonika.Record) {
	t.Helper()
	want := []uint16{239, 240, 80, 21, 200, 69, 181, 182, 66, 24, 205, 206, 67, 68, 241, 16, 199, loadgen.TeltonikaCounterIO}
	var prev *teltonika.Record
	moved := false
	seen := map[uint64]bool{}
	for i := range recs {
		r := &recs[i]
		c := counter(t, *r)
		if seen[c] { // a resent record: the same bytes as its first arrival
			continue
		}
		seen[c] = true
		ids := map[uint16]uint64{}
		for _, io := range r.IO {
			ids[io.ID] = io.Value
		}
		for _, id := range want {
			if _, ok := ids[id]; !ok {
				t.Fatalf("record %d has no IO %d: %+v", c, id, r.IO)
			}
		}
		if r.Lat < 53e7 || r.Lat > 56e7 || r.Lon < 24e7 || r.Lon > 27e7 || r.Speed == 0 || r.Satellites == 0 {
			t.Fatalf("record %d: lat %d lon %d speed %d satellites %d, want a tracker near Vilnius driving", c, r.Lat, r.Lon, r.Speed, r.Satellites)
		}
		if ids[24] != uint64(r.Speed) || ids[239] != 1 || ids[66] < 12000 {
			t.Fatalf("record %d: GNSS speed IO %d (speed %d), ignition %d, external voltage %d mV", c, ids[24], r.Speed, ids[239], ids[66])
		}
		if prev != nil {
			if !r.Time.After(prev.Time) {
				t.Fatalf("record %d at %v, not after the previous one at %v", c, r.Time, prev.Time)
			}
			var podo uint64
			for _, io := range prev.IO {
				if io.ID == 16 {
					podo = io.Value
				}
			}
			if ids[16] < podo {
				t.Fatalf("record %d: odometer %d, below the previous record's %d", c, ids[16], podo)
			}
			moved = moved || r.Lat != prev.Lat || r.Lon != prev.Lon
		}
		prev = r
	}
	if !moved {
		t.Error("the tracker never moved")
	}
}

// A refused IMEI (answer 00) is an error the device reports.
func TestTeltonikaTCPRefused(t *testing.T) {
	srv := startTelServer(t)
	srv.set(func() { srv.refuse[testIMEI] = true })
	d := loadgen.NewTeltonikaDevice(loadgen.TeltonikaConfig{Addr: srv.addr(), IMEI: testIMEI}, nil)
	defer d.Close()
	if err := d.Connect(context.Background()); !errors.Is(err, loadgen.ErrIMEIRefused) {
		t.Fatalf("Connect = %v, want ErrIMEIRefused", err)
	}
}

// Codec 12: a getinfo sent while the tracker idles between packets is answered with its
// getinfo text; one sent just before the server reads a packet (so it reaches the device ahead
// of the packet's answer) is answered too and the packet is still acknowledged.
func TestTeltonikaCodec12(t *testing.T) {
	srv := startTelServer(t)
	d := loadgen.NewTeltonikaDevice(loadgen.TeltonikaConfig{Addr: srv.addr(), IMEI: testIMEI}, nil)
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Send(ctx, 3); err != nil { // connects
		t.Fatal(err)
	}
	idle := make(chan error, 1)
	go func() { idle <- d.Idle(ctx, time.Now().Add(time.Second)) }()
	srv.sendCommand(t, "getinfo")
	select {
	case text := <-srv.response:
		if !strings.HasPrefix(text, "INI:") || !strings.Contains(text, " GPS:1 ") {
			t.Errorf("getinfo answered %q, want an FMB getinfo text", text)
		}
	case <-ctx.Done():
		t.Fatal("no answer to getinfo")
	}
	if err := <-idle; err != nil {
		t.Fatalf("Idle = %v", err)
	}

	srv.set(func() { srv.command[testIMEI] = "getver" })
	if _, err := d.Send(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if text := <-srv.response; !strings.Contains(text, "IMEI:"+testIMEI) {
		t.Errorf("getver answered %q, want the IMEI in it", text)
	}
	if d.Acked() != 5 || d.Stats().Commands.Load() != 2 || d.Stats().Resends.Load() != 0 {
		t.Errorf("Acked %d, commands %d, resends %d; want 5, 2, 0", d.Acked(), d.Stats().Commands.Load(), d.Stats().Resends.Load())
	}
}

// A tracker over UDP: every datagram a new packet id, its answer echoing it; a datagram whose
// answer is lost is sent again with the same packet id, a short answer makes it send again,
// and an answer for another packet id is ignored.
func TestTeltonikaUDPDevice(t *testing.T) {
	srv := startTelServer(t)
	srv.set(func() {
		srv.answer = func(_ string, packet, n int) (int, bool) {
			switch packet {
			case 2:
				return 0, false
			case 4:
				return n - 1, true
			}
			return n, true
		}
	})
	d, err := loadgen.NewTeltonikaUDPDevice(loadgen.TeltonikaConfig{Addr: srv.udpAddr(), IMEI: testIMEI,
		AckTimeout: 200 * time.Millisecond, Codec: teltonika.Codec8E}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var total uint64
	for _, n := range []int{4, 50, 1, 9} {
		if _, err := d.Send(ctx, n); err != nil {
			t.Fatal(err)
		}
		total += uint64(n)
		if d.Acked() != total {
			t.Fatalf("Acked() = %d, want %d", d.Acked(), total)
		}
	}
	// Datagrams: 1, 2 (lost answer), 2 again, 3 (short), 3 again, 4: the packet ids the server
	// saw are 1..4 with 2 and 3 twice.
	srv.mu.Lock()
	sent := srv.packets[testIMEI]
	srv.mu.Unlock()
	if sent != 6 {
		t.Errorf("server received %d datagrams, want 6", sent)
	}
	for c := uint64(1); c <= total; c++ {
		if srv.arrivals(testIMEI, c) == 0 {
			t.Fatalf("record %d acknowledged but never received", c)
		}
	}
	checkRecords(t, srv.recs(testIMEI))
}

// The fleet runner over TCP and UDP: packets of 1–50 records, every acknowledged record received
// by the server, the report's counters consistent with what the devices acknowledged.
func TestTeltonikaRun(t *testing.T) {
	srv := startTelServer(t)
	for _, proto := range []string{loadgen.ProtocolTeltonikaTCP, loadgen.ProtocolTeltonikaUDP} {
		t.Run(proto, func(t *testing.T) {
			rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{Protocol: proto,
				Addr: srv.addr(), UDPAddr: srv.udpAddr(), Devices: 20, Records: 1, RecordsMax: 50,
				Rate: 20, Duration: 800 * time.Millisecond, RampUp: 100 * time.Millisecond,
				IMEIBase: map[string]uint64{loadgen.ProtocolTeltonikaTCP: 356307042000000, loadgen.ProtocolTeltonikaUDP: 356307043000000}[proto]})
			if err != nil {
				t.Fatal(err)
			}
			tr := rep.Teltonika
			if tr == nil || tr.Packets == 0 || rep.Unacked != 0 || rep.Errors != 0 || len(rep.Acked) != 20 {
				t.Fatalf("report: %+v, teltonika %+v", rep, tr)
			}
			var acked int64
			for imei, last := range rep.Acked {
				acked += int64(last)
				for c := uint64(1); c <= last; c++ {
					if srv.arrivals(imei, c) == 0 {
						t.Fatalf("%s: record %d acknowledged but never received", imei, c)
					}
				}
			}
			if acked != tr.RecordsAcked || rep.FramesAcked != tr.Packets || tr.Packets > rep.FramesSent {
				t.Errorf("records acked: %d by device, %d in the report; packets acked %d, frames acked %d, sent %d",
					acked, tr.RecordsAcked, tr.Packets, rep.FramesAcked, rep.FramesSent)
			}
			if float64(acked)/float64(tr.Packets) < 5 { // a mean of 25.5 records a packet
				t.Errorf("%d records in %d packets: the 1–50 range was not used", acked, tr.Packets)
			}
			var out bytes.Buffer
			if err := rep.WriteText(&out); err != nil || !strings.Contains(out.String(), "records acked") {
				t.Errorf("text report (%v):\n%s", err, out.String())
			}
		})
	}
}

// The sink accounts Teltonika records by IMEI and record counter, whatever envelope seq the
// relay gives them: every acknowledged record delivered passes, a record delivered twice in
// different envelopes (a packet resent after a lost answer) is a duplicate, and a sink that
// drops records fails the check.
func TestTeltonikaSinkAccount(t *testing.T) {
	for _, tc := range []struct {
		name      string
		chaos     loadgen.Chaos
		wantLost  bool
		wantDups  bool
		lostAnswr bool
	}{
		{name: "all"},
		{name: "resent", lostAnswr: true, wantDups: true},
		{name: "dropped", chaos: loadgen.Chaos{DropEvery: 97}, wantLost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{Chaos: tc.chaos})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			srv := startTelServer(t)
			srv.set(func() {
				srv.sink = sink.URL() + "/ingest"
				if tc.lostAnswr {
					srv.answer = func(_ string, packet, n int) (int, bool) { return n, packet != 3 }
				}
			})
			rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{Protocol: loadgen.ProtocolTeltonikaTCP,
				Addr: srv.addr(), Devices: 5, Records: 10, RecordsMax: 30, Rate: 20,
				Duration: 500 * time.Millisecond, AckTimeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			req := rep.AccountRequest(true)
			want := req.Expect().Total()
			if want != rep.Teltonika.RecordsAcked || want == 0 {
				t.Fatalf("the account expects %d records, the fleet had %d acknowledged", want, rep.Teltonika.RecordsAcked)
			}
			var a loadgen.AccountReport
			checkfor.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
				a = sink.Account(req.Expect())
				if tc.wantLost && sink.Stats().ChaosDropped == 0 {
					return errors.New("nothing dropped yet")
				}
				if !tc.wantLost && a.Lost != 0 {
					return fmt.Errorf("%d lost", a.Lost)
				}
				return nil
			})
			if tc.wantLost != (a.Lost > 0) || a.Lost != int64(sink.Stats().ChaosDropped) {
				t.Errorf("lost %d, chaos dropped %d: %s", a.Lost, sink.Stats().ChaosDropped, a.String())
			}
			if tc.wantDups != (a.Dups > 0) {
				t.Errorf("dups %d, want some: %v: %s", a.Dups, tc.wantDups, a.String())
			}
			if a.Extra != 0 {
				t.Errorf("%d records delivered that no device had acknowledged: %s", a.Extra, a.String())
			}
			if !tc.wantLost && a.Received != want {
				t.Errorf("received %d of %d", a.Received, want)
			}
		})
	}
}

// The key field is found at the top level or one object down, and only an unsigned integer counts.
func TestBatchScannerKeyField(t *testing.T) {
	f := func(field, data string, want uint64, wantOK bool) {
		t.Helper()
		sc := loadgen.BatchScanner{KeyField: field, SentField: "sentAt"}
		refs, err := sc.Scan(nil, []byte(`[{"imei":"1","seq":7,"index":3,"data":`+data+`}]`))
		if err != nil {
			t.Fatalf("Scan(%s): %v", data, err)
		}
		e := refs[0]
		if e.Key != want || e.HasKey != wantOK {
			t.Errorf("KeyField %q, data %s: Key %d %v, want %d %v", field, data, e.Key, e.HasKey, want, wantOK)
		}
		seq, index := e.MsgKey()
		if wantOK && (seq != want || index != 0) || !wantOK && (seq != 7 || index != 3) {
			t.Errorf("KeyField %q, data %s: MsgKey %d %d", field, data, seq, index)
		}
	}
	f("io.150", `{"sentAt":1,"io":{"16":5,"150":42}}`, 42, true)
	f("io.150", `{"io":{"150":18446744073709551615}}`, 18446744073709551615, true)
	f("io.150", `{"io":{"150":18446744073709551616}}`, 0, false)
	f("io.150", `{"io":{"150":"42"}}`, 0, false)
	f("io.150", `{"io":{"150":-1}}`, 0, false)
	f("io.150", `{"io":[150]}`, 0, false)
	f("io.150", `{"150":42}`, 0, false)
	f("io.150", `[1]`, 0, false)
	f("n", `{"n":9,"io":{"150":42}}`, 9, true)
	f("", `{"io":{"150":42}}`, 0, false)

	// A keyed record's send time: its SentField, else its KeyTimeField in milliseconds.
	g := func(data string, want int64, wantOK bool) {
		t.Helper()
		sc := loadgen.BatchScanner{KeyField: "io.150", SentField: "sentAt", KeyTimeField: "timestamp"}
		refs, err := sc.Scan(nil, []byte(`[{"imei":"1","seq":7,"index":3,"data":`+data+`}]`))
		if err != nil {
			t.Fatalf("Scan(%s): %v", data, err)
		}
		if e := refs[0]; e.SentAt != want || e.HasSentAt != wantOK {
			t.Errorf("data %s: SentAt %d %v, want %d %v", data, e.SentAt, e.HasSentAt, want, wantOK)
		}
	}
	g(`{"timestamp":1700000000123,"io":{"150":1}}`, 1700000000123000, true)
	g(`{"timestamp":1700000000123,"sentAt":5,"io":{"150":1}}`, 5, true)
	g(`{"timestamp":1700000000123}`, 0, false) // not keyed
	g(`{"timestamp":-1,"io":{"150":1}}`, 0, false)
}

// The floors speak Teltonika too: the ACK floor answers every packet with its count, and the
// pipeline floor delivers every acknowledged record to the sink, over TCP and UDP.
func TestTeltonikaFloor(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for _, pipeline := range []bool{false, true} {
		f, err := loadgen.StartFloor(loadgen.FloorOptions{TeltonikaAddr: "127.0.0.1:0", TeltonikaUDPAddr: "127.0.0.1:0",
			Pipeline: pipeline, SinkURL: sink.URL() + "/ingest", EventLoops: 2})
		if err != nil {
			t.Fatal(err)
		}
		for i, proto := range []string{loadgen.ProtocolTeltonikaTCP, loadgen.ProtocolTeltonikaUDP} {
			sink.Reset()
			rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{Protocol: proto,
				Addr: f.TeltonikaAddr().String(), UDPAddr: f.TeltonikaUDPAddr().String(),
				Devices: 10, Records: 1, RecordsMax: 50, Rate: 10, Duration: 500 * time.Millisecond,
				IMEIBase: 356307042000000 + uint64(i)*1000})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Teltonika.Packets == 0 || rep.Unacked != 0 {
				t.Fatalf("pipeline %v, %s: teltonika %+v, unacked %d", pipeline, proto, *rep.Teltonika, rep.Unacked)
			}
			if !pipeline {
				continue
			}
			req := rep.AccountRequest(false)
			var a loadgen.AccountReport
			checkfor.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
				if a = sink.Account(req.Expect()); a.Lost != 0 {
					return errors.New(a.String())
				}
				return nil
			})
			if a.Expected != rep.Teltonika.RecordsAcked || a.Extra != 0 {
				t.Errorf("%s: %d records acknowledged; account %s", proto, rep.Teltonika.RecordsAcked, a.String())
			}
		}
		if err := f.Close(context.Background()); err != nil { // sends what the lanes still hold
			t.Fatal(err)
		}
		if st := f.Stats(); st.Frames == 0 || (pipeline && st.Delivered != st.Records) {
			t.Errorf("pipeline %v: floor stats %+v", pipeline, st)
		}
	}
}

// loadgen run -protocol teltonika-tcp with a range of records, and the flags it refuses.
func TestTeltonikaCLI(t *testing.T) {
	srv := startTelServer(t)
	var out, errOut bytes.Buffer
	code := loadgen.Main(context.Background(), []string{"run", "-protocol", "teltonika-tcp", "-addr", srv.addr(),
		"-devices", "3", "-records", "1-50", "-rate", "10", "-duration", "300ms", "-codec", "8E"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "packets acked, records acked") || !strings.Contains(out.String(), "records=1-50") {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	for _, args := range [][]string{{"-records", "5-2"}, {"-records", "0"}, {"-codec", "9"}} {
		errOut.Reset()
		if code := loadgen.Main(context.Background(), append([]string{"run", "-protocol", "teltonika-tcp", "-addr", srv.addr()}, args...), &out, &errOut); code != 2 {
			t.Errorf("run %v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
	errOut.Reset()
	if code := loadgen.Main(context.Background(), []string{"run", "-records", "1-5", "-addr", srv.addr(), "-duration", "100ms"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "Teltonika") {
		t.Errorf("a range of records for native devices: exit %d, %s", code, errOut.String())
	}
}
