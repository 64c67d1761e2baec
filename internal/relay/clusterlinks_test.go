package relay_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// relayedAs writes sent on from and fails t unless who, reading on to, gets want.
func relayedAs(t *testing.T, from, to net.Conn, who string, sent, want []byte) {
	t.Helper()
	if _, err := from.Write(sent); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(to, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s read %x, %v; want %x", who, got, err, want)
	}
}

// linkOn lists relay c's links and returns the one with token, or nil.
func linkOn(c *apiClient, token string) map[string]any {
	c.t.Helper()
	l := c.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
	for _, v := range l["data"].([]any) {
		if in := v.(map[string]any); in["token"] == token {
			return in
		}
	}
	return nil
}

// onlyLink returns relay c's one link, failing t unless it lists exactly one.
func onlyLink(c *apiClient) map[string]any {
	c.t.Helper()
	l := c.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
	data := l["data"].([]any)
	if len(data) != 1 {
		c.t.Fatalf("GET devicelink = %v, want one link", l)
	}
	return data[0].(map[string]any)
}

// Issue 16's device links in cluster mode: two relays on a real 3-node JetStream cluster. A
// device connected to relay A listens on a TCP and a UDP port; links created through relay C's
// API, which never saw the device, reach it: bytes pass both ways byte-exact through C's port
// and A's link; C lists the link; encryption is on C's client leg only; DELETE through C answers 204 and closes the client's and the
// device's sockets, and A's leg. A device registered but connected to no node, and one nobody
// registered, answer 404 on C as on one node. A leg whose asking node is gone is closed.
func TestClusterDeviceLinkReachesOtherNode(t *testing.T) {
	nats := natstest.Start(t, 3)
	relay.SetLegsCheckEvery(50 * time.Millisecond)
	t.Cleanup(func() { relay.SetLegsCheckEvery(0) })
	clustered := func(cfg *config.Config) {
		cfg.Cluster.NATS.URL = nats.URL()
		cfg.Cluster.NATS.Prefix = "linktest"
	}
	ra, apiA, _ := linkRelay(t, 2, clustered)
	_, apiC, firstC := linkRelay(t, 2, clustered)

	apiC.must(http.StatusCreated, "PUT", "/api/v1/devices/cl-dev", map[string]any{})
	apiC.must(http.StatusCreated, "PUT", "/api/v1/devices/cl-idle", map[string]any{})
	connectNative(t, ra, "cl-dev")
	svc, devicePort := deviceService(t)

	// Once A has recorded the device, C opens the link on a port of its own range.
	var v map[string]any
	checkfor.Check(t, 20*time.Second, 20*time.Millisecond, func() error {
		var st int
		st, v = apiC.do("POST", "/api/v1/devicelink/cl-dev", map[string]any{"protocol": "tcp", "devicePort": devicePort})
		if st != http.StatusCreated {
			return fmt.Errorf("POST devicelink through C = %d %v", st, v)
		}
		return nil
	})
	port, token := int(v["port"].(float64)), v["token"].(string)
	if v["deviceIdentifier"] != "CL-DEV" || v["devicePort"] != float64(devicePort) || port < firstC || port > firstC+1 || v["state"] != "waiting" {
		t.Fatalf("POST devicelink through C = %v, want CL-DEV's port %d on one of C's ports %d-%d", v, devicePort, firstC, firstC+1)
	}

	client, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dev := accept(t, svc)
	relayed(t, client, dev, "the device", "hello device")
	relayed(t, dev, client, "the client", "hello client")
	const size = 4 << 20
	errs := make(chan error, 4)
	go func() { errs <- streamOut(client, size, 0x3c) }()
	go func() { errs <- streamOut(dev, size, 0xc3) }()
	go func() { errs <- streamIn(dev, size, 0x3c) }()
	go func() { errs <- streamIn(client, size, 0xc3) }()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	const moved = size + len("hello device")
	if got := linkOn(apiC, token); got == nil || got["state"] != "open" || got["bytesToDevice"] != float64(moved) ||
		got["bytesToClient"] != float64(size+len("hello client")) || got["client"] != client.LocalAddr().String() {
		t.Errorf("C lists %v, want the link open with %d bytes to the device, client %s", got, moved, client.LocalAddr())
	}
	far := onlyLink(apiA) // A's leg: a link to the device, its client C's
	if far["deviceIdentifier"] != "CL-DEV" || far["state"] != "open" || far["bytesToDevice"] != float64(moved) {
		t.Errorf("A lists %v, want its leg open with %d bytes to the device", far, moved)
	}

	apiC.must(http.StatusNoContent, "DELETE", "/api/v1/devicelink/"+token, nil)
	if err := closedByPeer(client); err != nil {
		t.Errorf("after DELETE through C, the client: %v", err)
	}
	if err := closedByPeer(dev); err != nil {
		t.Errorf("after DELETE through C, the device: %v", err)
	}
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := linkOn(apiA, far["token"].(string))["state"]; st != "closed" {
			return fmt.Errorf("A's leg is %v after DELETE through C, want closed", st)
		}
		return nil
	})

	// Connected to no node, or registered nowhere: 404, as on one node.
	body := map[string]any{"protocol": "tcp", "devicePort": devicePort}
	if st, v := apiC.do("POST", "/api/v1/devicelink/cl-idle", body); st != http.StatusNotFound || v["title"] != "Device never connected" {
		t.Errorf("POST devicelink through C to a device connected nowhere = %d %v, want 404 never connected", st, v)
	}
	apiC.must(http.StatusNotFound, "POST", "/api/v1/devicelink/no-such-device", body)

	// Encrypted: the client's leg on C only; the device (and A's leg) carry plaintext.
	key, iv := make([]byte, 32), make([]byte, 16)
	pattern(key, 0, 0x44)
	pattern(iv, 0, 0x55)
	v = apiC.must(http.StatusCreated, "POST", "/api/v1/devicelink/cl-dev", map[string]any{"protocol": "tcp", "devicePort": devicePort,
		"encrypt": map[string]any{"key": hex.EncodeToString(key), "initializationVector": hex.EncodeToString(iv)}})
	eclient, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(v["port"].(float64))))
	if err != nil {
		t.Fatal(err)
	}
	defer eclient.Close()
	edev := accept(t, svc)
	plain := []byte("plaintext at the device, ciphertext at the client")
	sealed := make([]byte, len(plain))
	ctr(t, key, iv, 0).XORKeyStream(sealed, plain)
	relayedAs(t, eclient, edev, "the device", sealed, plain)
	ctr(t, key, iv, 1).XORKeyStream(sealed, plain)
	relayedAs(t, edev, eclient, "the client", plain, sealed)
	apiC.must(http.StatusNoContent, "DELETE", "/api/v1/devicelink/"+v["token"].(string), nil)

	// UDP the same: the client pinned on C, datagrams both ways through A's leg.
	usvc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer usvc.Close()
	uclient, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uclient.Close()
	v = apiC.must(http.StatusCreated, "POST", "/api/v1/devicelink/cl-dev", map[string]any{"protocol": "udp",
		"devicePort": usvc.LocalAddr().(*net.UDPAddr).Port, "timeout": 60000,
		"source": map[string]any{"host": "127.0.0.1", "port": uclient.LocalAddr().(*net.UDPAddr).Port}})
	utoken := v["token"].(string)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(v["port"].(float64))}
	buf := make([]byte, 2048)
	for i := range 10 {
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := uclient.WriteTo([]byte(msg), to); err != nil {
			t.Fatal(err)
		}
		_ = usvc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := usvc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("the device's UDP service read %q, %v; want %q", buf[:n], err, msg)
		}
		if _, err := usvc.WriteTo([]byte("re: "+msg), from); err != nil {
			t.Fatal(err)
		}
		_ = uclient.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, _, err = uclient.ReadFrom(buf); err != nil || string(buf[:n]) != "re: "+msg {
			t.Fatalf("the client read %q, %v; want %q", buf[:n], err, "re: "+msg)
		}
	}
	apiC.must(http.StatusNoContent, "DELETE", "/api/v1/devicelink/"+utoken, nil)
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		l := apiA.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
		for _, in := range l["data"].([]any) {
			if in := in.(map[string]any); in["protocol"] == "udp" && in["state"] != "closed" {
				return fmt.Errorf("A's UDP leg is %v after DELETE through C, want closed", in["state"])
			}
		}
		return nil
	})

	// A leg asked for by a node that is gone (killed before it could close it) is closed by
	// the device's node; one asked for by a node that runs is kept.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: nats.URL(), Replicas: 3, Prefix: "linktest"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	owners, err := conn.OpenOwners(ctx, cluster.OwnersOptions{Self: cluster.Owner{Node: "test"}, Current: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	defer owners.Close()
	owner, ok, err := owners.Lookup(ctx, "cl-dev")
	if err != nil || !ok {
		t.Fatalf("the owner of CL-DEV: %+v, %v, %v", owner, ok, err)
	}
	alive := cluster.NewNodeName()
	srv, err := conn.ServeNode(alive, cluster.NodeHandlers{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for i := range nats.Len() { // every NATS server knows the test's node before A asks any
		ci, err := cluster.Connect(ctx, cluster.Options{URL: nats.NodeURL(i), Replicas: 3, Prefix: "linktest"})
		if err != nil {
			t.Fatal(err)
		}
		checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error { return ci.Ping(ctx, alive) })
		_ = ci.Close()
	}
	leg := func(from string) string {
		t.Helper()
		rep, err := conn.OpenLink(ctx, owner.Node, cluster.LinkRequest{Device: "CL-DEV", Protocol: "tcp", DevicePort: uint16(devicePort), From: from})
		if err != nil || rep.Error != "" {
			t.Fatalf("OpenLink from %s = %+v, %v", from, rep, err)
		}
		return rep.Token
	}
	kept, orphan := leg(alive), leg(cluster.NewNodeName())
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := linkOn(apiA, orphan)["state"]; st != "closed" {
			return fmt.Errorf("the leg of a node that is gone is %v, want closed", st)
		}
		return nil
	})
	if st := linkOn(apiA, kept)["state"]; st != "waiting" {
		t.Errorf("the leg of a node that runs is %v, want waiting", st)
	}
}
