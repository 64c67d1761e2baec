package loadgen

import (
	"errors"
	"fmt"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
	"github.com/fleetrelay/fleetrelay/internal/udpport"
)

// startTeltonika starts the floor's Teltonika listeners that FloorOptions names.
func (f *Floor) startTeltonika() error {
	var err error
	if a := f.o.TeltonikaAddr; a != "" {
		if f.telTCP, err = f.startEngineOf(&floorEngine{network: "tcp", tel: true}, a, gnet.WithTCPNoDelay(gnet.TCPNoDelay)); err != nil {
			return fmt.Errorf("floor teltonika tcp %s: %w", a, err)
		}
	}
	if a := f.o.TeltonikaUDPAddr; a != "" {
		addr, release, err := udpport.Claim(a) // as for the native UDP listener
		if err == nil {
			f.telUDP, err = f.startEngineOf(&floorEngine{network: "udp", tel: true}, addr)
			release()
		}
		if err != nil {
			return fmt.Errorf("floor teltonika udp %s: %w", a, err)
		}
	}
	return nil
}

// floorTelConn is a Teltonika TCP connection's state on a floor, touched only by its event
// loop.
type floorTelConn struct {
	imei string // "" until the handshake
	lane *floorLane
	seq  uint64   // the connection's packets, numbered as the relay numbers a tracker's
	json []byte   // the records of one packet, rendered
	recs [][]byte // into json
	out  []byte
}

// telTraffic answers what a Teltonika tracker sent: 01 to its IMEI handshake, then each AVL
// packet with its record count on receipt (0 for one that does not check); the pipeline floor
// renders each record as the relay does (teltonika.AppendJSON) into its lane.
func (f *Floor) telTraffic(c gnet.Conn, tc *floorTelConn, buf []byte) gnet.Action {
	done := 0
	if tc.imei == "" {
		imei, n, err := teltonika.ParseIMEI(buf)
		if err != nil {
			return gnet.Close
		}
		if n == 0 {
			return gnet.None
		}
		tc.imei, done = imei, n
		tc.out = append(tc.out, 1)
	}
	now := int64(0)
	for {
		n, err := teltonika.FrameLen(buf[done:])
		if errors.Is(err, teltonika.ErrPing) {
			done += n
			continue
		}
		if err != nil {
			return gnet.Close
		}
		if n == 0 {
			break
		}
		frame := buf[done : done+n]
		done += n
		p, err := teltonika.ParseTCP(frame)
		if err != nil {
			tc.out = teltonika.AppendAck(tc.out, 0)
			continue
		}
		f.took(1, len(p.Records))
		if tc.lane != nil {
			if now == 0 {
				now = time.Now().UnixMilli()
			}
			tc.seq++
			tc.json, tc.recs = renderTeltonika(tc.json[:0], tc.recs[:0], p.Records)
			tc.lane.add(now, tc.imei, tc.imei, tc.imei, tc.seq, tc.recs)
		}
		tc.out = teltonika.AppendAck(tc.out, uint32(len(p.Records)))
	}
	if done > 0 {
		_, _ = c.Discard(done)
	}
	if len(tc.out) > 0 && (tc.lane == nil || !tc.lane.hold(c)) {
		_, _ = c.Write(tc.out)
		tc.out = tc.out[:0]
	}
	return gnet.None
}

// renderTeltonika renders recs as JSON objects into dst, one slice of it each.
func renderTeltonika(dst []byte, out [][]byte, recs []teltonika.Record) ([]byte, [][]byte) {
	for i := range recs {
		start := len(dst)
		dst = teltonika.AppendJSON(dst, &recs[i])
		out = append(out, dst[start:len(dst):len(dst)]) // stays valid if dst moves as it grows
	}
	return dst, out
}

// telDatagram answers a Teltonika datagram with its record count, echoing its packet id; the
// pipeline floor forwards its records, each datagram its own seq (the floor keeps no state per
// IMEI, so seqs are the datagram's packet id: the sink accounts Teltonika records by their
// counter anyway).
func (f *Floor) telDatagram(c gnet.Conn, buf []byte) gnet.Action {
	h, p, err := teltonika.ParseUDP(buf)
	if err != nil {
		return gnet.None
	}
	f.took(1, len(p.Records))
	if l := f.laneOf([]byte(h.IMEI)); l != nil {
		_, recs := renderTeltonika(nil, nil, p.Records)
		l.add(time.Now().UnixMilli(), h.IMEI, h.IMEI, h.IMEI, uint64(h.PacketID), recs)
	}
	_, _ = c.Write(teltonika.AppendUDPAck(nil, h, uint8(len(p.Records))))
	return gnet.None
}
