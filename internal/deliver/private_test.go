package deliver_test

import (
	"net/netip"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

func TestIsPrivate(t *testing.T) {
	f := func(addr string, want bool) {
		t.Helper()
		a, err := netip.ParseAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := deliver.IsPrivate(a); got != want {
			t.Errorf("IsPrivate(%s) = %v, want %v", addr, got, want)
		}
	}
	// IPv4 refused
	f("0.0.0.0", true)
	f("0.1.2.3", true)
	f("10.0.0.1", true)
	f("10.255.255.255", true)
	f("100.64.0.1", true)      // CGNAT
	f("100.127.255.255", true) // CGNAT
	f("127.0.0.1", true)
	f("127.255.255.254", true)
	f("169.254.169.254", true) // cloud metadata
	f("172.16.0.1", true)
	f("172.31.255.255", true)
	f("192.0.0.8", true)
	f("192.0.2.1", true)
	f("192.168.1.1", true)
	f("198.18.0.1", true)
	f("224.0.0.1", true)
	f("239.255.255.250", true)
	f("240.0.0.1", true)
	f("255.255.255.255", true)
	// IPv4 allowed
	f("1.1.1.1", false)
	f("8.8.8.8", false)
	f("100.63.255.255", false)
	f("100.128.0.0", false)
	f("172.15.255.255", false)
	f("172.32.0.0", false)
	f("192.169.0.1", false)
	f("9.255.255.255", false)
	f("11.0.0.0", false)
	f("126.255.255.255", false)
	f("128.0.0.0", false)
	f("223.255.255.255", false)
	// IPv6 refused
	f("::", true)
	f("::1", true)
	f("::ffff:127.0.0.1", true)
	f("::ffff:10.1.2.3", true)
	f("::127.0.0.1", true)      // IPv4-compatible
	f("64:ff9b::7f00:1", true)  // NAT64 of 127.0.0.1
	f("64:ff9b::a00:1", true)   // NAT64 of 10.0.0.1
	f("64:ff9b:1::1", true)     // local-use NAT64
	f("2002:7f00:1::", true)    // 6to4 of 127.0.0.1
	f("2002:c0a8:101::1", true) // 6to4 of 192.168.1.1
	f("100::1", true)
	f("2001:db8::1", true)
	f("fc00::1", true)
	f("fd12:3456:789a::1", true)
	f("fe80::1", true)
	f("fe80::1%eth0", true)
	f("febf::1", true)
	f("fec0::1", true)
	f("ff02::1", true)
	// IPv6 allowed
	f("2606:4700:4700::1111", false)
	f("2001:4860:4860::8888", false)
	f("::ffff:8.8.8.8", false)
	f("64:ff9b::808:808", false) // NAT64 of 8.8.8.8
	f("2002:808:808::1", false)  // 6to4 of 8.8.8.8
	f("fbff::1", false)
	f("fe00::1", false)

	if !deliver.IsPrivate(netip.Addr{}) {
		t.Errorf("IsPrivate(invalid) = false, want true")
	}
}
