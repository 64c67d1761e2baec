package store

import (
	"fmt"

	"github.com/klauspost/compress/s2"
)

// Segment values. A segment is stored compressed: the byte segmentS2
// followed by an S2 block (github.com/klauspost/compress/s2) of its encoding,
// unless that saves less than an eighth, in which case the value is the
// encoding itself (whose first byte is segmentVersion). The store compresses
// each segment once, on the committer goroutine: S2 ran at ≈800 MB/s here,
// ≈0.4 ms for a 330 KiB segment of sensor records, which it made 3.1 times
// smaller (Snappy: 420 MB/s, 3.7 times). With segments stored as they are,
// the relay under the load described at badgerOptions (2 runs each) ended
// the load with a data directory of 0.8 GB instead of 0.28 GB (the LSM
// tables of the previous settings, Snappy-compressed: 0.3 GB), and a peak
// RSS of 1.8 GB instead of 1.3–1.5 GB, most of the difference being mapped
// value-log files; relay CPU per message was the same within noise.
const segmentS2 = 0x80 | segmentVersion

// maxDecodedSegment bounds the decoded size of a compressed segment value,
// so a corrupt length cannot make the store allocate without limit.
const maxDecodedSegment = 64 << 20

// compressSegment writes into dst (grown as needed) the compressed value of
// the segment encoding seg and returns it; ok is false when compression
// would save less than an eighth, and then seg should be stored as is.
func compressSegment(dst, seg []byte) (out []byte, ok bool) {
	if len(seg) > maxDecodedSegment {
		return dst[:0], false
	}
	n := 1 + s2.MaxEncodedLen(len(seg))
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	dst[0] = segmentS2
	z := s2.Encode(dst[1:], seg)
	if len(z) > len(seg)-len(seg)/8 {
		return dst[:0], false
	}
	return dst[:1+len(z)], true
}

// segmentValue returns the segment encoding held by a stored value: v itself
// (decompressed false) or, for a compressed value, the decompressed encoding
// in scratch, grown as needed.
func segmentValue(id uint64, v, scratch []byte) (enc []byte, decompressed bool, err error) {
	if len(v) == 0 || v[0] != segmentS2 {
		return v, false, nil
	}
	n, err := s2.DecodedLen(v[1:])
	if err != nil || n > maxDecodedSegment {
		return nil, false, fmt.Errorf("segment %d: compressed block: %w", id, ErrCorrupt)
	}
	if cap(scratch) < n {
		scratch = make([]byte, n)
	}
	enc, err = s2.Decode(scratch[:n], v[1:])
	if err != nil {
		return nil, false, fmt.Errorf("segment %d: compressed block: %w", id, ErrCorrupt)
	}
	return enc, true, nil
}
