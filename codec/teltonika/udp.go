package teltonika

import "encoding/binary"

// udpFixed is a datagram's bytes before the IMEI: length, packet id, packet type, AVL packet
// id, IMEI length.
const udpFixed = 2 + 2 + 1 + 1 + 2

// UDPHeader is what a datagram says before its AVL data. PacketID and AVLPacketID are echoed
// in the answer.
type UDPHeader struct {
	PacketID    uint16
	AVLPacketID uint8
	IMEI        string
}

// udpPacketType is the packet type byte Teltonika devices send (and the answer carries).
const udpPacketType = 0x01

// ParseUDP checks and decodes one datagram: its length field equal to the bytes after it, an
// IMEI of 15 digits, at most MaxPacket bytes of data, and the data as ParseTCP checks it
// (UDP carries no CRC). The packet type byte is not checked (devices send 01; Traccar does
// not check it either). The IMEI is a new string; NX values alias d.
func ParseUDP(d []byte) (UDPHeader, Packet, error) {
	return parseUDP(d, nil)
}

// ParseUDP is the package's ParseUDP, but the packet's records and their IO elements are the
// parser's: valid until its next call (the header is the caller's).
func (ps *Parser) ParseUDP(d []byte) (UDPHeader, Packet, error) {
	return parseUDP(d, ps)
}

func parseUDP(d []byte, ps *Parser) (UDPHeader, Packet, error) {
	if len(d) < udpFixed {
		return UDPHeader{}, Packet{}, ErrLength
	}
	if int(binary.BigEndian.Uint16(d)) != len(d)-2 {
		return UDPHeader{}, Packet{}, ErrLength
	}
	h := UDPHeader{PacketID: binary.BigEndian.Uint16(d[2:]), AVLPacketID: d[5]}
	if binary.BigEndian.Uint16(d[6:]) != IMEILen {
		return UDPHeader{}, Packet{}, ErrIMEI
	}
	if len(d) < udpFixed+IMEILen {
		return UDPHeader{}, Packet{}, ErrLength
	}
	imei := d[udpFixed : udpFixed+IMEILen]
	if !digits(imei) {
		return UDPHeader{}, Packet{}, ErrIMEI
	}
	data := d[udpFixed+IMEILen:]
	if len(data) > MaxPacket {
		return UDPHeader{}, Packet{}, ErrTooLarge
	}
	p, err := parseData(data, ps)
	if err != nil {
		return UDPHeader{}, Packet{}, err
	}
	h.IMEI = string(imei)
	return h, p, nil
}

// AppendUDPAck appends the answer to a datagram: 00 05 | packet id | 01 | AVL packet id |
// number of records accepted.
func AppendUDPAck(dst []byte, h UDPHeader, accepted uint8) []byte {
	dst = append(dst, 0, 5)
	dst = binary.BigEndian.AppendUint16(dst, h.PacketID)
	return append(dst, udpPacketType, h.AVLPacketID, accepted)
}

// ParseUDPAck decodes an answer to a datagram — for simulated devices.
func ParseUDPAck(b []byte) (packetID uint16, avlPacketID, accepted uint8, err error) {
	if len(b) != UDPAckLen || b[0] != 0 || b[1] != 5 {
		return 0, 0, 0, ErrLength
	}
	return binary.BigEndian.Uint16(b[2:]), b[5], b[6], nil
}

// AppendUDP appends a whole datagram carrying recs in the codec (encoded as AppendTCP does).
// The IMEI is written as given. For simulated devices and tests.
func AppendUDP(dst []byte, h UDPHeader, codec byte, recs []Record) []byte {
	start := len(dst)
	dst = append(dst, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, h.PacketID)
	dst = append(dst, udpPacketType, h.AVLPacketID)
	dst = AppendIMEI(dst, h.IMEI)
	dst = appendData(dst, codec, recs)
	binary.BigEndian.PutUint16(dst[start:], uint16(len(dst)-start-2))
	return dst
}
