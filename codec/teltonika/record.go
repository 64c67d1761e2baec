package teltonika

import (
	"encoding/binary"
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

// cursor reads big-endian fields from b; a read past the end sets bad and returns 0.
type cursor struct {
	b   []byte
	i   int
	bad bool
}

func (c *cursor) take(n int) []byte {
	if c.bad || n > len(c.b)-c.i {
		c.bad = true
		return nil
	}
	s := c.b[c.i : c.i+n]
	c.i += n
	return s
}

func (c *cursor) u8() uint8 {
	if s := c.take(1); s != nil {
		return s[0]
	}
	return 0
}

func (c *cursor) uint(n int) uint64 {
	s := c.take(n)
	if s == nil {
		return 0
	}
	switch n {
	case 1:
		return uint64(s[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(s))
	case 4:
		return uint64(binary.BigEndian.Uint32(s))
	case 8:
		return binary.BigEndian.Uint64(s)
	}
	return 0
}

var ioSizes = [4]uint8{1, 2, 4, 8}

// walk decodes n records from c in the codec's layout. With recs == nil it only checks them
// and counts their IO elements; otherwise it fills recs[:n], slicing their IO from ios.
func walk(c *cursor, codec byte, l layout, n int, recs []Record, ios []IO) (nio int) {
	for r := 0; r < n && !c.bad; r++ {
		var rec Record
		ms := c.uint(8)
		if recs != nil {
			rec.Time = time.UnixMilli(int64(ms)).UTC()
		}
		rec.Priority = c.u8()
		rec.Lon = int32(c.uint(4))
		rec.Lat = int32(c.uint(4))
		rec.Alt = int16(c.uint(2))
		rec.Angle = uint16(c.uint(2))
		rec.Satellites = c.u8()
		rec.Speed = uint16(c.uint(2))
		rec.EventID = uint16(c.uint(l.event))
		if l.generation {
			rec.Generation = c.u8()
		}
		rec.Codec = codec
		c.uint(l.count) // the total, not checked (see the package documentation)
		start := nio
		for _, size := range ioSizes {
			k := int(c.uint(l.count))
			for ; k > 0 && !c.bad; k-- {
				id := uint16(c.uint(l.id))
				v := c.uint(int(size))
				if recs != nil && !c.bad {
					ios[nio] = IO{ID: id, Size: size, Value: v}
				}
				nio++
			}
		}
		if l.nx {
			k := int(c.uint(l.count))
			for ; k > 0 && !c.bad; k-- {
				id := uint16(c.uint(2))
				raw := c.take(int(c.uint(2)))
				if recs != nil && !c.bad {
					ios[nio] = IO{ID: id, Raw: raw}
				}
				nio++
			}
		}
		if recs != nil && !c.bad {
			if nio > start {
				rec.IO = ios[start:nio:nio]
			}
			recs[r] = rec
		}
	}
	return nio
}

// parseData decodes codec id … second count.
func parseData(data []byte) (Packet, error) {
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
	c := cursor{b: body}
	nio := walk(&c, codec, l, n, nil, nil)
	if c.bad {
		return Packet{}, ErrTruncated
	}
	if c.i != len(body) {
		return Packet{}, ErrLength
	}
	p := Packet{Codec: codec, Records: make([]Record, n)}
	var ios []IO
	if nio > 0 {
		ios = make([]IO, nio)
	}
	c = cursor{b: body}
	walk(&c, codec, l, n, p.Records, ios)
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
