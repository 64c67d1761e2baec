package store

import "encoding/binary"

// Checkpoint value, version 1: version byte, then until the end of the value
// pairs of (device: uvarint length + bytes, last seq: uvarint). Applying a
// checkpoint takes the maximum per device, so checkpoints can be replayed in
// any order and overlap freely. Version 2 adds windows to the entries of
// devices that store windowed frames (see window.go).
const checkpointVersion = 1

// checkpointEntryOverhead bounds the bytes of one entry beyond the name.
const checkpointEntryOverhead = 2*binary.MaxVarintLen64 + 2

func appendCheckpointEntry(dst []byte, device string, seq uint64) []byte {
	dst = appendString(dst, device)
	return binary.AppendUvarint(dst, seq)
}

// decodeCheckpoint calls fn for every entry of a checkpoint value of either
// version, with the device's last seq; windows are left out (see
// decodeCheckpointWindows). The name passed to fn is only valid during the call.
func decodeCheckpoint(data []byte, fn func(device []byte, seq uint64)) error {
	return decodeCheckpointWindows(data, func(device []byte, seq uint64, _ *ckWindow) { fn(device, seq) })
}
