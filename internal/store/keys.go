package store

import "encoding/binary"

// Key prefixes; see the package documentation for the layout. Also d/ and q/ (deadletter.go),
// c/ (resident.go) and g/ (registry.go).
var (
	prefixSegment    = []byte("j/")
	prefixBitmap     = []byte("r/")
	prefixCheckpoint = []byte("s/")
	prefixRouteName  = []byte("n/")
	prefixPad        = []byte("p/")
	keyFormat        = []byte("m/format")
	keyMaxSegment    = []byte("m/seg")
)

const formatVersion = 1

const (
	segKeyLen    = 2 + 8
	bitmapKeyLen = 2 + 2 + 1 + 8
	ckKeyLen     = 2 + 8
	padKeyLen    = 2 + 4
)

func appendSegKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixSegment...), id)
}

func appendBitmapKey(dst []byte, route uint16, seg uint64) []byte {
	dst = binary.BigEndian.AppendUint16(append(dst, prefixBitmap...), route)
	return binary.BigEndian.AppendUint64(append(dst, '/'), seg)
}

func appendCheckpointKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixCheckpoint...), id)
}

func appendPadKey(dst []byte, i uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, prefixPad...), i)
}

func routeNameKey(name string) []byte {
	return append(append([]byte(nil), prefixRouteName...), name...)
}

// parseBitmapKey splits an r/ key; ok is false for a malformed key.
func parseBitmapKey(k []byte) (route uint16, seg uint64, ok bool) {
	if len(k) != bitmapKeyLen || k[4] != '/' {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(k[2:4]), binary.BigEndian.Uint64(k[5:]), true
}

// parseIDKey returns the u64 ID of a j/ or s/ key.
func parseIDKey(k []byte) (uint64, bool) {
	if len(k) != 10 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[2:]), true
}

func appendU64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }
