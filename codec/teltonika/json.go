package teltonika

import (
	"strconv"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
)

// named is how AppendJSON names a well-known FMB IO element: its JSON key and how its value
// is rendered.
type named struct {
	key   string
	kind  uint8 // kindUint, kindSigned, kindBool
	scale int   // decimal places the raw value is shifted by (mV → V: 3)
}

const (
	kindUint uint8 = iota
	kindSigned
	kindBool
)

// namedIO maps the well-known AVL ids of FMB-class devices (Teltonika's FMB920 AVL ID list)
// to their names. Keep the table in AppendJSON's documentation and the README in step.
func namedIO(id uint16) (named, bool) {
	switch id {
	case 239:
		return named{key: "ignition", kind: kindBool}, true
	case 240:
		return named{key: "movement", kind: kindBool}, true
	case 66:
		return named{key: "externalVoltage", scale: 3}, true
	case 67:
		return named{key: "batteryVoltage", scale: 3}, true
	case 68:
		return named{key: "batteryCurrent", scale: 3}, true
	case 113:
		return named{key: "batteryLevel"}, true
	case 16:
		return named{key: "odometer"}, true
	case 199:
		return named{key: "tripOdometer"}, true
	case 21:
		return named{key: "gsmSignal"}, true
	case 24:
		return named{key: "gnssSpeed"}, true
	case 69:
		return named{key: "gnssStatus"}, true
	case 181:
		return named{key: "pdop", scale: 1}, true
	case 182:
		return named{key: "hdop", scale: 1}, true
	case 205:
		return named{key: "cid"}, true
	case 206:
		return named{key: "lac"}, true
	case 241:
		return named{key: "gsmOperator"}, true
	case 200:
		return named{key: "sleepMode"}, true
	case 17:
		return named{key: "axisX", kind: kindSigned}, true
	case 18:
		return named{key: "axisY", kind: kindSigned}, true
	case 19:
		return named{key: "axisZ", kind: kindSigned}, true
	}
	return named{}, false
}

// AppendJSON appends r as one JSON object, with no allocation beyond dst's growth. Its keys,
// in this order:
//
//	| key         | value                                                                  |
//	|-------------|------------------------------------------------------------------------|
//	| ts          | the record's time, RFC 3339 UTC with milliseconds                      |
//	|             | ("2019-06-10T10:04:46.000Z")                                           |
//	| timestamp   | the same time in Unix milliseconds (what bewhere and measurement read)  |
//	| priority    | 0 low, 1 high, 2 panic                                                 |
//	| lat, lon    | degrees, exact decimal of the signed 1e-7 value: the integer part, then |
//	|             | up to 7 decimals with trailing zeros removed (−33.5, 25.3032016, 0)     |
//	| alt         | metres, signed                                                         |
//	| angle       | degrees from north, 0–359                                              |
//	| satellites  | satellites in use                                                      |
//	| speed       | km/h                                                                   |
//	| eventId     | the IO id that triggered the record (0: none)                          |
//	| generation  | Codec 16 records only: the generation type                             |
//	| latitude,   | lat, lon, alt, angle and satellites again, under the names the bewhere |
//	| longitude,  | formats read                                                           |
//	| altitude,   |                                                                        |
//	| direction,  |                                                                        |
//	| numSvs      |                                                                        |
//	| <name>      | for each well-known IO element the record holds (table below)          |
//	| io          | every IO element: {"<id>": value}, values as unsigned decimals, NX     |
//	|             | values (Codec 8 Extended) as lowercase hex strings                     |
//
// The well-known IO elements (value: the raw value, ×10^-n where a scale is given):
//
//	| id  | key             | value                                              |
//	|-----|-----------------|----------------------------------------------------|
//	| 239 | ignition        | true when non-zero                                 |
//	| 240 | movement        | true when non-zero                                 |
//	| 66  | externalVoltage | volts (mV × 0.001)                                 |
//	| 67  | batteryVoltage  | volts (mV × 0.001)                                 |
//	| 68  | batteryCurrent  | amperes (mA × 0.001)                               |
//	| 113 | batteryLevel    | percent                                            |
//	| 16  | odometer        | total odometer, metres                             |
//	| 199 | tripOdometer    | metres                                             |
//	| 21  | gsmSignal       | 0–5                                                |
//	| 24  | gnssSpeed       | km/h                                               |
//	| 69  | gnssStatus      | 0 off, 1 on with fix, 2 on without fix, 3 asleep   |
//	| 181 | pdop            | × 0.1                                              |
//	| 182 | hdop            | × 0.1                                              |
//	| 205 | cid             | GSM cell id                                        |
//	| 206 | lac             | GSM area code                                      |
//	| 241 | gsmOperator     | MCC and MNC as one number (24602)                  |
//	| 200 | sleepMode       | 0 none, 1 GPS sleep, 2 deep, 3 online, 4 ultra     |
//	| 17  | axisX           | accelerometer, mG, signed                          |
//	| 18  | axisY           | accelerometer, mG, signed                          |
//	| 19  | axisZ           | accelerometer, mG, signed                          |
//
// An NX element with a well-known id is left out of the names (only io has it). A name
// repeats if its IO id does.
func AppendJSON(dst []byte, r *Record) []byte {
	dst = append(dst, `{"ts":"`...)
	dst = appendTime(dst, r.Time)
	dst = append(dst, `","timestamp":`...)
	dst = strconv.AppendInt(dst, r.Time.UnixMilli(), 10)
	dst = append(dst, `,"priority":`...)
	dst = appendDec(dst, uint64(r.Priority))
	// lat … satellites are written again under the bewhere names: their bytes are copied.
	dst = append(dst, `,"lat":`...)
	lat := len(dst)
	dst = appendDecimal(dst, int64(r.Lat), 7)
	latEnd := len(dst)
	dst = append(dst, `,"lon":`...)
	lon := len(dst)
	dst = appendDecimal(dst, int64(r.Lon), 7)
	lonEnd := len(dst)
	dst = append(dst, `,"alt":`...)
	alt := len(dst)
	dst = strconv.AppendInt(dst, int64(r.Alt), 10)
	altEnd := len(dst)
	dst = append(dst, `,"angle":`...)
	angle := len(dst)
	dst = appendDec(dst, uint64(r.Angle))
	angleEnd := len(dst)
	dst = append(dst, `,"satellites":`...)
	sats := len(dst)
	dst = appendDec(dst, uint64(r.Satellites))
	satsEnd := len(dst)
	dst = append(dst, `,"speed":`...)
	dst = appendDec(dst, uint64(r.Speed))
	dst = append(dst, `,"eventId":`...)
	dst = appendDec(dst, uint64(r.EventID))
	if r.Codec == Codec16 {
		dst = append(dst, `,"generation":`...)
		dst = appendDec(dst, uint64(r.Generation))
	}
	dst = append(dst, `,"latitude":`...)
	dst = append(dst, dst[lat:latEnd]...)
	dst = append(dst, `,"longitude":`...)
	dst = append(dst, dst[lon:lonEnd]...)
	dst = append(dst, `,"altitude":`...)
	dst = append(dst, dst[alt:altEnd]...)
	dst = append(dst, `,"direction":`...)
	dst = append(dst, dst[angle:angleEnd]...)
	dst = append(dst, `,"numSvs":`...)
	dst = append(dst, dst[sats:satsEnd]...)
	for _, io := range r.IO {
		n, ok := namedIO(io.ID)
		if !ok || io.Size == 0 {
			continue
		}
		dst = append(dst, ',', '"')
		dst = append(dst, n.key...)
		dst = append(dst, '"', ':')
		switch n.kind {
		case kindBool:
			dst = strconv.AppendBool(dst, io.Value != 0)
		case kindSigned:
			dst = appendDecimal(dst, io.Signed(), n.scale)
		default:
			dst = appendUDecimal(dst, io.Value, n.scale)
		}
	}
	dst = append(dst, `,"io":{`...)
	for i, io := range r.IO {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = appendDec(dst, uint64(io.ID))
		dst = append(dst, '"', ':')
		if io.Size == 0 {
			dst = append(dst, '"')
			dst = appendHex(dst, io.Raw)
			dst = append(dst, '"')
		} else {
			dst = appendDec(dst, io.Value)
		}
	}
	return append(dst, "}}"...)
}

