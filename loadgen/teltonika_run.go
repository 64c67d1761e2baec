package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Protocols of RunOptions.Protocol.
const (
	ProtocolNative       = "native"        // the relay's own protocol (TCP, UDP with UDPShare)
	ProtocolTeltonikaTCP = "teltonika-tcp" // Teltonika trackers over TCP (Addr)
	ProtocolTeltonikaUDP = "teltonika-udp" // Teltonika trackers over UDP (UDPAddr)
)

// DefaultIMEIBase is the IMEI of a Teltonika fleet's first device; the others follow it.
const DefaultIMEIBase = 356_307_042_000_000

// TeltonikaReport is what a Teltonika fleet did (RunReport.Teltonika).
type TeltonikaReport struct {
	Protocol     string `json:"protocol"`
	Packets      int64  `json:"packets"`      // AVL packets (datagrams) acknowledged in full
	RecordsAcked int64  `json:"recordsAcked"` // records those packets held
	Sends        int64  `json:"sends"`        // packet writes, resends included
	Resends      int64  `json:"resends"`      // writes of a packet already written
	ShortAcks    int64  `json:"shortAcks"`    // answers counting fewer records than sent
	AckTimeouts  int64  `json:"ackTimeouts"`  // answers that did not come in time
	Reconnects   int64  `json:"reconnects"`   // TCP connections opened again after a failure
	Commands     int64  `json:"commands"`     // Codec 12 commands answered
	StrayAnswers int64  `json:"strayAnswers"` // UDP answers for another packet id
	// RecordsPerSec is RecordsAcked over the sending time.
	RecordsPerSec float64 `json:"recordsPerSec"`
}

// teltonikaDevice is what the fleet runner needs of a TCP or UDP tracker.
type teltonikaDevice interface {
	IMEI() string
	Send(ctx context.Context, n int) (time.Time, error)
	Acked() uint64
	Unacked() int
	Close()
}

