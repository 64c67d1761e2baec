package format

import (
	"fmt"
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/envelope"
	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// defaultEnvelope is codec/envelope's envelope, unchanged.
type defaultEnvelope struct{}

var _ Format = defaultEnvelope{}

func (defaultEnvelope) Name() string { return NameEnvelope }
func (defaultEnvelope) Body() Body   { return BodyJSONArray }

func (defaultEnvelope) Append(dst []byte, m *Message) []byte {
	bm := envelope.Message{Device: m.device(), Serial: m.Serial, IMEI: m.IMEI, ICCID: m.ICCID,
		Seq: m.Seq, Index: m.Index, ReceivedAt: m.ReceivedAt, Data: m.Data}
	return envelope.Append(dst, &bm, m.Attempt)
}

func (defaultEnvelope) SizeHint(m *Message) int {
	bm := envelope.Message{Device: m.device(), Serial: m.Serial, IMEI: m.IMEI, ICCID: m.ICCID,
		Seq: m.Seq, Index: m.Index, ReceivedAt: m.ReceivedAt, Data: m.Data}
	return envelope.Size(&bm)
}

// raw is the record as the device sent it.
type raw struct{}

var _ Format = raw{}

func (raw) Name() string                         { return NameRaw }
func (raw) Body() Body                           { return BodyJSONArray }
func (raw) Append(dst []byte, m *Message) []byte { return appendRecord(dst, m.Data) }
func (raw) SizeHint(m *Message) int              { return max(len(m.Data), len("null")) }

// SENSORO is the SENSORO webhook push format (SENSORO's webhook spec): sensor-data pushes for data messages,
// task events for command results. It is immutable and safe for concurrent use.
type SENSORO struct {
	appID      string // JSON-escaped, without quotes
	deviceType string // JSON-escaped, without quotes
}

var _ Format = (*SENSORO)(nil)

// NewSENSORO returns the sensoro format for an application id (required) and a device type
// (may be empty).
func NewSENSORO(appID, deviceType string) (*SENSORO, error) {
	if appID == "" {
		return nil, fmt.Errorf("%w: format sensoro needs app_id", ErrOption)
	}
	return &SENSORO{
		appID:      string(jsontext.AppendEscaped(nil, appID)),
		deviceType: string(jsontext.AppendEscaped(nil, deviceType)),
	}, nil
}

func (*SENSORO) Name() string { return NameSENSORO }
func (*SENSORO) Body() Body   { return BodyJSONArray }

// sn is SENSORO's end-device identifier: the serial, else the relay's identity.
func (m *Message) sn() string {
	if m.Serial != "" {
		return m.Serial
	}
	return m.device()
}

// Append renders a data message as
//
//	{"appId":"…","sn":"…","type":"text","deviceType":"…","createdTime":<ms>,"msgId":"…","data":{record}}
//
// and a command result as
//
//	{"appId":"…","sn":"…","taskId":"…","type":"event","createdTime":<ms>,"msgId":"…","resultCode":0,"resultData":{…}}
func (f *SENSORO) Append(dst []byte, m *Message) []byte {
	dst = append(dst, `{"appId":"`...)
	dst = append(dst, f.appID...)
	dst = append(dst, `","sn":"`...)
	dst = jsontext.AppendEscaped(dst, m.sn())
	if m.Kind == KindResult {
		dst = append(dst, `","taskId":"`...)
		dst = jsontext.AppendEscaped(dst, m.TaskID)
		dst = append(dst, `","type":"event","createdTime":`...)
	} else {
		dst = append(dst, `","type":"text","deviceType":"`...)
		dst = append(dst, f.deviceType...)
		dst = append(dst, `","createdTime":`...)
	}
	dst = strconv.AppendInt(dst, m.ReceivedAt, 10)
	dst = append(dst, `,"msgId":"`...)
	dst = appendMsgID(dst, m)
	if m.Kind == KindResult {
		dst = append(dst, `","resultCode":`...)
		dst = strconv.AppendInt(dst, int64(m.ResultCode), 10)
		dst = append(dst, `,"resultData":`...)
		if len(m.Data) == 0 {
			dst = append(dst, "{}"...)
		} else {
			dst = append(dst, m.Data...)
		}
		return append(dst, '}')
	}
	dst = append(dst, `","data":`...)
	dst = appendRecord(dst, m.Data)
	return append(dst, '}')
}

// sensoroFixed is the length of a data push without its variable parts.
const sensoroFixed = len(`{"appId":"","sn":"","type":"text","deviceType":"","createdTime":,"msgId":"--","data":}`)

func (f *SENSORO) SizeHint(m *Message) int {
	return sensoroFixed + len(f.appID) + len(f.deviceType) + len(m.sn()) + len(m.device()) + len(m.TaskID) +
		20 + 20 + 10 + max(len(m.Data), len("null"))
}
