package deliver

import "net/netip"

// blockedPrefixes are the networks a route may not reach unless private
// networks are allowed: everything that is not globally routable unicast.
var blockedPrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		// IPv4
		"0.0.0.0/8",       // "this network", unspecified
		"10.0.0.0/8",      // RFC 1918
		"100.64.0.0/10",   // carrier-grade NAT (RFC 6598)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local
		"172.16.0.0/12",   // RFC 1918
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // TEST-NET-1
		"192.88.99.0/24",  // 6to4 relay anycast (deprecated)
		"192.168.0.0/16",  // RFC 1918
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // TEST-NET-2
		"203.0.113.0/24",  // TEST-NET-3
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, broadcast
		// IPv6 (IPv4-mapped, NAT64 and 6to4 addresses are checked by their
		// embedded IPv4 address instead)
		"::/96",          // unspecified, loopback, IPv4-compatible (deprecated)
		"64:ff9b:1::/48", // local-use NAT64
		"100::/64",       // discard-only
		"2001:db8::/32",  // documentation
		"fc00::/7",       // unique local (ULA)
		"fe80::/10",      // link-local
		"fec0::/10",      // site-local (deprecated)
		"ff00::/8",       // multicast
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// IsPrivate reports whether a route may not connect to addr unless private
// networks are allowed: loopback, private (RFC 1918, ULA), link-local,
// unspecified, CGNAT, multicast, documentation and reserved addresses, also
// when written as IPv4-mapped, NAT64 or 6to4 IPv6 addresses. An invalid
// address counts as private.
func IsPrivate(addr netip.Addr) bool {
	if !addr.IsValid() {
		return true
	}
	addr = addr.WithZone("").Unmap()
	if addr.Is6() {
		b := addr.As16()
		switch {
		case nat64Prefix.Contains(addr):
			return IsPrivate(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(addr):
			return IsPrivate(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, p := range blockedPrefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