// runTeltonika runs a fleet of Teltonika trackers: each sends packets of Records..RecordsMax
// records (uniformly drawn) at Rate packets per second (0: as fast as the answers come), one
// packet at a time, for the duration; a packet in flight when sending ends is waited for until
// DrainTimeout. Each record is one "frame" of the account: rep.Acked holds each IMEI's last
// acknowledged record counter.
func runTeltonika(ctx context.Context, o RunOptions, rep *RunReport) (*RunReport, error) {
	udp := o.Protocol == ProtocolTeltonikaUDP
	lo, hi := o.Records, max(o.RecordsMax, o.Records)
	if hi > 255 {
		return nil, fmt.Errorf("teltonika packets hold at most 255 records, not %d", hi)
	}
	if o.IMEIBase == 0 {
		o.IMEIBase = DefaultIMEIBase
	}
	if o.IMEIBase+uint64(o.Devices) > 999_999_999_999_999 {
		return nil, fmt.Errorf("IMEI base %d leaves no room for %d devices", o.IMEIBase, o.Devices)
	}
	addr := o.Addr
	if udp {
		addr = o.UDPAddr
	}
	if addr == "" {
		return nil, fmt.Errorf("%s: no address", o.Protocol)
	}
	r := newRecorder()
	if o.Acked != nil {
		r.acked = o.Acked
	}
	if o.Sent != nil {
		r.sent = o.Sent
	}
	var stats TeltonikaStats
	devs := make([]teltonikaDevice, o.Devices)
	for i := range devs {
		cfg := TeltonikaConfig{Addr: addr, IMEI: fmt.Sprintf("%015d", o.IMEIBase+uint64(i)), Codec: o.TeltonikaCodec,
			AckTimeout: o.AckTimeout, First: o.FirstSeq}
		if udp {
			d, err := NewTeltonikaUDPDevice(cfg, &stats)
			if err != nil {
				for _, d := range devs[:i] {
					d.Close()
				}
				return nil, err
			}
			devs[i] = d
			continue
		}
		if o.SourceIPs > 1 {
			cfg.Local = &net.TCPAddr{IP: net.IPv4(127, 0, byte(2+i%o.SourceIPs/250), byte(2+i%o.SourceIPs%250))}
		}
		devs[i] = NewTeltonikaDevice(cfg, &stats)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	rep.FirstSeq, rep.Records = o.FirstSeq, 1

	start, sendUntil, runCtx, closeWindow := o.sendWindow(ctx, rep)
	defer closeWindow()
	drainCtx, cancelDrain := context.WithDeadline(ctx, sendUntil.Add(o.DrainTimeout))
	defer cancelDrain()

	var wg sync.WaitGroup
	var connected atomic.Int64
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !o.rampWait(runCtx, start, i, len(devs)) {
				return
			}
			if td, ok := d.(*TeltonikaDevice); ok {
				if err := td.reconnect(runCtx); err != nil {
					if runCtx.Err() == nil {
						r.errors.Add(1)
					}
					return
				}
			}
			if connected.Add(1) == int64(o.Devices) && o.OnConnected != nil {
				o.OnConnected()
			}
			if o.Idle {
				if td, ok := d.(*TeltonikaDevice); ok {
					_ = td.Idle(runCtx, sendUntil)
				} else {
					<-runCtx.Done()
				}
				return
			}
			r.simulateTeltonika(runCtx, drainCtx, d, &o, i, lo, hi)
		}()
	}
	stopProgress := r.progress(o.Progress, o.OnSecond, start, &connected)
	wg.Wait()
	stopProgress()
	end := time.Now()
	// Every connection opened in the ramp counted as a reconnect: count only those after it.
	reconnects := stats.Reconnects.Load() - connected.Load()
	if udp {
		reconnects = 0
	}
	sendEnd := end
	if sendEnd.After(sendUntil) {
		sendEnd = sendUntil
	}
	rep.fill(r, nil, start, sendEnd, end)
	rep.Reconnects = reconnects
	rep.Acked = make(map[string]uint64, len(devs))
	for _, d := range devs {
		rep.Acked[d.IMEI()] = d.Acked()
		if d.Unacked() > 0 {
			rep.Unacked++
		}
	}
	t := &TeltonikaReport{Protocol: o.Protocol, Packets: stats.Packets.Load(), RecordsAcked: stats.Records.Load(),
		Sends: stats.Sends.Load(), Resends: stats.Resends.Load(), ShortAcks: stats.ShortAcks.Load(),
		AckTimeouts: stats.AckTimeouts.Load(), Reconnects: reconnects, Commands: stats.Commands.Load(),
		StrayAnswers: stats.StrayAnswers.Load()}
	if rep.SendSeconds > 0 {
		t.RecordsPerSec = float64(t.RecordsAcked) / rep.SendSeconds
	}
	rep.Teltonika = t
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return rep, err
	}
	return rep, nil
}

// simulateTeltonika sends one tracker's packets: on an open-loop schedule at Rate (a packet's
// latency counts from when it was due), idling between packets (answering commands), or back
// to back at Rate 0. The packet in flight when sending ends is finished under drain.
func (r *recorder) simulateTeltonika(ctx, drain context.Context, d teltonikaDevice, o *RunOptions, i, lo, hi int) {
	rnd := rand.New(rand.NewPCG(uint64(i)+7<<40, uint64(time.Now().UnixNano())))
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	next := time.Now().Add(time.Duration(rnd.Float64() * float64(interval)))
	td, _ := d.(*TeltonikaDevice)
	for ctx.Err() == nil {
		due := time.Now()
		if interval > 0 {
			if td != nil {
				if err := td.Idle(ctx, next); err != nil && ctx.Err() == nil {
					r.errors.Add(1)
				}
			}
			if !sleepUntil(ctx, next) {
				break
			}
			due = next
			gap := interval
			if o.Poisson {
				gap = time.Duration(rnd.ExpFloat64() * float64(interval))
			}
			next = next.Add(gap)
		}
		n := lo + rnd.IntN(hi-lo+1)
		r.sent.Add(1)
		r.records.Add(int64(n))
		sent, err := d.Send(drain, n)
		if err != nil {
			r.errors.Add(1)
			return
		}
		r.ack(0, due, sent, time.Now())
		if o.AckedRecords != nil {
			o.AckedRecords.Add(int64(n))
		}
	}
	if n := d.Unacked(); n > 0 { // a Send ctx ended: finish it
		if sent, err := d.Send(drain, 0); err == nil {
			r.ack(0, sent, sent, time.Now())
			if o.AckedRecords != nil {
				o.AckedRecords.Add(int64(n))
			}
		}
	}
}
