package relay_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

func rawConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readOne reads one frame (10 s bound so a broken relay fails the test instead of hanging it).
func readOne(t testing.TB, c net.Conn) (byte, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := c // unbuffered: frames after this one stay in the socket for the next call
	var hdr [native.HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatalf("read frame header: %v", err)
	}
	n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	body := make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("read frame body: %v", err)
	}
	return hdr[4], body
}

// testMalformedUDP sends malformed datagrams and checks none is answered, then one good datagram
// that is.
func testMalformedUDP(t *testing.T, addr string) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := native.AppendUData(nil, "U1", "", 1, []byte(`{"a":1}`))
	bad := [][]byte{
		{0, 0, 0, 0}, // len 0
		{0xff, 0xff, 0xff, 0xff, native.TypeUData},           // oversized
		good[:len(good)-3],                                   // truncated
		native.AppendData(nil, 1, []byte(`{"a":1}`)),         // DATA is not UDP's frame
		native.AppendUData(nil, "U1", "", 2, []byte(`[1]`)),  // non-object record
		append(append([]byte(nil), good...), good...),        // two frames in one datagram
		native.AppendHello(nil, &native.Hello{Serial: "U1"}), // HELLO over UDP
	}
	for _, b := range bad {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1024)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("relay answered a malformed datagram with % x", buf[:n])
	} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v", err)
	}
	if _, err := c.Write(good); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no ACK for a good datagram: %v", err)
	}
	typ, body, _, err := native.Next(buf[:n], 1024)
	if err != nil || typ != native.TypeAck {
		t.Fatalf("answer = % x, want ACK", buf[:n])
	}
	if seq, _ := native.ParseAck(body); seq != 1 {
		t.Errorf("ACK seq = %d, want 1", seq)
	}
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
