package store

import (
	"encoding/binary"
	"fmt"
)

// Checkpoint value, version 1: version byte, then until the end of the value
// pairs of (device: uvarint length + bytes, last seq: uvarint). Applying a
// checkpoint takes the maximum per device, so checkpoints can be replayed in
// any order and overlap freely.
const checkpointVersion = 1

// checkpointEntryOverhead bounds the bytes of one entry beyond the name.
const checkpointEntryOverhead = 2*binary.MaxVarintLen64 + 2

func appendCheckpointEntry(dst []byte, device string, seq uint64) []byte {
	dst = appendString(dst, device)
	return binary.AppendUvarint(dst, seq)
}

// decodeCheckpoint calls fn for every entry. The name passed to fn is only
// valid during the call.
func decodeCheckpoint(data []byte, fn func(device []byte, seq uint64)) error {
	if len(data) == 0 {
		return fmt.Errorf("checkpoint: empty: %w", ErrCorrupt)
	}
	if data[0] != checkpointVersion {
		return fmt.Errorf("checkpoint: version %d: %w", data[0], ErrVersion)
	}
	d := decoder{b: data, p: 1}
	for d.left() > 0 {
		name := d.bytes(d.uvarint())
		seq := d.uvarint()
		if d.err != nil {
			return fmt.Errorf("checkpoint: %w", ErrCorrupt)
		}
		fn(name, seq)
	}
	return nil
}
