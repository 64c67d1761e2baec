package teltonika

import (
	"encoding/binary"
	"slices"
	"time"
)

// recordFixed is the size of a record's time, priority and GPS element.
const recordFixed = 8 + 1 + 15

// layout is the widths of a codec's IO element.
type layout struct {
	event, count, id int  // bytes of the event id, of each count, of each IO id
	generation, nx   bool // Codec 16's generation type; Codec 8 Extended's NX group
}

func layoutOf(codec byte) (layout, bool) {
	switch codec {
	case Codec8:
		return layout{event: 1, count: 1, id: 1}, true
	case Codec8E:
		return layout{event: 2, count: 2, id: 2, nx: true}, true
	case Codec16:
		return layout{event: 2, count: 1, id: 2, generation: true}, true
	}
	return layout{}, false
}

var ioSizes = [4]uint8{1, 2, 4, 8}

// count checks that n records in the codec's layout fill body exactly, and counts their IO
// elements, skipping each width group in one step.
func count(body []byte, l layout, n int) (nio int, err error) {
	i := 0
	// need reports whether k more bytes are there.
	need := func(k int) bool { return k <= len(body)-i }
	for range n {
		head := recordFixed + l.event + l.count // the fixed part, event id, generation, total
		if l.generation {
			head++
		}
		if !need(head) {
			return 0, ErrTruncated
		}
		i += head
		for _, size := range ioSizes {
			if !need(l.count) {
				return 0, ErrTruncated
			}
			k := readUint(body[i:], l.count)
			i += l.count
			if !need(int(k) * (l.id + int(size))) {
				return 0, ErrTruncated
			}
			i += int(k) * (l.id + int(size))
			nio += int(k)
		}
		if l.nx {
			if !need(l.count) {
				return 0, ErrTruncated
			}
			k := int(readUint(body[i:], l.count))
			i += l.count
			for range k {
				if !need(4) {
					return 0, ErrTruncated
				}
				vl := int(binary.BigEndian.Uint16(body[i+2:]))
				i += 4
				if !need(vl) {
					return 0, ErrTruncated
				}
				i += vl
			}
			nio += k
		}
	}
	if i != len(body) {
		return 0, ErrLength
	}
	return nio, nil
}

// readUint reads a big-endian integer of 1, 2, 4 or 8 bytes from the start of b.
func readUint(b []byte, n int) uint64 {
	switch n {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(b))
	case 4:
		return uint64(binary.BigEndian.Uint32(b))
	}
	return binary.BigEndian.Uint64(b)
}

// fill decodes n records from body, which count has checked, into recs, slicing their IO
// elements from ios (as many as count found).
func fill(body []byte, codec byte, l layout, recs []Record, ios []IO) {
	i, nio := 0, 0
	for r := range recs {
		b := body[i:]
		rec := &recs[r]
		rec.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(b))).UTC()
		rec.Priority = b[8]
		rec.Lon = int32(binary.BigEndian.Uint32(b[9:]))
		rec.Lat = int32(binary.BigEndian.Uint32(b[13:]))
		rec.Alt = int16(binary.BigEndian.Uint16(b[17:]))
		rec.Angle = binary.BigEndian.Uint16(b[19:])
		rec.Satellites = b[21]
		rec.Speed = binary.BigEndian.Uint16(b[22:])
		i += recordFixed
		rec.EventID = uint16(readUint(body[i:], l.event))
		i += l.event
		if l.generation {
			rec.Generation = body[i]
			i++
		}
		rec.Codec = codec
		i += l.count // the total, not checked (see the package documentation)
		start := nio
		for _, size := range ioSizes {
			k := int(readUint(body[i:], l.count))
			i += l.count
			for range k {
				ios[nio] = IO{ID: uint16(readUint(body[i:], l.id)), Size: size, Value: readUint(body[i+l.id:], int(size))}
				i += l.id + int(size)
				nio++
			}
		}
		if l.nx {
			k := int(readUint(body[i:], l.count))
			i += l.count
			for range k {
				vl := int(binary.BigEndian.Uint16(body[i+2:]))
				ios[nio] = IO{ID: binary.BigEndian.Uint16(body[i:]), Raw: body[i+4 : i+4+vl : i+4+vl]}
				i += 4 + vl
				nio++
			}
		}
		if nio > start {
			rec.IO = ios[start:nio:nio]
		}
	}
}

