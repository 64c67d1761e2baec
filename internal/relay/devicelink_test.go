package relay_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// The device GET shows where each device was last seen and over what: a native TCP
// connection's peer, a UDP source, an NDJSON connection's peer — real sockets on loopback.
func TestDeviceLastKnownAddress(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.NDJSON.TCP = "127.0.0.1:0"
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	for _, id := range []string{"via-tcp", "via-udp", "via-ndjson"} {
		boot.must(http.StatusCreated, "PUT", "/api/v1/devices/"+id, map[string]any{})
	}

	d := rawConn(t, r.DeviceTCPAddr().String())
	if _, err := d.Write(native.AppendHello(nil, &native.Hello{Serial: "via-tcp"})); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readOne(t, d); typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: type %d, want WELCOME", typ)
	}
	if _, err := d.Write(native.AppendData(nil, 1, []byte(`{"t":1}`))); err != nil {
		t.Fatal(err)
	}

	u, err := net.Dial("udp", r.DeviceUDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(native.AppendUData(nil, "via-udp", "", 1, []byte(`{"u":1}`))); err != nil {
		t.Fatal(err)
	}

	n, err := net.Dial("tcp", r.DeviceNDJSONAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.Write([]byte(`{"serial":"via-ndjson","t":1}` + "\n")); err != nil {
		t.Fatal(err)
	}

	want := map[string][2]string{
		"via-tcp":    {d.LocalAddr().String(), "tcp"},
		"via-udp":    {u.LocalAddr().String(), "udp"},
		"via-ndjson": {n.LocalAddr().String(), "ndjson"},
	}
	for id, w := range want {
		checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
			v := boot.must(http.StatusOK, "GET", "/api/v1/devices/"+id, nil)
			if field(v, "state", "remote") != w[0] || field(v, "state", "transport") != w[1] || field(v, "state", "last_seen") == nil {
				return fmt.Errorf("GET %s state = %v, want remote %s over %s", id, field(v, "state"), w[0], w[1])
			}
			return nil
		})
	}
}

// Device links without devicelink.listen: the rights and account checks come first (401, 404,
// 403), then the body's (422, with every field's pointer), then 503 saying links are off.
func TestDeviceLinkDisabled(t *testing.T) {
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	held, other, none := rightsKeys(t, boot, "acme devices", "devices:*")
	boot.as(held).must(http.StatusCreated, "PUT", "/api/v1/devices/d-acme", map[string]any{})

	body := map[string]any{"protocol": "tcp", "devicePort": 7000}
	for _, c := range []struct {
		method, path string
		body         any
		// statuses for no key, another account's key, a key without the right, the held key
		noKey, otherAccount, missing, ok int
	}{
		{"POST", "/api/v1/devicelink/d-acme", body, 401, 404, 403, 503},
		{"POST", "/api/v1/devicelink/D-ACME", body, 401, 404, 403, 503},
		{"GET", "/api/v1/devicelink", nil, 401, 503, 403, 503},
		{"DELETE", "/api/v1/devicelink/sometoken", nil, 401, 503, 403, 503},
	} {
		for _, k := range []struct {
			who  string
			key  string
			want int
		}{{"no key", "", c.noKey}, {"another account's key", other, c.otherAccount}, {"a key without the right", none, c.missing}, {"the account's key", held, c.ok}} {
			if st, v := boot.as(k.key).do(c.method, c.path, c.body); st != k.want {
				t.Errorf("%s %s with %s = %d %v, want %d", c.method, c.path, k.who, st, v, k.want)
			} else if st == http.StatusServiceUnavailable && !strings.Contains(fmt.Sprint(v["detail"]), "devicelink.listen") {
				t.Errorf("%s %s = %v, want a detail naming devicelink.listen", c.method, c.path, v)
			}
		}
	}
	acme := boot.as(held)
	acme.must(http.StatusNotFound, "POST", "/api/v1/devicelink/no-such-device", body)

	// Every problem of a body at once, each at its pointer; the key is never echoed.
	for _, c := range []struct {
		body any
		want []string
	}{
		{map[string]any{}, []string{"/devicePort", "/protocol"}},
		{map[string]any{"protocol": "sctp", "devicePort": 70000, "timeout": -1}, []string{"/devicePort", "/protocol", "/timeout"}},
		{map[string]any{"protocol": "udp", "devicePort": 0}, []string{"/devicePort"}},
		{map[string]any{"protocol": "tcp", "devicePort": 1, "source": map[string]any{"host": "client.example.com", "port": 0}}, []string{"/source/host", "/source/port"}},
		{map[string]any{"protocol": "tcp", "devicePort": 1, "encrypt": map[string]any{"key": strings.Repeat("ab", 16), "initializationVector": "xyz"}},
			[]string{"/encrypt/initializationVector", "/encrypt/key"}},
	} {
		st, v := acme.breaking().do("POST", "/api/v1/devicelink/d-acme", c.body)
		if got := pointers(v); st != http.StatusUnprocessableEntity || !slices.Equal(got, c.want) {
			t.Errorf("POST %v = %d %v, want 422 at %q", c.body, st, v, c.want)
		}
	}
	// UDP, a pinned source and a valid encrypt: only the links being off is left.
	st, v := acme.do("POST", "/api/v1/devicelink/d-acme", map[string]any{"protocol": "udp", "devicePort": 7000, "timeout": 5000,
		"source": map[string]any{"host": "::1", "port": 9000}, "encrypt": map[string]any{"key": strings.Repeat("0f", 32), "initializationVector": strings.Repeat("a0", 16)}})
	if st != http.StatusServiceUnavailable {
		t.Errorf("POST valid body = %d %v, want 503", st, v)
	}
	if strings.Contains(acme.seen.String(), strings.Repeat("0f", 32)) {
		t.Errorf("an answer repeats the encrypt key: %s", acme.seen)
	}
}

