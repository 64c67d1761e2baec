package store

// A notice (Frame.Notice) is a message of the relay's own rather than of a device: a
// notification message of the control plane (a device added, updated or deleted), routed only
// to the routes that take notifications. Like a command result it is outside every device's
// seq space: its Device names no device state (the relay puts the account there, so that one
// account's notices keep their order in a route), its Seq and PrevSeq are ignored, and storing
// or delivering it changes no LastSeq, DeliveredSeq or checkpoint. Its records are delivered and
// tracked per route like any other. A notice without routes or records is not stored at all.
//
// In a segment it is flag bit 4 (flagNotice), added without a version change: segments written
// before it never set it and decode unchanged; a store binary that predates it refuses a segment
// holding a notice (ErrCorrupt), so such a journal cannot be opened by an older relay.
const flagNotice = 1 << 4

// unsequenced reports whether f is outside the device's seq space: a command result or a
// notice.
func (f *Frame) unsequenced() bool { return f.Result || f.Notice }
