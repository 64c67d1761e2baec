package teltonika

import "errors"

var (
	// ErrPing is returned by FrameLen, with n == 1, for the lone 0xFF byte a device sends to
	// keep its connection alive: the caller discards that byte and carries on. It is not a
	// fault.
	ErrPing = errors.New("teltonika ping")
	// ErrIMEI is an IMEI handshake whose length is not 15 or whose IMEI is not 15 digits.
	ErrIMEI = errors.New("malformed IMEI")
	// ErrPreamble is a TCP frame that does not start with four zero bytes.
	ErrPreamble = errors.New("bad preamble")
	// ErrTooLarge is a TCP frame or UDP datagram whose data length exceeds MaxPacket.
	ErrTooLarge = errors.New("packet too large")
	// ErrLength is a length field that disagrees with the bytes present: a data length too
	// small to hold a packet, a frame or datagram longer or shorter than its length says,
	// records that end before or after the second count.
	ErrLength = errors.New("length mismatch")
	// ErrTruncated is a record, IO element or NX value that runs past the end of the data.
	ErrTruncated = errors.New("truncated packet")
	// ErrCRC is a TCP frame whose CRC-16/IBM does not match its data.
	ErrCRC = errors.New("CRC mismatch")
	// ErrCount is a packet whose two record counts disagree, or a Codec 12 frame whose
	// quantity is not 1.
	ErrCount = errors.New("record counts disagree")
	// ErrCodec is a packet in a codec this package does not decode there (ParseTCP and
	// ParseUDP take 8, 8 Extended and 16; ParseResponse takes 12).
	ErrCodec = errors.New("unsupported codec")
	// ErrType is a Codec 12 frame of the wrong type (ParseResponse takes 0x06 responses).
	ErrType = errors.New("unexpected Codec 12 type")
)