// freePorts finds n consecutive ports free for TCP and UDP on 127.0.0.1 (for devicelink.ports,
// which are bound at start), below Linux's ephemeral range so that no connection of another
// process takes one meanwhile.
func freePorts(t *testing.T, n int) (first int) {
	t.Helper()
	free := func(p int) bool {
		tl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		defer tl.Close()
		ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		_ = ul.Close()
		return true
	}
	for range 200 {
		first = 20000 + rand.IntN(12000)
		ok := true
		for p := first; p < first+n && ok; p++ {
			ok = free(p)
		}
		if ok {
			return first
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// linkRelay starts a relay with device links on 127.0.0.1 over ports free ports (its config
// changed by edit); it returns the relay, the bootstrap key's client and the first port.
func linkRelay(t *testing.T, ports int, edit ...func(*config.Config)) (*relay.Relay, *apiClient, int) {
	t.Helper()
	cfg := testConfig(t, nil)
	first := freePorts(t, ports)
	cfg.DeviceLink.Listen = "127.0.0.1"
	cfg.DeviceLink.Ports = fmt.Sprintf("%d-%d", first, first+ports-1)
	for _, e := range edit {
		e(cfg)
	}
	r := startRelay(t, cfg)
	return r, newAPI(t, r, bootstrapKey(t, cfg)), first
}

// connectNative connects device id over the native protocol and sends one frame, so the relay
// knows its address.
func connectNative(t *testing.T, r *relay.Relay, id string) net.Conn {
	t.Helper()
	d := rawConn(t, r.DeviceTCPAddr().String())
	if _, err := d.Write(native.AppendHello(nil, &native.Hello{Serial: id})); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readOne(t, d); typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: type %d, want WELCOME", typ)
	}
	if _, err := d.Write(native.AppendData(nil, 1, []byte(`{"t":1}`))); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readOne(t, d); typ != native.TypeAck {
		t.Fatalf("answer to DATA: type %d, want ACK", typ)
	}
	return d
}

// deviceService is what the device listens on besides its relay connection: the link's far end.
func deviceService(t *testing.T) (net.Listener, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not connect to the device's port")
		return nil
	}
}

// relayed writes msg on from and fails t unless who, reading on to, gets it whole within 10 s.
func relayed(t *testing.T, from, to net.Conn, who, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(to, got); err != nil || string(got) != msg {
		t.Fatalf("%s read %q, %v; want %s", who, got, err, msg)
	}
}

// closedByPeer reports nil once c's peer has closed it (a read answers EOF or a reset).
func closedByPeer(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [256]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return fmt.Errorf("%s still open", c.LocalAddr())
		}
		return nil
	}
}

