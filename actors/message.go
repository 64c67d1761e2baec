package actors

import (
	"strconv"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// messageOf sets *m to record ri of the stored frame f as a route renders it: the device's
// identity as stored, its place in the device's stream, when the relay received it, and the
// record. It overwrites all of *m, so the caller sets Attempt and the device's metadata
// (custom fields, tags, groups, account) afterwards. m.Data aliases f's record.
//
// A command result (f.Result) becomes a format.KindResult message: TaskID is the task in
// decimal, ResultCode the device's code, Data the result data. A result is not in the
// device's seq space, so its Seq is 0, which no DATA frame has (seqs start at 1), and its
// Index is the task (as an int: a task above MaxInt64 wraps to a negative index). The message
// id "<device>-0-<task>" is thus unique among the device's messages and stable across
// retries; a device that sends a result for the same task again gets the same id.
func messageOf(f *store.Frame, ri int, m *format.Message) {
	*m = format.Message{Device: f.Device, Serial: f.Serial, IMEI: f.IMEI, ICCID: f.ICCID,
		Seq: f.Seq, Index: ri, ReceivedAt: f.ReceivedAt, Data: f.Records[ri]}
	if f.Result {
		m.Kind = format.KindResult
		m.TaskID = strconv.FormatUint(f.Task, 10)
		m.ResultCode = int(f.Code)
		m.Seq, m.Index = 0, int(f.Task)
	}
	if f.Notice {
		m.Kind, m.Seq, m.Account = format.KindNotification, 0, f.Device // notify.go
	}
}
