package store

// EncodeDeadLetter returns d's encoding as the store keeps a dead letter (why, attempts, the
// records and a copy of their frames), for a dead-letter list kept elsewhere (cluster mode keeps
// it in a JetStream stream). d.ID and d.Route are not part of it: the list's key holds them.
func EncodeDeadLetter(d *DeadLetter) []byte { return encodeDeadLetter(d) }

// DecodeDeadLetter decodes an EncodeDeadLetter encoding, giving it route and id. Malformed input
// yields an error wrapping ErrCorrupt or ErrVersion.
func DecodeDeadLetter(route uint16, id uint64, v []byte) (*DeadLetter, error) {
	return decodeDeadLetter(route, id, v)
}