// pattern fills b with the bytes of a stream at offset off: they depend on their offset and seed.
func pattern(b []byte, off int, seed byte) {
	for i := range b {
		n := off + i
		b[i] = byte(n*7+n>>9) ^ seed
	}
}

// streamOut writes size bytes of seed's pattern to c.
func streamOut(c net.Conn, size int, seed byte) error {
	buf := make([]byte, 256<<10)
	for off := 0; off < size; off += len(buf) {
		b := buf[:min(len(buf), size-off)]
		pattern(b, off, seed)
		if _, err := c.Write(b); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	return nil
}

// streamIn reads size bytes from c and checks they are seed's pattern, byte for byte.
func streamIn(c net.Conn, size int, seed byte) error {
	got, want := make([]byte, 256<<10), make([]byte, 256<<10)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	defer c.SetReadDeadline(time.Time{})
	for off := 0; off < size; {
		n, err := c.Read(got[:min(len(got), size-off)])
		pattern(want[:n], off, seed)
		if !bytes.Equal(got[:n], want[:n]) {
			return fmt.Errorf("%s: the bytes at %d..%d differ from those sent", c.LocalAddr(), off, off+n)
		}
		off += n
		if err != nil && off < size {
			return fmt.Errorf("%s: read at %d of %d: %w", c.LocalAddr(), off, size, err)
		}
	}
	return nil
}

// The TCP link acceptance through the whole relay: a device connected over the native
// protocol also listens on a TCP port; a client creates a link through the API, connects to the
// port it answered, and bytes pass both ways byte-exact at once; the list counts them; a
// second client is refused; DELETE answers 204 and both sockets close; a device deleted through
// the API has its links closed.
func TestDeviceLinkTCPEndToEnd(t *testing.T) {
	r, boot, first := linkRelay(t, 4)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-link", map[string]any{})
	connectNative(t, r, "sn-link")
	svc, devicePort := deviceService(t)

	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-link", map[string]any{"protocol": "tcp", "devicePort": devicePort})
	port, _ := v["port"].(float64)
	token, _ := v["token"].(string)
	if v["deviceIdentifier"] != "SN-LINK" || v["protocol"] != "tcp" || v["devicePort"] != float64(devicePort) || token == "" ||
		int(port) < first || int(port) >= first+4 || v["state"] != "waiting" {
		t.Fatalf("POST devicelink = %v", v)
	}

	client, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dev := accept(t, svc)

	// 100 MB each way at once, generated and checked as they stream.
	const size = 100 << 20
	errs := make(chan error, 4)
	go func() { errs <- streamOut(client, size, 0x5a) }()
	go func() { errs <- streamOut(dev, size, 0xa5) }()
	go func() { errs <- streamIn(dev, size, 0x5a) }()
	go func() { errs <- streamIn(client, size, 0xa5) }()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	l := boot.must(http.StatusOK, "GET", "/api/v1/devicelink?device=SN-link", nil)
	data, _ := l["data"].([]any)
	if len(data) != 1 {
		t.Fatalf("GET devicelink = %v, want the one link", l)
	}
	got := data[0].(map[string]any)
	if got["token"] != token || got["state"] != "open" || got["bytesToDevice"] != float64(size) || got["bytesToClient"] != float64(size) ||
		got["client"] != client.LocalAddr().String() {
		t.Errorf("listed link = %v, want open, %d bytes each way, client %s", got, size, client.LocalAddr())
	}

	second, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := closedByPeer(second); err != nil {
		t.Errorf("a second client: %v, want it refused", err)
	}

	// The links' collectors are the relay's.
	_, metrics := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	for _, want := range []string{"fleetrelay_devicelink_tcp_links 1", `fleetrelay_devicelink_tcp_bytes_total{direction="to_device"} ` + strconv.FormatFloat(size, 'g', -1, 64),
		"fleetrelay_devicelink_udp_links 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	boot.must(http.StatusNoContent, "DELETE", "/api/v1/devicelink/"+token, nil)
	if err := closedByPeer(client); err != nil {
		t.Errorf("after DELETE, the client: %v", err)
	}
	if err := closedByPeer(dev); err != nil {
		t.Errorf("after DELETE, the device: %v", err)
	}
	boot.must(http.StatusNotFound, "DELETE", "/api/v1/devicelink/no-such-token", nil)

	// A device deleted through the API: its link closes.
	v = boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/SN-LINK", map[string]any{"protocol": "tcp", "devicePort": devicePort})
	client2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(v["port"].(float64))))
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Close()
	dev2 := accept(t, svc)
	boot.must(http.StatusNoContent, "DELETE", "/api/v1/devices/sn-link", nil)
	if err := closedByPeer(client2); err != nil {
		t.Errorf("after the device's DELETE, the client: %v", err)
	}
	if err := closedByPeer(dev2); err != nil {
		t.Errorf("after the device's DELETE, the device: %v", err)
	}
}

