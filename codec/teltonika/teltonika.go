package teltonika

import (
	"encoding/binary"
	"time"
)

// Codec ids.
const (
	Codec8  byte = 0x08 // 1-byte IO ids and counts
	Codec8E byte = 0x8E // Codec 8 Extended: 2-byte IO ids and counts, NX elements
	Codec16 byte = 0x10 // 2-byte IO ids, 1-byte counts, generation type
	Codec12 byte = 0x0C // GPRS commands and their responses
)

// Codec 12 frame types.
const (
	TypeCommand  byte = 0x05 // server → device
	TypeResponse byte = 0x06 // device → server
)

// Frame sizes.
const (
	// MaxPacket is the largest data length (codec id … second count) a TCP frame or UDP
	// datagram may carry: 64 KiB. An FMB device's AVL packet is at most 1,280 bytes and the
	// wiki's devices with larger buffers stay within a few KiB, but Codec 8 Extended NX
	// elements carry a u16 length (a single one may approach 64 KiB) and a Codec 12 response
	// can be long; a UDP datagram cannot exceed 64 KiB anyway. The limit bounds what one
	// connection may make the relay buffer, like the native protocol's default max_frame.
	MaxPacket = 64 << 10
	// HeaderLen is a TCP frame's preamble and data length; CRCLen its trailing CRC field.
	HeaderLen = 8
	CRCLen    = 4
	// IMEILen is the number of digits of an IMEI; IMEI handshakes are 2+IMEILen bytes.
	IMEILen = 15
	// AckLen is the size of a TCP ack, UDPAckLen of a UDP ack.
	AckLen    = 4
	UDPAckLen = 7
	// Ping is the byte a device sends alone on a TCP connection to keep it open.
	Ping byte = 0xFF
	// minData is the smallest data length: codec id and two record counts (no records).
	minData = 3
)

// IO is one IO element of a record: its AVL id, its width in bytes (1, 2, 4 or 8; 0 for an
// NX element of Codec 8 Extended), its value (big-endian, zero-extended) and, for NX only,
// its bytes (aliasing the decoded input).
type IO struct {
	ID    uint16
	Size  uint8
	Value uint64
	Raw   []byte
}

// Signed returns the value as a two's complement integer of the element's width (an NX
// element's Value is 0).
func (io IO) Signed() int64 {
	switch io.Size {
	case 1:
		return int64(int8(io.Value))
	case 2:
		return int64(int16(io.Value))
	case 4:
		return int64(int32(io.Value))
	}
	return int64(io.Value)
}

// Record is one AVL record.
type Record struct {
	Time       time.Time // UTC, millisecond precision
	Priority   uint8     // 0 low, 1 high, 2 panic
	Lon, Lat   int32     // 1e-7 degrees, signed
	Alt        int16     // metres above sea level, signed
	Angle      uint16    // degrees from north
	Satellites uint8
	Speed      uint16 // km/h
	EventID    uint16 // the IO id that triggered the record, 0 if none
	Generation uint8  // Codec 16 only: the generation type (0 on exit … 7 periodical)
	IO         []IO
	// Codec is the codec the record was decoded from (set by the parsers; the encoders take
	// the codec as an argument). AppendJSON renders Generation only for Codec 16.
	Codec byte
}

// Packet is the decoded data of one AVL frame or datagram.
type Packet struct {
	Codec   byte
	Records []Record
}

// ParseIMEI decodes the IMEI handshake at the start of b: u16 length (15) and 15 ASCII
// digits. It returns n == 0 and no error while b holds only part of it; a length other than
// 15 is refused as soon as its two bytes are there.
func ParseIMEI(b []byte) (imei string, n int, err error) {
	if len(b) < 2 {
		return "", 0, nil
	}
	if binary.BigEndian.Uint16(b) != IMEILen {
		return "", 0, ErrIMEI
	}
	if len(b) < 2+IMEILen {
		return "", 0, nil
	}
	d := b[2 : 2+IMEILen]
	if !digits(d) {
		return "", 0, ErrIMEI
	}
	return string(d), 2 + IMEILen, nil
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// AppendIMEI appends an IMEI handshake (u16 length, the IMEI's bytes) — for simulated devices.
func AppendIMEI(dst []byte, imei string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(imei)))
	return append(dst, imei...)
}

