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

// sensorPayload is a SENSORO-like multi-sensor reading (seeds/001): ≈200 bytes.
type sensorPayload struct{}

func (sensorPayload) Append(dst []byte, _ string, seq uint64, _ int, now time.Time, rnd *rand.Rand) []byte {
	dst = append(dst, `{"sentAt":`...)
	dst = strconv.AppendInt(dst, now.UnixMicro(), 10)
	dst = append(dst, `,"battery":`...)
	dst = strconv.AppendInt(dst, int64(100-seq%100), 10)
	dst = append(dst, `,"interval":60,"temperature":`...)
	dst = strconv.AppendFloat(dst, 15+rnd.Float64()*15, 'f', 2, 64)
	dst = append(dst, `,"humidity":`...)
	dst = strconv.AppendFloat(dst, 30+rnd.Float64()*40, 'f', 1, 64)
	dst = append(dst, `,"light":`...)
	dst = strconv.AppendFloat(dst, rnd.Float64()*1000, 'f', 1, 64)
	dst = append(dst, `,"magnetic":{"x":`...)
	dst = strconv.AppendFloat(dst, rnd.Float64()*2-1, 'f', 3, 64)
	dst = append(dst, `,"y":`...)
	dst = strconv.AppendFloat(dst, rnd.Float64()*2-1, 'f', 3, 64)
	dst = append(dst, `,"z":`...)
	dst = strconv.AppendFloat(dst, rnd.Float64()*2-1, 'f', 3, 64)
	dst = append(dst, `},"lonlat":[`...)
	dst = strconv.AppendFloat(dst, 4.8+rnd.Float64()*0.2, 'f', 6, 64)
	dst = append(dst, ',')
	dst = strconv.AppendFloat(dst, 52.3+rnd.Float64()*0.1, 'f', 6, 64)
	return append(dst, `],"customer":"loadgen"}`...)
}

// gpsPayload is a GPS tracker position (the sensorData fields of seeds/002): ≈200 bytes.
type gpsPayload struct{}

func (gpsPayload) Append(dst []byte, _ string, seq uint64, _ int, now time.Time, rnd *rand.Rand) []byte {
	dst = append(dst, `{"sentAt":`...)
	dst = strconv.AppendInt(dst, now.UnixMicro(), 10)
	dst = append(dst, `,"eventType":"position","timestamp":`...)
	dst = strconv.AppendInt(dst, now.Unix(), 10)
	dst = append(dst, `,"latitude":`...)
	dst = strconv.AppendFloat(dst, 45+rnd.Float64(), 'f', 6, 64)
	dst = append(dst, `,"longitude":`...)
	dst = strconv.AppendFloat(dst, -75+rnd.Float64(), 'f', 6, 64)
	dst = append(dst, `,"speed":`...)
	dst = strconv.AppendFloat(dst, rnd.Float64()*120, 'f', 1, 64)
	dst = append(dst, `,"direction":`...)
	dst = strconv.AppendInt(dst, int64(rnd.IntN(360)), 10)
	dst = append(dst, `,"altitude":`...)
	dst = strconv.AppendFloat(dst, rnd.Float64()*300, 'f', 1, 64)
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