// Rights with links on: no key 401, another account's key 404, a key without the right 403,
// the account's key 2xx; an account's key neither lists nor closes another account's links.
// Every port in use answers 503; a device never connected 404.
func TestDeviceLinkRights(t *testing.T) {
	r, boot, _ := linkRelay(t, 2)
	held, other, none := rightsKeys(t, boot, "acme devices", "devices:*", "deviceLink:read")
	acme := boot.as(held)
	acme.must(http.StatusCreated, "PUT", "/api/v1/devices/d-acme", map[string]any{})
	acme.must(http.StatusCreated, "PUT", "/api/v1/devices/d-quiet", map[string]any{})
	connectNative(t, r, "d-acme")

	body := map[string]any{"protocol": "tcp", "devicePort": 9}
	for _, k := range []struct {
		who  string
		key  string
		want int
	}{{"no key", "", 401}, {"another account's key", other, 404}, {"a key without the right", none, 403}, {"the account's key", held, 201}} {
		if st, v := boot.as(k.key).do("POST", "/api/v1/devicelink/d-acme", body); st != k.want {
			t.Errorf("POST /api/v1/devicelink/d-acme with %s = %d %v, want %d", k.who, st, v, k.want)
		}
	}
	if st, v := acme.do("POST", "/api/v1/devicelink/d-quiet", body); st != http.StatusNotFound || !strings.Contains(fmt.Sprint(v["detail"]), "not connected") {
		t.Errorf("POST for a device never connected = %d %v, want 404", st, v)
	}
	acme.must(http.StatusCreated, "POST", "/api/v1/devicelink/d-acme", body)
	if st, v := acme.do("POST", "/api/v1/devicelink/d-acme", body); st != http.StatusServiceUnavailable {
		t.Errorf("POST with every port in use = %d %v, want 503", st, v)
	}

	list := func(c *apiClient) []any {
		t.Helper()
		data, _ := c.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)["data"].([]any)
		return data
	}
	if n := len(list(acme)); n != 2 {
		t.Errorf("the account's key lists %d links, want 2", n)
	}
	if n := len(list(boot.as(none))); n != 2 {
		t.Errorf("deviceLink:read lists %d links, want 2", n)
	}
	if data := list(boot.as(other)); len(data) != 0 {
		t.Errorf("another account's key lists %v, want none", data)
	}
	token := list(acme)[0].(map[string]any)["token"].(string)
	for _, k := range []struct {
		who  string
		key  string
		want int
	}{{"no key", "", 401}, {"another account's key", other, 404}, {"a key without the right", none, 403}, {"the account's key", held, 204}} {
		if st, v := boot.as(k.key).do("DELETE", "/api/v1/devicelink/"+token, nil); st != k.want {
			t.Errorf("DELETE /api/v1/devicelink/{token} with %s = %d %v, want %d", k.who, st, v, k.want)
		}
	}
}

// ctr is the test's own AES-256-CTR of a link's client leg, written from
// netio/link/ENCRYPTION.md with the standard library alone: direction d (0 client → relay, 1
// relay → client) of a TCP link is one keystream from IV + d·2^127.
func ctr(t *testing.T, key, iv []byte, d int) cipher.Stream {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Clone(iv)
	if d == 1 {
		first[0] ^= 0x80 // + 2^127 mod 2^128: the top bit flipped
	}
	return cipher.NewCTR(b, first)
}