// FrameLen reports how many bytes of b the next TCP frame (AVL data or Codec 12) occupies,
// or 0 when b holds only part of it. A lone 0xFF ping is reported as n == 1 with ErrPing:
// discard that byte and go on. The preamble is checked byte by byte as it arrives and the
// data length against MaxPacket as soon as it is there, so nothing is buffered or allocated
// for a hostile frame: any other error means the stream is not Teltonika's (n == 0).
func FrameLen(b []byte) (n int, err error) {
	if len(b) == 0 {
		return 0, nil
	}
	if b[0] == Ping {
		return 1, ErrPing
	}
	for i := 0; i < 4 && i < len(b); i++ {
		if b[i] != 0 {
			return 0, ErrPreamble
		}
	}
	if len(b) < HeaderLen {
		return 0, nil
	}
	l := binary.BigEndian.Uint32(b[4:])
	if l > MaxPacket {
		return 0, ErrTooLarge
	}
	if l < minData {
		return 0, ErrLength
	}
	n = HeaderLen + int(l) + CRCLen
	if len(b) < n {
		return 0, nil
	}
	return n, nil
}

// frameData checks a whole TCP frame (preamble, length, CRC) and returns its data.
func frameData(frame []byte) ([]byte, error) {
	if len(frame) < HeaderLen+minData+CRCLen {
		return nil, ErrLength
	}
	if binary.BigEndian.Uint32(frame) != 0 {
		return nil, ErrPreamble
	}
	l := binary.BigEndian.Uint32(frame[4:])
	if l > MaxPacket {
		return nil, ErrTooLarge
	}
	if uint64(len(frame)) != HeaderLen+uint64(l)+CRCLen {
		return nil, ErrLength
	}
	data := frame[HeaderLen : HeaderLen+l]
	if binary.BigEndian.Uint32(frame[HeaderLen+l:]) != uint32(CRC16(data)) {
		return nil, ErrCRC
	}
	return data, nil
}

// IsCodec12 reports whether a TCP frame (as FrameLen delimits it) is a Codec 12 frame.
func IsCodec12(frame []byte) bool {
	return len(frame) > HeaderLen && frame[HeaderLen] == Codec12
}

// ParseTCP checks and decodes one whole TCP AVL data frame: preamble, data length (at most
// MaxPacket, equal to the frame's size), CRC-16/IBM over codec id … second count, a codec of
// 8, 8 Extended or 16, records that end exactly at the second count, and two equal counts.
// Errors are the package's sentinels. NX values alias frame.
func ParseTCP(frame []byte) (Packet, error) {
	data, err := frameData(frame)
	if err != nil {
		return Packet{}, err
	}
	return parseData(data, nil)
}

// Parser decodes TCP AVL frames into records and IO elements it reuses from one frame to the
// next, so a connection's stream of packets allocates nothing to decode. Not safe for
// concurrent use; the zero value is ready.
type Parser struct {
	recs []Record
	ios  []IO
}

// ParseTCP is the package's ParseTCP, but the packet's records and their IO elements are the
// parser's: valid until its next call (and NX values alias frame).
func (ps *Parser) ParseTCP(frame []byte) (Packet, error) {
	data, err := frameData(frame)
	if err != nil {
		return Packet{}, err
	}
	return parseData(data, ps)
}

// AppendAck appends the TCP answer to an AVL frame: the number of records accepted, u32.
func AppendAck(dst []byte, accepted uint32) []byte {
	return binary.BigEndian.AppendUint32(dst, accepted)
}

// CRC16 returns the CRC-16/IBM (also called CRC-16/ARC) of b: polynomial 0x8005 reflected
// (0xA001), initial value 0, no final xor. Teltonika computes it over codec id … second count.
// It reads eight bytes a step (slicing-by-8).
func CRC16(b []byte) uint16 {
	var crc uint16
	for len(b) >= 8 {
		crc ^= uint16(b[0]) | uint16(b[1])<<8
		crc = crcTables[7][byte(crc)] ^ crcTables[6][crc>>8] ^
			crcTables[5][b[2]] ^ crcTables[4][b[3]] ^ crcTables[3][b[4]] ^
			crcTables[2][b[5]] ^ crcTables[1][b[6]] ^ crcTables[0][b[7]]
		b = b[8:]
	}
	for _, c := range b {
		crc = crc>>8 ^ crcTables[0][byte(crc)^c]
	}
	return crc
}

// crcTables[0] is the byte-wise table; crcTables[k][i] is the CRC of byte i followed by k
// zero bytes.
var crcTables = func() (t [8][256]uint16) {
	for i := range t[0] {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[0][i] = c
	}
	for i := range t[0] {
		c := t[0][i]
		for k := 1; k < 8; k++ {
			c = c>>8 ^ t[0][byte(c)]
			t[k][i] = c
		}
	}
	return t
}()
