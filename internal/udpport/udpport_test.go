package udpport_test

import (
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fleetrelay/fleetrelay/internal/udpport"
	"github.com/fleetrelay/fleetrelay/internal/udpport/udpporttest"
)

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A port another engine holds cannot be claimed: the relay refuses to start on it (as a TCP
// listener would) instead of sharing its devices' datagrams with that engine.
func TestClaimRefusesAHeldPort(t *testing.T) {
	other, err := udpporttest.EngineSocket(t, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := other.LocalAddr().String()
	if bound, release, err := udpport.Claim(addr); !errors.Is(err, unix.EADDRINUSE) {
		if err == nil {
			release()
		}
		t.Fatalf("Claim(%s) held by another engine's socket = %q, %v; want EADDRINUSE", addr, bound, err)
	}
}

// A claimed port takes the engine's sockets, and no other claim: neither while the claim holds
// it nor once the engine's sockets do; it is free again once they are closed.
func TestClaimedPortTakesTheEngineOnly(t *testing.T) {
	bound, release, err := udpport.Claim("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if port(t, bound) == "0" {
		release()
		t.Fatalf("Claim(127.0.0.1:0) = %s, want a port", bound)
	}
	claimFails := func(when string) {
		t.Helper()
		if _, r, err := udpport.Claim(bound); !errors.Is(err, unix.EADDRINUSE) {
			if err == nil {
				r()
			}
			t.Fatalf("%s: Claim(%s) = %v, want EADDRINUSE", when, bound, err)
		}
	}
	claimFails("claimed")
	var loops []net.PacketConn
	for i := range 2 { // two event loops bind the claimed port beside the claim socket
		pc, err := udpporttest.EngineSocket(t, bound)
		if err != nil {
			release()
			t.Fatalf("event loop %d: bind %s beside the claim: %v", i, bound, err)
		}
		loops = append(loops, pc)
	}
	claimFails("claimed and bound")
	release()
	claimFails("bound by the engine")
	for _, pc := range loops {
		pc.Close()
	}
	again, r, err := udpport.Claim(bound)
	if err != nil {
		t.Fatalf("Claim(%s) once nothing holds it: %v", bound, err)
	}
	r()
	if again != bound {
		t.Errorf("Claim(%s) = %s", bound, again)
	}
}

// Port 0 never gives a port that another engine holds. A socket that binds port 0 with
// SO_REUSEPORT, as gnet's do, can be given one (the kernel counts a port held by sockets with
// SO_REUSEPORT of the same user as free for it): that is how a relay in one test process came to
// share its UDP port with a loadgen floor in another, which acknowledged the relay's device.
func TestClaimAvoidsPortsOthersHold(t *testing.T) {
	const others, claims = 1000, 100
	held := make(map[string]bool, others)
	for range others {
		pc, err := udpporttest.EngineSocket(t, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held[port(t, pc.LocalAddr().String())] = true
	}
	shared := 0 // plain SO_REUSEPORT binds of port 0 given a held port: how likely the hazard is
	for range claims {
		bound, release, err := udpport.Claim("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		release()
		if held[port(t, bound)] {
			t.Fatalf("Claim(127.0.0.1:0) = %s, a port another engine holds", bound)
		}
		pc, err := udpporttest.EngineSocket(t, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if held[port(t, pc.LocalAddr().String())] {
			shared++
		}
		pc.Close()
	}
	t.Logf("%d claims of port 0 beside %d held ports: none shared; %d plain SO_REUSEPORT binds of port 0 were given a held port",
		claims, others, shared)
}
