package link

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The Manager hands UDP links to the UDP engine: a datagram each way through one opened with
// Open, and Close ends it.
func TestManagerOpensUDPLinks(t *testing.T) {
	m := startManager(t, 4, 0)
	dev, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	in, err := m.Open(context.Background(), Spec{Device: "DEV-1", Protocol: UDP, DeviceAddr: dev.LocalAddr().(*net.UDPAddr).AddrPort()})
	if err != nil {
		t.Fatalf("Open udp: %v", err)
	}
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, in.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("to the device")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, leg, err := dev.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "to the device" {
		t.Fatalf("device read %q, %v", buf[:n], err)
	}
	if _, err := dev.WriteToUDPAddrPort([]byte("to the client"), leg); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err = client.Read(buf); err != nil || string(buf[:n]) != "to the client" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	if err := m.Close(in.Token); err != nil {
		t.Fatal(err)
	}
	if s := linkState(m, in.Token).State; s != StateClosed {
		t.Errorf("after Close: %s, want closed", s)
	}
}
