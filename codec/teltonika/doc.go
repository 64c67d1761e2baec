// Package teltonika owns the wire codecs of Teltonika trackers (FMB/FMC/FMM…): the TCP IMEI
// handshake and AVL data frames, UDP datagrams, Codec 8, 8 Extended and 16 records, Codec 12
// commands and responses, CRC-16/IBM, and the JSON object each AVL record becomes. The facts
// come from Teltonika's wiki pages "Codec" and "Teltonika Data Sending Protocols" and from
// Traccar's decoder tests.
//
// It is pure: no I/O, no goroutines, no shared state; every function is safe for concurrent
// use. A Parser decodes into records it reuses from one packet to the next (the relay's event
// loops decode with one, pooled), so it is one caller's at a time.
// Lengths are checked against MaxPacket before anything is allocated. Decoded values alias
// the input (an NX element's Raw), so a caller that keeps a Packet past the input's lifetime
// copies it first. Encoders append to a caller's buffer.
//
// # TCP
//
// A device opens with its IMEI (u16 length 15, 15 ASCII digits: ParseIMEI) and the server
// answers 01 (accepted) or 00. Then every AVL data frame is
//
//	00000000 | u32 data length | codec id … second record count | u32 CRC-16/IBM of the data
//
// answered with the number of records accepted as a big-endian u32 (AppendAck). FrameLen
// finds the frames in a byte stream split or coalesced anywhere (and the lone 0xFF ping);
// ParseTCP (or a Parser's) checks and decodes one. Codec 12 frames (IsCodec12) share the framing: a command
// (type 0x05, AppendCommand) to the device, its response (type 0x06, ParseResponse).
//
// # UDP
//
// A datagram carries one packet without a CRC:
//
//	u16 length | u16 packet id | u8 packet type | u8 AVL packet id | u16 IMEI length | IMEI |
//	codec id … second record count
//
// answered 00 05 | packet id | 01 | AVL packet id | u8 accepted count (AppendUDPAck).
//
// # Records
//
// Every codec carries a record as: u64 time (Unix ms), u8 priority (0 low, 1 high, 2 panic),
// the GPS element (i32 longitude and latitude in 1e-7 degrees, two's complement; i16 altitude
// in metres; u16 angle in degrees from north; u8 satellites; u16 speed in km/h) and the IO
// element, whose widths differ:
//
//	| field             | Codec 8 (0x08) | Codec 8 Extended (0x8E) | Codec 16 (0x10)   |
//	|-------------------|----------------|-------------------------|-------------------|
//	| event IO id       | u8             | u16                     | u16               |
//	| generation type   | —              | —                       | u8                |
//	| IO counts         | u8             | u16                     | u8                |
//	| IO ids            | u8             | u16                     | u16               |
//	| NX (u16 length)   | —              | yes, after the 8-byte   | —                 |
//
// The IO element's total count is not checked against the sum of its groups (Traccar does
// not either): the frame's CRC, its length and its two record counts already guard the
// packet, and refusing a firmware's miscount would make the device resend it forever.
//
// # JSON
//
// AppendJSON renders a record as one JSON object; its fields are listed there.
package teltonika
