package store

// Forgetting devices. The store keeps a small state for every device that ever stored a frame
// (its last seq, the delivered watermark, the window of a UDP device: ≈400 bytes), in memory
// and in the checkpoints, so that resends are recognised across reconnects and restarts. For
// identities nobody registered, which any client can make up by the million, the caller may
// give that up once it no longer expects one back: Forget drops the state of a device that has
// nothing left to deliver, and the next checkpoint snapshot (snapshot.go) leaves it out on disk
// too. A forgotten device that comes back starts from last seq 0: what it resends of what was
// stored before is stored again.
//
// Frames of the device in resident segments that are done (waiting for their segment to retire)
// keep pointing to the dropped state; retiring them writes a checkpoint entry from it, which
// merges by maximum like any other and goes with the next snapshot. The count of devices with a
// window (committer-owned) is not lowered: it only chooses the snapshot's version.

// Forget drops the state of device if it has nothing pending: every stored frame delivered (or
// without routes), none cold, no windowed frame in delivery. It reports whether it did. The
// caller must not append frames of the device concurrently with Forget, nor have any on their
// way to the store. Safe for concurrent use.
func (s *Store) Forget(device string) bool {
	s.state.Lock()
	defer s.state.Unlock()
	d := s.devices[device]
	if d == nil {
		return true
	}
	if d.head < len(d.pending) || d.cold > 0 || d.watermark() != d.lastSeq || (d.win != nil && d.win.anyPending()) {
		return false
	}
	delete(s.devices, device)
	s.deviceBytes -= int64(len(device) + checkpointEntryOverhead)
	if d.win != nil {
		s.deviceBytes -= windowEntryMax
	}
	return true
}

// anyPending reports whether a windowed frame of the window is still in delivery.
func (w *window) anyPending() bool {
	for _, p := range w.pend {
		if p != 0 {
			return true
		}
	}
	return false
}
