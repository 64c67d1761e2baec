package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"
)

// Payload renders the records a simulated device sends. Every record carries "sentAt" (Unix
// microseconds) so the sink can measure end-to-end latency. Implementations are used by one
// device goroutine at a time.
type Payload interface {
	// Append appends one record (a JSON object) for device's frame seq, record index, sent at now.
	Append(dst []byte, device string, seq uint64, index int, now time.Time, rnd *rand.Rand) []byte
}

// NewPayload returns a built-in profile ("sensor", "gps") or a template read from a file.
func NewPayload(profile string) (Payload, error) {
	switch profile {
	case "", "sensor":
		return sensorPayload{}, nil
	case "gps":
		return gpsPayload{}, nil
	}
	b, err := os.ReadFile(profile)
	if err != nil {
		return nil, fmt.Errorf("payload %q: not a profile (sensor, gps) nor a readable template: %w", profile, err)
	}
	return ParseTemplate(b)
}

// sensorPayload is a SENSORO-like multi-sensor reading (SENSORO's webhook spec): ≈200 bytes.
type sensorPayload struct{}

func (sensorPayload) Append(dst []byte, _ string, seq uint64, _ int, now time.Time, rnd *rand.Rand) []byte {
	dst = append(dst, `{"sentAt":`...)
	dst = strconv.AppendInt(dst, now.UnixMicro(), 10)
	dst = append(dst, `,"battery":`...)
	dst = strconv.AppendInt(dst, int64(100-seq%100), 10)
	dst = append(dst, `,"interval":60,"temperature":`...)
	dst = appendFixed(dst, 1500+rnd.Int64N(1500), 2)
	dst = append(dst, `,"humidity":`...)
	dst = appendFixed(dst, 300+rnd.Int64N(400), 1)
	dst = append(dst, `,"light":`...)
	dst = appendFixed(dst, rnd.Int64N(10000), 1)
	dst = append(dst, `,"magnetic":{"x":`...)
	dst = appendFixed(dst, rnd.Int64N(2000)-1000, 3)
	dst = append(dst, `,"y":`...)
	dst = appendFixed(dst, rnd.Int64N(2000)-1000, 3)
	dst = append(dst, `,"z":`...)
	dst = appendFixed(dst, rnd.Int64N(2000)-1000, 3)
	dst = append(dst, `},"lonlat":[`...)
	dst = appendFixed(dst, 4800000+rnd.Int64N(200000), 6)
	dst = append(dst, ',')
	dst = appendFixed(dst, 52300000+rnd.Int64N(100000), 6)
	return append(dst, `],"customer":"loadgen"}`...)
}

// gpsPayload is a GPS tracker position (BeWhere's sensorData fields): ≈200 bytes.
type gpsPayload struct{}

func (gpsPayload) Append(dst []byte, _ string, seq uint64, _ int, now time.Time, rnd *rand.Rand) []byte {
	dst = append(dst, `{"sentAt":`...)
	dst = strconv.AppendInt(dst, now.UnixMicro(), 10)
	dst = append(dst, `,"eventType":"position","timestamp":`...)
	dst = strconv.AppendInt(dst, now.Unix(), 10)
	dst = append(dst, `,"latitude":`...)
	dst = appendFixed(dst, 45000000+rnd.Int64N(1000000), 6)
	dst = append(dst, `,"longitude":`...)
	dst = appendFixed(dst, -75000000+rnd.Int64N(1000000), 6)
	dst = append(dst, `,"speed":`...)
	dst = appendFixed(dst, rnd.Int64N(1200), 1)
	dst = append(dst, `,"direction":`...)
	dst = strconv.AppendInt(dst, int64(rnd.IntN(360)), 10)
	dst = append(dst, `,"altitude":`...)
	dst = appendFixed(dst, rnd.Int64N(3000), 1)
	dst = append(dst, `,"batteryLevel":`...)
	dst = strconv.AppendInt(dst, int64(100-seq%100), 10)
	dst = append(dst, `,"hdop":0.9,"numSvs":9,"rsrp":-95,"mcc":302,"mnc":720}`...)
	return dst
}

// templatePayload fills a JSON template: the strings "$sentAt", "$seq", "$index" (numbers) and
// "$device" (a string) are replaced, anywhere in the template.
type templatePayload struct{ parts [][]byte }

var placeholders = [][]byte{[]byte(`"$sentAt"`), []byte(`"$seq"`), []byte(`"$index"`), []byte(`"$device"`)}

// ParseTemplate compiles a record template; it must be a JSON object.
func ParseTemplate(b []byte) (Payload, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return nil, fmt.Errorf("payload template is not a JSON object")
	}
	if !bytes.Contains(b, placeholders[0]) {
		return nil, fmt.Errorf(`payload template lacks "$sentAt": the sink measures latency from it`)
	}
	var t templatePayload
	// parts alternate: literal, placeholder index as a 1-byte slice, literal, ...
	for len(b) > 0 {
		at, which := -1, -1
		for i, p := range placeholders {
			if j := bytes.Index(b, p); j >= 0 && (at < 0 || j < at) {
				at, which = j, i
			}
		}
		if at < 0 {
			t.parts = append(t.parts, b)
			break
		}
		t.parts = append(t.parts, b[:at], []byte{byte(which)})
		b = b[at+len(placeholders[which]):]
	}
	return &t, nil
}

func (t *templatePayload) Append(dst []byte, device string, seq uint64, index int, now time.Time, _ *rand.Rand) []byte {
	for i, p := range t.parts {
		if i%2 == 0 {
			dst = append(dst, p...)
			continue
		}
		switch p[0] {
		case 0:
			dst = strconv.AppendInt(dst, now.UnixMicro(), 10)
		case 1:
			dst = strconv.AppendUint(dst, seq, 10)
		case 2:
			dst = strconv.AppendInt(dst, int64(index), 10)
		case 3:
			dst = strconv.AppendQuote(dst, device)
		}
	}
	return dst
}

// appendFixed appends v/10^dec with dec decimals: the number strconv.AppendFloat(x, 'f', dec)
// would print, at a fraction of its cost (loadgen renders a few of these per record).
func appendFixed(dst []byte, v int64, dec int) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	p := int64(1)
	for range dec {
		p *= 10
	}
	dst = strconv.AppendInt(dst, v/p, 10)
	if dec == 0 {
		return dst
	}
	dst = append(dst, '.')
	f := v % p
	for p /= 10; p > 1 && f < p; p /= 10 {
		dst = append(dst, '0')
	}
	return strconv.AppendInt(dst, f, 10)
}
