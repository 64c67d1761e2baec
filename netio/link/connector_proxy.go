package link

import (
	"encoding/binary"
	"net/netip"
)

// The PROXY protocol version 2 (HAProxy's proxy-protocol.txt, section 2.2): a binary header the
// connector sends first on each upstream connection, saying where the device connected from.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	proxyV2Cmd     = 0x21 // version 2 (high nibble), command PROXY (low nibble)
	proxyV2TCP4    = 0x11 // AF_INET (high nibble), SOCK_STREAM (low nibble)
	proxyV2TCP6    = 0x21 // AF_INET6, SOCK_STREAM
	proxyV2Unspec  = 0x00 // AF_UNSPEC: the receiver uses the connection's own addresses
	proxyV2MaxLen  = proxyV2HdrBase + proxyV2Len6
	proxyV2Len4    = 12 // source and destination IPv4 addresses, then ports
	proxyV2Len6    = 36 // source and destination IPv6 addresses, then ports
	proxyV2HdrBase = 16
)

// appendProxyV2 appends to b the PROXY v2 header of a TCP connection from src to dst (the
// device's address and the connector's listen address it reached). When both are IPv4
// (IPv4-mapped IPv6 included) it says TCP over IPv4; otherwise TCP over IPv6, with an IPv4
// address written IPv4-mapped. An unknown address gives AF_UNSPEC and no address block.
func appendProxyV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxyV2Sig[:]...)
	b = append(b, proxyV2Cmd)
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	switch {
	case !s.IsValid() || !d.IsValid():
		return append(b, proxyV2Unspec, 0, 0)
	case s.Is4() && d.Is4():
		b = append(b, proxyV2TCP4)
		b = binary.BigEndian.AppendUint16(b, proxyV2Len4)
		b = append(b, s.AsSlice()...)
		b = append(b, d.AsSlice()...)
	default:
		b = append(b, proxyV2TCP6)
		b = binary.BigEndian.AppendUint16(b, proxyV2Len6)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}