// JSONSizeHint is about the size of r's AppendJSON rendering (rarely less), to size a buffer.
func JSONSizeHint(r *Record) int {
	n := 320
	for _, io := range r.IO {
		if io.Size == 0 {
			n += 8 + 2*len(io.Raw)
		} else {
			n += 36
		}
	}
	return n
}

// appendTime appends t in UTC as RFC 3339 with milliseconds ("2019-06-10T10:04:46.000Z"), as
// t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00") does, through the envelope's
// digit-by-digit writer (AppendFormat's layout interpretation costs more than the rest of a
// record's numbers).
func appendTime(dst []byte, t time.Time) []byte {
	return envelope.AppendTimestamp(dst, t.UnixMilli())
}

// appendDec appends v in decimal: up to four digits byte by byte (most of a record's numbers;
// strconv's copy of its digits costs more than writing them), beyond through strconv.
func appendDec(dst []byte, v uint64) []byte {
	switch {
	case v < 10:
		return append(dst, byte('0'+v))
	case v < 100:
		return append(dst, byte('0'+v/10), byte('0'+v%10))
	case v < 1000:
		return append(dst, byte('0'+v/100), byte('0'+v/10%10), byte('0'+v%10))
	case v < 10000:
		return append(dst, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
	}
	return strconv.AppendUint(dst, v, 10)
}

// appendDecimal appends v × 10^-scale exactly: the integer part, then the fraction's digits
// without trailing zeros (none if it is zero).
func appendDecimal(dst []byte, v int64, scale int) []byte {
	if v < 0 {
		dst = append(dst, '-')
		return appendUDecimal(dst, uint64(-(v+1))+1, scale) // -MinInt64 without overflow
	}
	return appendUDecimal(dst, uint64(v), scale)
}

func appendUDecimal(dst []byte, v uint64, scale int) []byte {
	if scale == 0 {
		return appendDec(dst, v)
	}
	p := uint64(1)
	for range scale {
		p *= 10
	}
	dst = appendDec(dst, v/p)
	frac := v % p
	if frac == 0 {
		return dst
	}
	digits := scale
	for frac%10 == 0 {
		frac /= 10
		digits--
	}
	dst = append(dst, '.')
	// digits digits of frac, leading zeros included, written from the right.
	n := len(dst)
	for range digits {
		dst = append(dst, '0')
	}
	for i := len(dst) - 1; i >= n && frac > 0; i-- {
		dst[i] = byte('0' + frac%10)
		frac /= 10
	}
	return dst
}

const hexDigits = "0123456789abcdef"

func appendHex(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
	}
	return dst
}
