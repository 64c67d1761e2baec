package format

import (
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
)

// measurement is the measurement message of the HTTPS forwarding spec: one report per message, one observation
// per numeric value of the record.
type measurement struct{}

var _ Format = measurement{}

func (measurement) Name() string { return NameMeasurement }
func (measurement) Body() Body   { return BodyJSONArray }

// How a record member is observed.
const (
	obsNone   uint8 = iota // not a measurement: goes to "fields"
	obsNumber              // a number: one observation
	obsArray               // an array of numbers: one observation per element (channelIndex)
	obsObject              // an object of numbers: one observation per member ("key.member")
	obsSkip                // neither (a result's own taskId/resultCode, which "fields" has already)
)

// observeAs classifies a record member's value.
func observeAs(v []byte) uint8 {
	switch {
	case isNumber(v):
		return obsNumber
	case v[0] != '[' && v[0] != '{':
		return obsNone
	}
	var s elementScan
	var el member
	s.init(v)
	n := 0
	for s.next(&el) {
		if !isNumber(el.val) {
			return obsNone
		}
		n++
	}
	switch {
	case n == 0:
		return obsNone
	case v[0] == '[':
		return obsArray
	}
	return obsObject
}

// measurementDepth is the number of containers around a record's top-level values in a
// measurement batch: the batch array, the report, and "fields".
const measurementDepth = 3

func (measurement) Append(dst []byte, m *Message) []byte {
	var buf [32]member
	members := buf[:0]
	var scan objectScan
	scan.init(m.Data, measurementDepth-1)
	var mb member
	for scan.next(&mb) {
		members = append(members, mb)
	}
	if !scan.ok() {
		members = members[:0]
	}
	// The report's time: the record's "timestamp" (the last one that reads as a time), else the
	// time the relay received it. A timestamp used so is not also a measurement.
	at, timeAt := m.ReceivedAt, -1
	for i := range members {
		mb := &members[i]
		if mb.keyIs("timestamp") {
			if ms, ok := parseTime(mb.val); ok {
				at, timeAt = ms, i
			}
		}
	}
	result := m.Kind == KindResult
	for i := range members {
		mb := &members[i]
		switch {
		case i == timeAt:
			mb.obs = obsNone
		case result && (mb.keyIs("taskId") || mb.keyIs("resultCode")):
			mb.obs = obsSkip
		default:
			mb.obs = observeAs(mb.val)
		}
	}
	var tsBuf [40]byte
	ts := envelope.AppendTimestamp(tsBuf[:0], at)

	dst = append(dst, `{"hashId":"`...)
	dst = appendMsgID(dst, m)
	dst = append(dst, `","environmentHashId":`...)
	dst = appendStringOrNull(dst, m.Account)
	dst = append(dst, `,"connectivityEnvironmentReportTypeHashId":null,"monitoringEnvironmentReportTypeHashId":null,"observations":[`...)
	first := true
	for i := range members {
		mb := &members[i]
		switch mb.obs {
		case obsNumber:
			dst = appendObservation(dst, &first, mb.key, nil, 0, mb.val, ts)
		case obsArray, obsObject:
			var s elementScan
			var el member
			s.init(mb.val)
			for ch := 0; s.next(&el); ch++ {
				if mb.obs == obsArray {
					dst = appendObservation(dst, &first, mb.key, nil, ch, el.val, ts)
				} else {
					dst = appendObservation(dst, &first, mb.key, el.key, 0, el.val, ts)
				}
			}
		}
	}
	dst = append(dst, `],"deviceHashId":`...)
	dst = appendStringOrNull(dst, m.device())
	dst = append(dst, `,"deviceIdentifier":`...)
	dst = appendStringOrNull(dst, m.sn())
	dst = append(dst, `,"deviceFields":{`...)
	n := len(dst)
	dst = appendDeviceField(dst, n, "serial", m.Serial)
	dst = appendDeviceField(dst, n, "imei", m.IMEI)
	dst = appendDeviceField(dst, n, "iccid", m.ICCID)
	dst = appendDeviceField(dst, n, "custom1", m.custom(0))
	dst = appendDeviceField(dst, n, "custom2", m.custom(1))
	dst = appendDeviceField(dst, n, "custom3", m.custom(2))
	if len(m.Tags) > 0 {
		if len(dst) > n {
			dst = append(dst, ',')
		}
		dst = appendStrings(append(dst, `"tags":`...), m.Tags)
	}
	if len(m.Groups) > 0 {
		if len(dst) > n {
			dst = append(dst, ',')
		}
		dst = appendStrings(append(dst, `"groups":`...), m.Groups)
	}
	dst = append(dst, `},"fields":{`...)
	n = len(dst)
	if result {
		dst = append(dst, `"taskId":`...)
		dst = appendString(dst, m.TaskID)
		dst = append(dst, `,"resultCode":`...)
		dst = strconv.AppendInt(dst, int64(m.ResultCode), 10)
	}
	for i := range members {
		mb := &members[i]
		if mb.obs != obsNone {
			continue
		}
		if len(dst) > n {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, mb.key...)
		dst = append(dst, `":`...)
		dst = append(dst, mb.val...)
	}
	dst = append(dst, `},"locationHashId":null,"locationFields":{},"userHashId":null,"generatedAt":"`...)
	dst = append(dst, ts...)
	dst = append(dst, `","createdAt":"`...)
	dst = envelope.AppendTimestamp(dst, m.ReceivedAt)
	dst = append(dst, `","attempt":`...)
	dst = strconv.AppendInt(dst, int64(m.Attempt), 10)
	return append(dst, '}')
}

