// Package proxytest owns the receiving end of the HAProxy PROXY protocol version 2 for tests:
// a header read and parsed as an end server behind the raw TCP connector parses it, written
// from HAProxy's specification (proxy-protocol.txt, section 2.2) independently of the relay's
// encoder, so the connector's tests (netio/link) and the relay's check the wire, not the code
// that wrote it.
//
// Only tests import it.
package proxytest

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
)

// Header is a PROXY protocol v2 header.
type Header struct {
	Version, Command byte // 2; 1 for PROXY, 0 for LOCAL
	Family, Proto    byte // 1 AF_INET, 2 AF_INET6, 0 AF_UNSPEC; 1 STREAM
	Src, Dst         netip.AddrPort
}

// ReadV2 reads the header at the start of r (and nothing after it) and parses it.
func ReadV2(r io.Reader) (Header, error) {
	var h Header
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return h, err
	}
	if sig := []byte("\r\n\r\n\x00\r\nQUIT\n"); !bytes.Equal(fixed[:12], sig) {
		return h, fmt.Errorf("PROXY v2 signature % x", fixed[:12])
	}
	h.Version, h.Command = fixed[12]>>4, fixed[12]&0x0f
	h.Family, h.Proto = fixed[13]>>4, fixed[13]&0x0f
	block := make([]byte, int(fixed[14])<<8|int(fixed[15]))
	if _, err := io.ReadFull(r, block); err != nil {
		return h, err
	}
	port := func(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
	switch h.Family {
	case 1: // AF_INET: 4 + 4 address bytes, 2 + 2 port bytes
		if len(block) < 12 {
			return h, fmt.Errorf("PROXY v2 IPv4 block of %d bytes", len(block))
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[0:4])), port(block[8:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[4:8])), port(block[10:]))
	case 2: // AF_INET6: 16 + 16, 2 + 2
		if len(block) < 36 {
			return h, fmt.Errorf("PROXY v2 IPv6 block of %d bytes", len(block))
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[0:16])), port(block[32:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[16:32])), port(block[34:]))
	}
	return h, nil
}