// An encrypted TCP link through the relay: the client's ciphertext, made with the test's own
// AES-256-CTR, reaches the device as plaintext; the device's plaintext reaches the client as
// ciphertext that the test's AES-256-CTR decrypts. The two directions never share keystream:
// equal plaintexts each way give ciphertexts whose XOR is not zero. The key is never answered.
func TestDeviceLinkEncryptedEndToEnd(t *testing.T) {
	r, boot, _ := linkRelay(t, 2)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-enc", map[string]any{})
	connectNative(t, r, "sn-enc")
	svc, devicePort := deviceService(t)

	key, iv := make([]byte, 32), make([]byte, 16)
	pattern(key, 0, 0x11)
	pattern(iv, 0, 0x22)
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-enc", map[string]any{"protocol": "tcp", "devicePort": devicePort,
		"encrypt": map[string]any{"key": hex.EncodeToString(key), "initializationVector": strings.ToUpper(hex.EncodeToString(iv))}})
	if field(v, "encrypt", "initializationVector") != hex.EncodeToString(iv) || field(v, "encrypt", "key") != nil {
		t.Errorf("POST answer's encrypt = %v, want the IV only", field(v, "encrypt"))
	}
	client, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(v["port"].(float64))))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dev := accept(t, svc)

	const size = 1 << 20
	plain := make([]byte, size)
	pattern(plain, 0, 0x33)
	up := make([]byte, size)
	ctr(t, key, iv, 0).XORKeyStream(up, plain)
	errs := make(chan error, 2)
	go func() { _, err := client.Write(up); errs <- err }()
	go func() { _, err := dev.Write(plain); errs <- err }()

	got := make([]byte, size)
	_ = dev.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(dev, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Error("the device did not receive the client's plaintext")
	}
	down := make([]byte, size)
	_ = client.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(client, down); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if bytes.Equal(down, plain) {
		t.Fatal("the relay sent the client plaintext")
	}
	dec := make([]byte, size)
	ctr(t, key, iv, 1).XORKeyStream(dec, down)
	if !bytes.Equal(dec, plain) {
		t.Error("the test's AES-256-CTR does not decrypt what the relay sent the client")
	}
	// Equal plaintexts both ways: were the keystreams shared, the ciphertexts would be equal.
	zero := 0
	for i := range up {
		if up[i]^down[i] == 0 {
			zero++
		}
	}
	if zero > size/128 { // about 1 in 256 bytes agree by chance
		t.Errorf("%d of %d bytes of the two directions' ciphertexts are equal: keystream reused", zero, size)
	}
	if strings.Contains(boot.seen.String(), hex.EncodeToString(key)) {
		t.Error("an answer repeats the key")
	}
	l := boot.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
	if strings.Contains(fmt.Sprint(l), hex.EncodeToString(key)) || field(l["data"].([]any)[0].(map[string]any), "encrypt", "key") != nil {
		t.Errorf("the list shows the key: %v", l)
	}
}