// parseData decodes codec id … second count, into ps's buffers if ps is not nil.
func parseData(data []byte, ps *Parser) (Packet, error) {
	if len(data) < minData {
		return Packet{}, ErrLength
	}
	codec := data[0]
	l, ok := layoutOf(codec)
	if !ok {
		return Packet{}, ErrCodec
	}
	n := int(data[1])
	if int(data[len(data)-1]) != n {
		return Packet{}, ErrCount
	}
	// Each record takes at least its fixed part: a count the data cannot hold is refused
	// before anything is allocated.
	if n*recordFixed > len(data)-minData {
		return Packet{}, ErrTruncated
	}
	body := data[2 : len(data)-1]
	nio, err := count(body, l, n)
	if err != nil {
		return Packet{}, err
	}
	p := Packet{Codec: codec}
	var ios []IO
	if ps != nil {
		ps.recs = slices.Grow(ps.recs[:0], n)[:n]
		clear(ps.recs)
		ps.ios = slices.Grow(ps.ios[:0], nio)[:nio]
		p.Records, ios = ps.recs, ps.ios
	} else {
		p.Records = make([]Record, n)
		if nio > 0 {
			ios = make([]IO, nio)
		}
	}
	fill(body, codec, l, p.Records, ios)
	return p, nil
}

// appendData appends codec id … second count. IO elements are written in their order within
// each width group (1, 2, 4, 8, then NX); ids and counts are truncated to the codec's widths,
// NX elements are written only in Codec 8 Extended (and skipped in the others), and a
// record's Generation only in Codec 16. A codec other than 8, 8E and 16 is written as
// Codec 8 with its own id, so tests can build packets in unknown codecs.
func appendData(dst []byte, codec byte, recs []Record) []byte {
	l, ok := layoutOf(codec)
	if !ok {
		l, _ = layoutOf(Codec8)
	}
	dst = append(dst, codec, byte(len(recs)))
	for i := range recs {
		r := &recs[i]
		dst = binary.BigEndian.AppendUint64(dst, uint64(r.Time.UnixMilli()))
		dst = append(dst, r.Priority)
		dst = binary.BigEndian.AppendUint32(dst, uint32(r.Lon))
		dst = binary.BigEndian.AppendUint32(dst, uint32(r.Lat))
		dst = binary.BigEndian.AppendUint16(dst, uint16(r.Alt))
		dst = binary.BigEndian.AppendUint16(dst, r.Angle)
		dst = append(dst, r.Satellites)
		dst = binary.BigEndian.AppendUint16(dst, r.Speed)
		dst = appendUint(dst, uint64(r.EventID), l.event)
		if l.generation {
			dst = append(dst, r.Generation)
		}
		total := 0
		for _, io := range r.IO {
			if io.Size != 0 || l.nx {
				total++
			}
		}
		dst = appendUint(dst, uint64(total), l.count)
		for _, size := range ioSizes {
			k := 0
			for _, io := range r.IO {
				if io.Size == size {
					k++
				}
			}
			dst = appendUint(dst, uint64(k), l.count)
			for _, io := range r.IO {
				if io.Size == size {
					dst = appendUint(dst, uint64(io.ID), l.id)
					dst = appendUint(dst, io.Value, int(size))
				}
			}
		}
		if l.nx {
			k := 0
			for _, io := range r.IO {
				if io.Size == 0 {
					k++
				}
			}
			dst = appendUint(dst, uint64(k), l.count)
			for _, io := range r.IO {
				if io.Size == 0 {
					dst = binary.BigEndian.AppendUint16(dst, io.ID)
					dst = binary.BigEndian.AppendUint16(dst, uint16(len(io.Raw)))
					dst = append(dst, io.Raw...)
				}
			}
		}
	}
	return append(dst, byte(len(recs)))
}

func appendUint(dst []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(v>>(8*i)))
	}
	return dst
}

// AppendTCP appends a whole TCP AVL frame (preamble, length, data, CRC) carrying recs in the
// codec (see the encoding rules of the data below). For simulated devices and tests.
func AppendTCP(dst []byte, codec byte, recs []Record) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst = appendData(dst, codec, recs)
	return finishFrame(dst, start)
}

// finishFrame fills in the length of the frame that starts at dst[start] and appends its CRC.
func finishFrame(dst []byte, start int) []byte {
	data := dst[start+HeaderLen:]
	binary.BigEndian.PutUint32(dst[start+4:], uint32(len(data)))
	return binary.BigEndian.AppendUint32(dst, uint32(CRC16(data)))
}
