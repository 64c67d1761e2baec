package relay_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
)

// spray sends one UDATA (seq 1) for each of n identities named prefix0, prefix1, … from c, in
// bursts it waits for the relay to decode (fleetrelay_device_frames_total reaching frames0 plus
// what was sent), so that no datagram is lost in a full socket buffer.
func spray(t *testing.T, c net.Conn, prefix string, n int, frames func() float64, frames0 float64) {
	t.Helper()
	const burst = 100
	for i := 0; i < n; {
		for end := min(i+burst, n); i < end; i++ {
			id := fmt.Sprintf("%s%d", prefix, i)
			if _, err := c.Write(native.AppendUData(nil, id, "", 1, []byte(`{"spray":1}`))); err != nil {
				t.Fatal(err)
			}
		}
		checkFor(t, 20*time.Second, 2*time.Millisecond, func() error {
			if got := frames() - frames0; got != float64(i) {
				return fmt.Errorf("relay decoded %v of %d datagrams sent", got, i)
			}
			return nil
		})
	}
}

// A spray of 3,000 made-up identities over UDP against devices.max_unknown_identities 50: 50
// are taken and acknowledged, every other one is refused unanswered and counted, and the
// relay holds state for no more than 50. A device of the fleet still gets its ACK over UDP and
// its WELCOME over TCP, while a new unknown one gets ERROR 503 on its HELLO.
func TestUnknownIdentityCap(t *testing.T) {
	const limit, n = 50, 3000
	cfg := testConfig(t, nil)
	cfg.Devices.MaxUnknownIdentities = limit
	cfg.Fleet = []config.Device{{ID: "KNOWNU"}, {ID: "KNOWNT"}}
	r := startRelay(t, cfg)
	frames := func() float64 { return metric(t, r, "fleetrelay_device_frames_total") }

	sprayer := dialUDPDevice(t, r.DeviceUDPAddr().String(), "")
	spray(t, sprayer.c, "SPRAY", n, frames, 0)
	checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		unknown := metric(t, r, "fleetrelay_unknown_identities")
		refused := metric(t, r, "fleetrelay_unknown_identities_refused_total")
		if unknown != limit || refused != n-limit || len(sprayer.acks()) != limit {
			return fmt.Errorf("%v unknown identities held, %v refused, %d ACKs; want %d, %d, %d",
				unknown, refused, len(sprayer.acks()), limit, n-limit, limit)
		}
		return nil
	})

	known := dialUDPDevice(t, r.DeviceUDPAddr().String(), "KNOWNU")
	known.send(1)
	known.waitAcks(1)

	c := rawConn(t, r.DeviceTCPAddr().String())
	if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: "KNOWNT"})); err != nil {
		t.Fatal(err)
	}
	if typ, body := readOne(t, c); typ != native.TypeWelcome {
		t.Fatalf("a device of the fleet got %#x % x on HELLO, want WELCOME", typ, body)
	}
	u := rawConn(t, r.DeviceTCPAddr().String())
	if _, err := u.Write(native.AppendHello(nil, &native.Hello{Serial: "NEWCOMER"})); err != nil {
		t.Fatal(err)
	}
	typ, body := readOne(t, u)
	if code, msg, err := native.ParseError(body); typ != native.TypeError || err != nil || code != native.CodeUnavailable {
		t.Fatalf("an unknown device at the cap got %#x %d %q (%v), want ERROR 503", typ, code, msg, err)
	}
	if got := metric(t, r, "fleetrelay_unknown_identities"); got != limit {
		t.Errorf("%v unknown identities held after the fleet's devices came, want %d", got, limit)
	}
	if len(sprayer.acks()) != limit {
		t.Errorf("%d ACKs for the spray, want %d", len(sprayer.acks()), limit)
	}
}

