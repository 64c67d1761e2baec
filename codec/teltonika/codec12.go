package teltonika

import "encoding/binary"

// codec12Fixed is a Codec 12 frame's data without its text: codec id, quantity, type, u32
// text size, second quantity.
const codec12Fixed = 1 + 1 + 1 + 4 + 1

// AppendCommand appends a whole Codec 12 command frame (type 0x05) carrying text, with its
// CRC. The caller keeps text within MaxPacket-8 bytes.
func AppendCommand(dst []byte, text string) []byte {
	return appendCodec12(dst, TypeCommand, text)
}

// AppendResponse appends a whole Codec 12 response frame (type 0x06), as a device answers a
// command — for simulated devices and tests.
func AppendResponse(dst []byte, text string) []byte {
	return appendCodec12(dst, TypeResponse, text)
}

func appendCodec12(dst []byte, typ byte, text string) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0, Codec12, 1, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(text)))
	dst = append(dst, text...)
	dst = append(dst, 1)
	return finishFrame(dst, start)
}

// ParseResponse checks a whole Codec 12 frame of type 0x06 (a device's response) and returns
// its text: preamble, length, CRC, codec 12, quantities of 1, a text size that fills the data.
func ParseResponse(frame []byte) (text string, err error) {
	b, err := parseCodec12(frame, TypeResponse)
	return string(b), err
}

// ParseCommand checks a whole Codec 12 frame of type 0x05 (a server's command) and returns
// its text, aliasing frame — for simulated devices and tests.
func ParseCommand(frame []byte) (text []byte, err error) {
	return parseCodec12(frame, TypeCommand)
}

func parseCodec12(frame []byte, typ byte) ([]byte, error) {
	data, err := frameData(frame)
	if err != nil {
		return nil, err
	}
	if data[0] != Codec12 {
		return nil, ErrCodec
	}
	if len(data) < codec12Fixed {
		return nil, ErrLength
	}
	if data[1] != 1 || data[len(data)-1] != 1 {
		return nil, ErrCount
	}
	if data[2] != typ {
		return nil, ErrType
	}
	if uint64(binary.BigEndian.Uint32(data[3:])) != uint64(len(data)-codec12Fixed) {
		return nil, ErrLength
	}
	return data[7 : len(data)-1], nil
}
