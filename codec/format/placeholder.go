package format

import "sort"

// builtin identifies what a placeholder stands for.
type builtin uint8

const (
	bNone builtin = iota

	// Message metadata.
	bDevice
	bSerial
	bIMEI
	bICCID
	bCustom1
	bCustom2
	bCustom3
	bAccount
	bTags
	bGroups
	bSeq
	bIndex
	bAttempt
	bMsgID
	bReceivedAt // RFC 3339 string
	bReceived   // Unix ms
	bKind
	bTaskID
	bResultCode

	// Read from the record.
	bData         // the record, or with a path one of its values
	bResultData   // the record of a command result, null for data
	bField        // a BeWhere name: the record's top-level field of the same name
	bTimestamp    // the record's "timestamp" as Unix ms, else the receive time
	bTimestampSec // … in seconds
	bGPSTime      // the record's "gpsTimestamp" as Unix ms, else null
	bGPSTimeSec   // … in seconds
	bBattery      // battery_capacity_counter, else batteryLevel as "87%"
	bSim          // the record's "sim", else the ICCID
)

// readsRecord reports whether the placeholder needs the record scanned.
func (b builtin) readsRecord() bool { return b >= bData }

// builtins maps every built-in placeholder name (without $$) to what it stands for. The names
// of the BeWhere payloads (BeWhere's push spec) that are plain record fields map to bField.
var builtins = map[string]builtin{
	"device": bDevice, "serial": bSerial, "serialNumber": bSerial, "imei": bIMEI, "iccid": bICCID,
	"custom1": bCustom1, "custom2": bCustom2, "custom3": bCustom3, "account": bAccount,
	"tags": bTags, "groups": bGroups, "seq": bSeq, "index": bIndex, "attempt": bAttempt,
	"msgId": bMsgID, "receivedAt": bReceivedAt, "received": bReceived,
	"kind": bKind, "taskId": bTaskID, "resultCode": bResultCode, "resultData": bResultData,
	"data":      bData,
	"timestamp": bTimestamp, "timestamp_seconds": bTimestampSec,
	"gpsTimestamp": bGPSTime, "gpsTimestamp_seconds": bGPSTimeSec,
	"battery_capacity_counter": bBattery, "sim": bSim,

	// BeWhere sensor, network and device names read from the record as they are.
	"eventType": bField, "direction": bField, "navStat": bField, "mnc": bField, "speed": bField,
	"impact": bField, "rsrp": bField, "temperature": bField, "altitude": bField,
	"latitude": bField, "longitude": bField, "batteryLevel": bField,
	"aux1": bField, "aux2": bField, "aux3": bField, "aux4": bField, "aux1_json": bField,
	"urat": bField, "hdop": bField, "mcc": bField, "lac": bField, "cid": bField,
	"pressure": bField, "locationSource": bField, "location": bField, "numSvs": bField,
	"light": bField, "humidity": bField, "imsi": bField, "odometer": bField,
	"totalRuntime": bField, "networkLatitude": bField, "networkLongitude": bField,
	"networkAccuracy": bField, "sender": bField, "version": bField, "name": bField,
	"sidSender": bField,
}

// Placeholders returns the built-in placeholder names, without $$, sorted. Besides these, a
// template may use $$data.<path> for any field of the record.
func Placeholders() []string {
	out := make([]string, 0, len(builtins))
	for n := range builtins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// nameStart and nameByte are the bytes a placeholder name starts with and is made of; a path
// segment after $$data may also hold '-'.
func nameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func nameByte(c byte) bool  { return nameStart(c) || c >= '0' && c <= '9' }
func segByte(c byte) bool   { return nameByte(c) || c == '-' }

// scanPlaceholder returns the length of the placeholder name at the start of s (just after
// the "$$"), and the length of its name without a $$data path: 0, 0 if none starts there.
func scanPlaceholder(s []byte) (n, name int) {
	if len(s) == 0 || !nameStart(s[0]) {
		return 0, 0
	}
	n = 1
	for n < len(s) && nameByte(s[n]) {
		n++
	}
	name = n
	if string(s[:n]) != "data" {
		return n, name
	}
	for n+1 < len(s) && s[n] == '.' && segByte(s[n+1]) {
		n += 2
		for n < len(s) && segByte(s[n]) {
			n++
		}
	}
	return n, name
}