// appendDeviceField appends "name":"value" to the deviceFields object that starts at dst[n:],
// unless value is empty.
func appendDeviceField(dst []byte, n int, name, value string) []byte {
	if value == "" {
		return dst
	}
	if len(dst) > n {
		dst = append(dst, ',')
	}
	dst = append(append(append(dst, '"'), name...), `":`...)
	return appendString(dst, value)
}

// appendObservation appends one observation of the number v: the quantity is the member's key
// (raw JSON string body), followed by "." and sub when sub is not nil.
func appendObservation(dst []byte, first *bool, key, sub []byte, channel int, v, ts []byte) []byte {
	d, ok := parseDecimal(v)
	if !ok {
		return dst
	}
	if !*first {
		dst = append(dst, ',')
	}
	*first = false
	dst = append(dst, `{"connectivityEnvironmentQuantityHashId":"`...)
	q := len(dst)
	dst = append(dst, key...)
	if sub != nil {
		dst = append(append(dst, '.'), sub...)
	}
	qEnd := len(dst)
	dst = append(dst, `","monitoringEnvironmentQuantityHashId":"`...)
	dst = append(dst, dst[q:qEnd]...)
	dst = append(dst, `","portHashId":null,"channelIndex":`...)
	dst = strconv.AppendInt(dst, int64(channel), 10)
	dst = append(dst, `,"orderOfMagnitude":`...)
	dst = strconv.AppendInt(dst, int64(d.exp), 10)
	dst = append(dst, `,"significand":`...)
	if d.neg && d.sig != 0 {
		dst = append(dst, '-')
	}
	dst = strconv.AppendInt(dst, d.sig, 10)
	dst = append(dst, `,"formattedValue":"`...)
	dst = d.appendFormatted(dst)
	dst = append(dst, `","unit":null,"generatedAt":"`...)
	dst = append(dst, ts...)
	return append(dst, `","performance":1}`...)
}

// observationSize is roughly the length of one observation with a short quantity name.
const observationSize = 300

func (measurement) SizeHint(m *Message) int {
	// A ≈200-byte sensor record holds about one number per 15 bytes.
	return 450 + len(m.device())*2 + len(m.Account) + len(m.Data) + len(m.Data)/15*observationSize
}
