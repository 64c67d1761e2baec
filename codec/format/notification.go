package format

import (
	"strconv"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// NameNotification is the notification format (the HTTPS forwarding spec's notification messages): the format of
// a route with notifications: true, which receives KindNotification messages only.
const NameNotification = "notification"

// notification renders a notification message: the stored object
//
//	{"hashId":"…","environmentHashId":"…","observations":[…]}
//
// with the two fields known only when it is sent appended,
//
//	{"hashId":"…","environmentHashId":"…","observations":[…],"generatedAt":"<ISO 8601>","attempt":<n>}
//
// generatedAt is when the relay generated the message (Message.ReceivedAt: when it stored it),
// in UTC with milliseconds, and attempt the delivery attempt (0-based). A message of another kind
// (which a notification route never receives) is rendered as the envelope.
type notification struct{}

var _ Format = notification{}

var notificationFormat Format = notification{}

func (notification) Name() string { return NameNotification }
func (notification) Body() Body   { return BodyJSONArray }

func (notification) Append(dst []byte, m *Message) []byte {
	if m.Kind != KindNotification {
		return envelopeFormat.Append(dst, m)
	}
	obj := trimObjectEnd(m.Data)
	if obj == nil {
		dst = append(dst, '{')
	} else {
		dst = append(dst, obj...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"generatedAt":"`...)
	dst = AppendISOTime(dst, m.ReceivedAt)
	dst = append(dst, `","attempt":`...)
	dst = strconv.AppendInt(dst, int64(m.Attempt), 10)
	return append(dst, '}')
}

func (notification) SizeHint(m *Message) int {
	if m.Kind != KindNotification {
		return envelopeFormat.SizeHint(m)
	}
	return len(m.Data) + len(`,"generatedAt":"2006-01-02T15:04:05.000Z","attempt":}`) + 20
}

// trimObjectEnd returns the JSON object data without its closing brace (and the whitespace
// around it), nil if data is not an object or an empty one.
func trimObjectEnd(data []byte) []byte {
	i := len(data) - 1
	for i >= 0 && isSpace(data[i]) {
		i--
	}
	if i < 1 || data[i] != '}' {
		return nil
	}
	i--
	for i >= 0 && isSpace(data[i]) {
		i--
	}
	if i < 0 || data[i] == '{' {
		return nil
	}
	return data[:i+1]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// AppendISOTime appends the Unix milliseconds ms as the HTTPS forwarding spec writes times, ISO 8601 in UTC
// with milliseconds: 2023-01-01T00:00:00.000Z.
func AppendISOTime(dst []byte, ms int64) []byte {
	return time.UnixMilli(ms).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
}

// Notification is a notification message as the relay stores it, before generatedAt and
// attempt: what AppendNotification encodes into a KindNotification message's Data.
type Notification struct {
	HashID       string // the notification event's id
	Environment  string // environmentHashId: the account of the devices ("": null)
	Observations []Observation
}

// Observation is one change of a notification message: a device added, updated or deleted.
type Observation struct {
	HashID    string // the observation's id, unique
	Action    string // "add", "update" or "delete"
	Device    string // the device's identifier
	CreatedAt int64  // Unix milliseconds: when the device was created
	UpdatedAt int64  // Unix milliseconds: when it last changed (this change)
	DeletedAt int64  // Unix milliseconds: when it was deleted; 0: null
}

// AppendNotification appends n as the JSON object a KindNotification message carries:
//
//	{"hashId":"…","environmentHashId":"…","observations":[{"hashId":"…","object":"device",
//	"action":"add","device":{"identifier":"…"},"createdAt":"…","updatedAt":"…","deletedAt":null}]}
func AppendNotification(dst []byte, n *Notification) []byte {
	dst = append(dst, `{"hashId":`...)
	dst = appendQuoted(dst, n.HashID)
	dst = append(dst, `,"environmentHashId":`...)
	if n.Environment == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendQuoted(dst, n.Environment)
	}
	dst = append(dst, `,"observations":[`...)
	for i := range n.Observations {
		o := &n.Observations[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"hashId":`...)
		dst = appendQuoted(dst, o.HashID)
		dst = append(dst, `,"object":"device","action":`...)
		dst = appendQuoted(dst, o.Action)
		dst = append(dst, `,"device":{"identifier":`...)
		dst = appendQuoted(dst, o.Device)
		dst = append(dst, `},"createdAt":"`...)
		dst = AppendISOTime(dst, o.CreatedAt)
		dst = append(dst, `","updatedAt":"`...)
		dst = AppendISOTime(dst, o.UpdatedAt)
		dst = append(dst, `","deletedAt":`...)
		if o.DeletedAt == 0 {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, '"')
			dst = AppendISOTime(dst, o.DeletedAt)
			dst = append(dst, '"')
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = jsontext.AppendEscaped(dst, s)
	return append(dst, '"')
}