// A UDP link through the relay, pinned to one client address: the device's service answers
// each datagram; what the pinned client sends reaches the device and the answers come back;
// a datagram from another source is not forwarded (the device's first datagram is the pinned
// client's, sent after it); DELETE closes the link.
func TestDeviceLinkUDPEndToEnd(t *testing.T) {
	r, boot, _ := linkRelay(t, 2)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-udp", map[string]any{})
	connectNative(t, r, "sn-udp")
	svc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	devicePort := svc.LocalAddr().(*net.UDPAddr).Port

	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	stranger, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	cport := client.LocalAddr().(*net.UDPAddr).Port
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-udp", map[string]any{"protocol": "udp", "devicePort": devicePort,
		"timeout": 60000, "source": map[string]any{"host": "127.0.0.1", "port": cport}})
	if v["protocol"] != "udp" || v["timeout"] != float64(60000) || field(v, "source", "port") != float64(cport) {
		t.Fatalf("POST devicelink = %v", v)
	}
	link := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(v["port"].(float64))}

	if _, err := stranger.WriteTo([]byte("not pinned"), link); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for i := range 20 {
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := client.WriteTo([]byte(msg), link); err != nil {
			t.Fatal(err)
		}
		_ = svc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := svc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the device's service: %v", err)
		}
		if string(buf[:n]) != msg {
			t.Fatalf("the device received %q, want %q (nothing of the unpinned source)", buf[:n], msg)
		}
		if _, err := svc.WriteTo([]byte("re: "+msg), from); err != nil {
			t.Fatal(err)
		}
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err = client.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the client: %v", err)
		}
		if string(buf[:n]) != "re: "+msg {
			t.Fatalf("the client received %q, want %q", buf[:n], "re: "+msg)
		}
	}
	l := boot.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
	got := l["data"].([]any)[0].(map[string]any)
	if got["bytesToDevice"] == float64(0) || got["bytesToClient"] == float64(0) || got["protocol"] != "udp" {
		t.Errorf("listed link = %v, want bytes counted both ways", got)
	}
	boot.must(http.StatusNoContent, "DELETE", "/api/v1/devicelink/"+v["token"].(string), nil)
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		l := boot.must(http.StatusOK, "GET", "/api/v1/devicelink", nil)
		if st := l["data"].([]any)[0].(map[string]any)["state"]; st != "closed" {
			return fmt.Errorf("state %v after DELETE, want closed", st)
		}
		return nil
	})
}

// Shutdown with links open, TCP paired and UDP waiting, leaves no goroutine behind and closes
// the links' sockets: the client sees its connection end.
func TestDeviceLinkShutdownLeavesNoGoroutines(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(),
		// A worker of ants' default pool, a package variable gnet runs some of its work on
		// (registering a link's device socket with a loop): idle, it leaves on the pool's
		// expiry (≈10 s), not with an engine.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1")}
	r, boot, _ := linkRelay(t, 2)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-stop", map[string]any{})
	connectNative(t, r, "sn-stop")
	svc, devicePort := deviceService(t)
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-stop", map[string]any{"protocol": "tcp", "devicePort": devicePort})
	boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-stop", map[string]any{"protocol": "udp", "devicePort": devicePort})
	client, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(v["port"].(float64))))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dev := accept(t, svc)
	relayed(t, client, dev, "the device", "ping")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := closedByPeer(client); err != nil {
		t.Errorf("after shutdown, the client: %v", err)
	}
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		return goleak.Find(opts...)
	})
}

// A TCP link pinned to a source admits only that host:port: a client from another port is
// refused, the pinned one is paired with the device.
func TestDeviceLinkTCPPinned(t *testing.T) {
	r, boot, _ := linkRelay(t, 2)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-pin", map[string]any{})
	connectNative(t, r, "sn-pin")
	svc, devicePort := deviceService(t)
	pinned := freePorts(t, 1)
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-pin", map[string]any{"protocol": "tcp", "devicePort": devicePort,
		"source": map[string]any{"host": "127.0.0.1", "port": pinned}})
	addr := fmt.Sprintf("127.0.0.1:%d", int(v["port"].(float64)))

	other, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := closedByPeer(other); err != nil {
		t.Errorf("a client from another port: %v, want it refused", err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: pinned}}
	client, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dev := accept(t, svc)
	relayed(t, dev, client, "the pinned client", "hello")
}

// The devicelink section's defaults fill what a request leaves out: device_port for every
// link, timeout for UDP links only; the answer shows them.
func TestDeviceLinkDefaults(t *testing.T) {
	r, boot, _ := linkRelay(t, 2, func(c *config.Config) {
		c.DeviceLink.DevicePort = 7000
		c.DeviceLink.Timeout = config.Duration(90 * time.Second)
	})
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-def", map[string]any{})
	connectNative(t, r, "sn-def")
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-def", map[string]any{"protocol": "udp"})
	if v["devicePort"] != float64(7000) || v["timeout"] != float64(90000) {
		t.Errorf("UDP link without devicePort and timeout = %v, want 7000 and 90000 ms", v)
	}
	v = boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-def", map[string]any{"protocol": "tcp", "timeout": 5000})
	if _, has := v["timeout"]; v["devicePort"] != float64(7000) || has {
		t.Errorf("TCP link = %v, want devicePort 7000 and no timeout (a UDP socket's)", v)
	}
}

