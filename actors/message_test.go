package actors

import (
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// A stored DATA frame and a stored result frame, through messageOf and the real formats.
func TestMessageOf(t *testing.T) {
	sensoro, err := format.Lookup(format.NameSENSORO, format.Options{AppID: "123456", DeviceType: "node"})
	if err != nil {
		t.Fatal(err)
	}
	envelope, err := format.Lookup(format.NameEnvelope, format.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := &store.Frame{Device: "SN1", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944", Seq: 7,
		ReceivedAt: 1700000000123, Records: [][]byte{[]byte(`{"a":1}`), []byte(`{"t":21.5}`)}}
	res := &store.Frame{Device: "SN1", Serial: "SN1", IMEI: "356307042441013", ICCID: "8944",
		ReceivedAt: 1700000000456, Result: true, Task: 42, Code: 1, Records: [][]byte{[]byte(`{"interval":60}`)}}

	for _, c := range []struct {
		f                 *store.Frame
		ri                int
		sensoro, envelope string
		kind              format.Kind
		task              string
		code, index       int
		seq               uint64
		stale             format.Message // what m held before: messageOf must overwrite all of it
	}{
		{f: data, ri: 1, kind: format.KindData, seq: 7, index: 1,
			stale: format.Message{Kind: format.KindResult, TaskID: "9", ResultCode: 1, Attempt: 3, Account: "x"},
			sensoro: `{"appId":"123456","sn":"SN1","type":"text","deviceType":"node","createdTime":1700000000123,` +
				`"msgId":"SN1-7-1","data":{"t":21.5}}`,
			envelope: `{"msgId":"SN1-7-1","serial":"SN1","imei":"356307042441013","iccid":"8944","seq":7,"index":1,` +
				`"receivedAt":"2023-11-14T22:13:20.123Z","attempt":0,"data":{"t":21.5}}`},
		{f: res, ri: 0, kind: format.KindResult, task: "42", code: 1, seq: 0, index: 42,
			stale: format.Message{Seq: 5, Index: 2, Attempt: 1, Tags: []string{"t"}},
			sensoro: `{"appId":"123456","sn":"SN1","taskId":"42","type":"event","createdTime":1700000000456,` +
				`"msgId":"SN1-0-42","resultCode":1,"resultData":{"interval":60}}`,
			envelope: `{"msgId":"SN1-0-42","serial":"SN1","imei":"356307042441013","iccid":"8944","seq":0,"index":42,` +
				`"receivedAt":"2023-11-14T22:13:20.456Z","attempt":0,"data":{"interval":60}}`},
	} {
		m := c.stale
		messageOf(c.f, c.ri, &m)
		if m.Kind != c.kind || m.TaskID != c.task || m.ResultCode != c.code || m.Seq != c.seq || m.Index != c.index ||
			m.Attempt != 0 || m.Account != "" || m.Tags != nil || string(m.Data) != string(c.f.Records[c.ri]) ||
			m.Device != "SN1" || m.IMEI != c.f.IMEI || m.ICCID != "8944" || m.ReceivedAt != c.f.ReceivedAt {
			t.Errorf("messageOf(%+v, %d) = %+v", c.f, c.ri, m)
		}
		if got := string(sensoro.Append(nil, &m)); got != c.sensoro {
			t.Errorf("sensoro:\n got %s\nwant %s", got, c.sensoro)
		}
		if got := string(envelope.Append(nil, &m)); got != c.envelope {
			t.Errorf("envelope:\n got %s\nwant %s", got, c.envelope)
		}
	}

	// Task IDs use the whole u64 range.
	big := *res
	big.Task = 1<<64 - 1
	var m format.Message
	messageOf(&big, 0, &m)
	if m.TaskID != "18446744073709551615" {
		t.Errorf("TaskID = %q, want the task in decimal", m.TaskID)
	}
}
