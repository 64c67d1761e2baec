package loadgen

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// TeltonikaCounterIO is the AVL id of the IO element in which a simulated Teltonika device
// numbers its records (8 bytes, from RunOptions.FirstSeq up, never reused): with the IMEI it is
// the record's stable key, which the sink reads (DefaultKeyField) to check that every
// acknowledged record was delivered, whatever frame seq and index the relay gives it. The
// FMB920's AVL id list leaves 150 unused (it belongs to the CAN adapter ids of other models).
const TeltonikaCounterIO = 150

// DefaultKeyField is the data field a sink identifies records by when present: the IO element
// TeltonikaCounterIO of a Teltonika record's JSON ("io":{"150":n}). Records without it are
// identified by their envelope's seq and index.
const DefaultKeyField = "io.150"

// avlGen makes the AVL records of one simulated FMB920-class tracker driving around: a position
// that moves at its speed and heading, a total odometer that grows with it, and the IO set such
// a device sends by default (ignition, movement, data mode, GSM signal, sleep mode, GNSS status,
// PDOP/HDOP, external and battery voltage, battery current, GNSS speed, cell id, area code,
// operator, total and trip odometer) plus the record counter. Not safe for concurrent use.
type avlGen struct {
	rnd      *rand.Rand
	next     uint64 // counter of the next record
	last     time.Time
	lat, lon float64 // degrees
	alt      float64 // metres
	heading  float64 // degrees from north
	speed    float64 // km/h
	odometer float64 // metres
	trip     float64 // metres
	cid, lac uint64
	ios      []teltonika.IO
}

// newAVLGen starts a tracker somewhere around Vilnius with its first record counter first.
func newAVLGen(seed, first uint64) *avlGen {
	rnd := rand.New(rand.NewPCG(seed, 0xF3B920))
	return &avlGen{
		rnd:  rnd,
		next: first,
		lat:  54.6872 + (rnd.Float64()-0.5)*0.4, lon: 25.2797 + (rnd.Float64()-0.5)*0.6,
		alt:     110 + rnd.Float64()*60,
		heading: rnd.Float64() * 360, speed: 30 + rnd.Float64()*60,
		odometer: float64(rnd.IntN(400_000_000)),
		cid:      uint64(rnd.IntN(60000) + 1), lac: uint64(rnd.IntN(600) + 1),
	}
}

// earthRadius is the mean Earth radius in metres.
const earthRadius = 6_371_000

// records appends n records, the first at now (or just after the previous record: the times of
// one device's records are distinct and increasing, in milliseconds), each a millisecond after
// the one before. Their IO slices share the generator's scratch space: encode them before the
// next call.
func (g *avlGen) records(dst []teltonika.Record, n int, now time.Time) []teltonika.Record {
	now = now.Truncate(time.Millisecond)
	need := n * 18
	if cap(g.ios) < need {
		g.ios = make([]teltonika.IO, 0, need)
	}
	g.ios = g.ios[:0]
	for range n {
		t := now
		if !t.After(g.last) {
			t = g.last.Add(time.Millisecond)
		}
		dt := t.Sub(g.last).Seconds()
		if g.last.IsZero() || dt > 60 {
			dt = 1
		}
		g.last = t
		g.drive(dt)
		start := len(g.ios)
		g.ios = g.appendIO(g.ios)
		dst = append(dst, teltonika.Record{
			Time: t, Priority: 0,
			Lat: int32(math.Round(g.lat * 1e7)), Lon: int32(math.Round(g.lon * 1e7)),
			Alt: int16(math.Round(g.alt)), Angle: uint16(g.heading) % 360,
			Satellites: uint8(7 + g.rnd.IntN(8)), Speed: uint16(math.Round(g.speed)),
			IO: g.ios[start:len(g.ios):len(g.ios)],
		})
		g.next++
	}
	return dst
}

// drive moves the tracker for dt seconds: a gentle random walk of heading and speed.
func (g *avlGen) drive(dt float64) {
	g.heading = math.Mod(g.heading+(g.rnd.Float64()-0.5)*20+360, 360)
	g.speed = min(max(g.speed+(g.rnd.Float64()-0.5)*10, 5), 120)
	g.alt = min(max(g.alt+(g.rnd.Float64()-0.5)*2, -50), 2000)
	d := g.speed / 3.6 * dt // metres
	rad := g.heading * math.Pi / 180
	g.lat += d * math.Cos(rad) / earthRadius * 180 / math.Pi
	g.lon += d * math.Sin(rad) / (earthRadius * math.Cos(g.lat*math.Pi/180)) * 180 / math.Pi
	g.lat = min(max(g.lat, -89), 89)
	if g.lon > 180 {
		g.lon -= 360
	} else if g.lon < -180 {
		g.lon += 360
	}
	g.odometer += d
	g.trip += d
	if g.rnd.IntN(500) == 0 { // a new cell now and then
		g.cid = uint64(g.rnd.IntN(60000) + 1)
	}
}

// appendIO appends the IO element of the next record, grouped by width as the codec writes them.
func (g *avlGen) appendIO(ios []teltonika.IO) []teltonika.IO {
	io := func(id uint16, size uint8, v uint64) { ios = append(ios, teltonika.IO{ID: id, Size: size, Value: v}) }
	io(239, 1, 1) // ignition
	io(240, 1, 1) // movement
	io(80, 1, 1)  // data mode: home on move
	io(21, 1, uint64(3+g.rnd.IntN(3)))
	io(200, 1, 0) // sleep mode: none
	io(69, 1, 1)  // GNSS on with fix
	io(181, 2, uint64(8+g.rnd.IntN(12)))
	io(182, 2, uint64(6+g.rnd.IntN(10)))
	io(66, 2, uint64(12600+g.rnd.IntN(1400))) // external voltage, mV
	io(24, 2, uint64(math.Round(g.speed)))
	io(205, 2, g.cid)
	io(206, 2, g.lac)
	io(67, 2, uint64(4000+g.rnd.IntN(150))) // battery voltage, mV
	io(68, 2, uint64(g.rnd.IntN(20)))       // battery current, mA
	io(241, 4, 24602)                       // operator MCC/MNC
	io(16, 4, uint64(g.odometer))
	io(199, 4, uint64(g.trip))
	io(TeltonikaCounterIO, 8, g.next)
	return ios
}