// dgramCTR is the test's own construction of a link's UDP datagram, from
// netio/link/ENCRYPTION.md with the standard library alone: an 8-byte big-endian datagram
// number n in clear, then the payload under AES-256-CTR from the counter block
// IV + d·2^127 + n·2^12 (mod 2^128), direction d as for TCP.
func dgramCTR(t *testing.T, key, iv []byte, d int, n uint64, payload []byte) []byte {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	c := new(big.Int).SetBytes(iv)
	c.Add(c, new(big.Int).Lsh(big.NewInt(int64(d)), 127))
	c.Add(c, new(big.Int).Lsh(new(big.Int).SetUint64(n), 12))
	c.Mod(c, new(big.Int).Lsh(big.NewInt(1), 128))
	first := make([]byte, 16)
	c.FillBytes(first)
	out := binary.BigEndian.AppendUint64(nil, n)
	ct := make([]byte, len(payload))
	cipher.NewCTR(b, first).XORKeyStream(ct, payload)
	return append(out, ct...)
}

// An encrypted UDP link through the relay: the client's datagrams, made with the test's own
// construction and sent out of order with gaps (loss), reach the device as plaintext, each
// alone; the device's answers reach the client numbered and encrypted so that the test's own
// construction decrypts them; a datagram the relay cannot open (too short) is not forwarded; the
// two directions' ciphertexts of equal plaintexts differ.
func TestDeviceLinkUDPEncryptedEndToEnd(t *testing.T) {
	r, boot, _ := linkRelay(t, 2)
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/sn-uenc", map[string]any{})
	connectNative(t, r, "sn-uenc")
	svc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	key, iv := make([]byte, 32), make([]byte, 16)
	pattern(key, 0, 0x44)
	pattern(iv, 0, 0x55)
	v := boot.must(http.StatusCreated, "POST", "/api/v1/devicelink/sn-uenc", map[string]any{"protocol": "udp",
		"devicePort": svc.LocalAddr().(*net.UDPAddr).Port, "via": "socket",
		"encrypt": map[string]any{"key": hex.EncodeToString(key), "initializationVector": hex.EncodeToString(iv)}})
	link := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(v["port"].(float64))}

	if _, err := client.WriteTo([]byte{1, 2, 3}, link); err != nil { // shorter than a datagram number
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	plain := bytes.Repeat([]byte("same plaintext both ways "), 8)
	var up, down [][]byte
	for _, n := range []uint64{7, 2, 9, 3} { // out of order, 0, 1, 4..6 and 8 lost
		msg := append([]byte(fmt.Sprintf("%d:", n)), plain...)
		d := dgramCTR(t, key, iv, 0, n, msg)
		up = append(up, d)
		if _, err := client.WriteTo(d, link); err != nil {
			t.Fatal(err)
		}
		_ = svc.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, from, err := svc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the device's service: %v", err)
		}
		if !bytes.Equal(buf[:k], msg) {
			t.Fatalf("the device received %q, want the plaintext of datagram %d (nothing of the short one)", buf[:k], n)
		}
		if _, err := svc.WriteTo(msg, from); err != nil {
			t.Fatal(err)
		}
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err = client.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the client: %v", err)
		}
		got := bytes.Clone(buf[:k])
		down = append(down, got)
		if len(got) < 8 {
			t.Fatalf("the client received %d bytes, want a numbered datagram", len(got))
		}
		num := binary.BigEndian.Uint64(got)
		if want := dgramCTR(t, key, iv, 1, num, msg); !bytes.Equal(got, want) {
			t.Fatalf("answer %x does not decrypt with the test's construction as datagram %d (relay → client)", got, num)
		}
	}
	for i := range up {
		a, b := up[i][8:], down[i][8:]
		if bytes.Equal(a, b) {
			t.Errorf("datagram %d: both directions' ciphertexts of one plaintext are equal", i)
		}
	}
}
