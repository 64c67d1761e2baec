package relay_test

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// devicelink.protocols: [tcp] binds no UDP socket on the range (a UDP bind to each port
// succeeds), refuses a UDP link 422 at /protocol with a detail naming the setting, and still
// opens TCP links.
func TestDeviceLinkTCPOnly(t *testing.T) {
	r, boot, first := linkRelay(t, 3, func(c *config.Config) { c.DeviceLink.Protocols = []string{config.LinkTCP} })
	for p := first; p < first+3; p++ {
		c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("UDP bind to range port %d: %v; want it free (protocols [tcp])", p, err)
			continue
		}
		c.Close()
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			l.Close()
			t.Errorf("TCP port %d of the range is free; want the relay listening", p)
		}
	}
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-tcp", map[string]any{})
	connectNative(t, r, "sn-tcp")
	prob := boot.must(http.StatusUnprocessableEntity, "POST", "/api/v1/devicelink/sn-tcp", map[string]any{"protocol": "udp", "devicePort": 7000})
	errs, _ := prob["errors"].([]any)
	if len(errs) != 1 {
		t.Fatalf("422 = %v, want one field error", prob)
	}
	fe, _ := errs[0].(map[string]any)
	if fe["pointer"] != "/protocol" || !strings.Contains(fe["detail"].(string), "devicelink.protocols") {
		t.Errorf("field error = %v, want /protocol naming devicelink.protocols", fe)
	}
	_, port := deviceService(t)
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-tcp", map[string]any{"protocol": "tcp", "devicePort": port})
	if v["protocol"] != "tcp" {
		t.Errorf("TCP link = %v", v)
	}
}