// What an identity the registry does not know leaves behind once it is gone: with
// max_unknown_identities 1, once a second unknown identity retired after it, nothing. The
// first, its connection closed with everything stored, is first remembered (the store keeps its
// last seq), then forgotten by the actors and the store, and it comes back as new (WELCOME
// lastSeq 0); a device of the fleet is remembered (lastSeq 3).
func TestUnknownIdentityForgotten(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Devices.MaxUnknownIdentities = 1
	cfg.Fleet = []config.Device{{ID: "FLEETDEV"}}
	r := startRelay(t, cfg)
	session := func(serial string, wantLast uint64) {
		t.Helper()
		c := rawConn(t, r.DeviceTCPAddr().String())
		defer c.Close()
		if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: serial})); err != nil {
			t.Fatal(err)
		}
		typ, body := readOne(t, c)
		w, err := native.ParseWelcome(body)
		if typ != native.TypeWelcome || err != nil || w.LastSeq != wantLast {
			t.Fatalf("%s: %#x %+v (%v), want WELCOME lastSeq %d", serial, typ, w, err, wantLast)
		}
		for seq := uint64(1); seq <= 3; seq++ {
			if _, err := c.Write(native.AppendData(nil, seq, []byte(`{"a":1}`))); err != nil {
				t.Fatal(err)
			}
		}
		for acked := uint64(0); acked < 3; {
			typ, body := readOne(t, c)
			if typ != native.TypeAck {
				t.Fatalf("%s: %#x % x, want ACK", serial, typ, body)
			}
			acked, _ = native.ParseAck(body)
		}
	}
	settled := func(wantDevices float64) {
		t.Helper()
		checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
			unknown, devices := metric(t, r, "fleetrelay_unknown_identities"), metric(t, r, "fleetrelay_store_devices")
			if unknown != 0 || devices != wantDevices {
				return fmt.Errorf("%v unknown identities, the store holds %v devices; want 0 and %v", unknown, devices, wantDevices)
			}
			return nil
		})
	}
	session("STRANGER", 0)
	session("FLEETDEV", 0)
	settled(2) // STRANGER retired, and is remembered
	session("STRANGER", 3)
	settled(2)
	session("OTHER", 0)
	settled(2) // OTHER retired after STRANGER: STRANGER is forgotten
	session("STRANGER", 0)
	session("FLEETDEV", 3)
}

// devices.first_data_timeout closes a connection that said HELLO and then only PINGs (ERROR
// 408), unless devices.auth token checked its HELLO: such a device, connected before it to a
// relay with the same deadline, is still answered.
func TestFirstDataTimeoutSparesAuthenticated(t *testing.T) {
	const deadline = 200 * time.Millisecond
	authCfg := testConfig(t, nil)
	authCfg.Devices.Auth = config.AuthToken
	authCfg.Devices.FirstDataTimeout = config.Duration(deadline)
	authCfg.Fleet = []config.Device{{ID: "TOKENED", Token: config.SecretValue("a-device-token-123")}}
	authed := startRelay(t, authCfg)
	openCfg := testConfig(t, nil)
	openCfg.Devices.FirstDataTimeout = config.Duration(deadline)
	open := startRelay(t, openCfg)

	hello := func(r interface{ DeviceTCPAddr() net.Addr }, h native.Hello) net.Conn {
		t.Helper()
		c := rawConn(t, r.DeviceTCPAddr().String())
		if _, err := c.Write(native.AppendHello(nil, &h)); err != nil {
			t.Fatal(err)
		}
		if typ, body := readOne(t, c); typ != native.TypeWelcome {
			t.Fatalf("%s: %#x % x on HELLO, want WELCOME", h.Serial, typ, body)
		}
		return c
	}
	a := hello(authed, native.Hello{Serial: "TOKENED", Token: "a-device-token-123"})
	b := hello(open, native.Hello{Serial: "OPENDEV"})
	for i := 0; ; i++ {
		if _, err := b.Write(native.AppendFrame(nil, native.TypePing, nil)); err != nil {
			t.Fatal(err)
		}
		typ, body := readOne(t, b)
		if typ == native.TypeError {
			if code, msg, err := native.ParseError(body); err != nil || code != native.CodeHelloTimeout {
				t.Fatalf("ERROR %d %q (%v), want 408", code, msg, err)
			}
			break
		}
		if typ != native.TypePong || i > 5000 {
			t.Fatalf("frame %#x after %d PINGs, want PONG until ERROR 408", typ, i)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := a.Write(native.AppendFrame(nil, native.TypePing, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	if typ, body := readOne(t, a); typ != native.TypePong {
		t.Fatalf("the authenticated device got %#x % x, want PONG", typ, body)
	}
	if got := metric(t, open, "fleetrelay_device_first_data_timeouts_total"); got != 1 {
		t.Errorf("fleetrelay_device_first_data_timeouts_total = %v, want 1", got)
	}
	if got := metric(t, authed, "fleetrelay_device_first_data_timeouts_total"); got != 0 {
		t.Errorf("fleetrelay_device_first_data_timeouts_total of the token relay = %v, want 0", got)
	}
}
