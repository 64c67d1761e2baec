package netio

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// ackDispatcher hands the test each connection that said HELLO; it answers WELCOME itself.
type ackDispatcher struct{ conns chan Conn }

func (d *ackDispatcher) Open(c Conn, _ *native.Hello) (Session, error) {
	c.Write(native.AppendWelcome(nil, &native.Welcome{Ack: "persist", MaxFrame: native.DefaultMaxFrame}))
	d.conns <- c
	return ackSession{}, nil
}
func (d *ackDispatcher) UData(Conn, *native.UData, []byte)                    {}
func (d *ackDispatcher) Lines(string, bool, netip.AddrPort, [][]byte, func()) {}

type ackSession struct{}

func (ackSession) Data(uint64, [][]byte, []byte) {}
func (ackSession) Result(*native.Result, []byte) {}
func (ackSession) Closed()                       {}

// Cumulative ACKs through Acker on a real gnet engine: WELCOME (written first) comes first, the
// ACKs a device sees never go down, concurrent Acks coalesce without losing the highest, a lower
// or equal seq adds nothing, and again repeats the highest.
func TestAckerOrderAndCoalescing(t *testing.T) {
	d := &ackDispatcher{conns: make(chan Conn, 1)}
	s := New(Options{TCP: "127.0.0.1:0", EventLoops: 2}, d)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Stop(context.Background()) }()
	dev, err := net.Dial("tcp", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Write(native.AppendHello(nil, &native.Hello{Serial: "ACK1"})); err != nil {
		t.Fatal(err)
	}
	var c Conn
	select {
	case c = <-d.conns:
	case <-time.After(10 * time.Second):
		t.Fatal("no HELLO reached the dispatcher")
	}
	a, ok := c.(Acker)
	if !ok {
		t.Fatalf("%T does not implement Acker", c)
	}
	r := bufio.NewReader(dev)
	next := func() (byte, []byte) {
		t.Helper()
		_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
		frame := make([]byte, 4)
		if _, err := io.ReadFull(r, frame); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		frame = append(frame, make([]byte, binary.BigEndian.Uint32(frame))...)
		if _, err := io.ReadFull(r, frame[4:]); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		typ, body, _, err := native.Next(frame, native.DefaultMaxFrame)
		if err != nil {
			t.Fatalf("frame % x: %v", frame, err)
		}
		return typ, body
	}
	ack := func() uint64 {
		t.Helper()
		typ, body := next()
		if typ != native.TypeAck {
			t.Fatalf("frame type %#x, want ACK", typ)
		}
		seq, err := native.ParseAck(body)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}

	if typ, _ := next(); typ != native.TypeWelcome {
		t.Fatalf("first frame type %#x, want WELCOME", typ)
	}

	// 1,000 Acks from 4 goroutines at once: what arrives rises and ends at the highest.
	const n = 1000
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			for seq := uint64(1 + g); seq <= n; seq += 4 {
				a.Ack(seq, false)
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	var last uint64
	for frames := 0; last < n; frames++ {
		seq := ack()
		if seq <= last {
			t.Fatalf("ACK %d after ACK %d: want each higher", seq, last)
		}
		if frames >= n {
			t.Fatalf("more ACK frames than Acks")
		}
		last = seq
	}

	a.Ack(n-1, false) // lower: nothing
	a.Ack(n, false)   // equal: nothing
	a.Ack(n-5, true)  // again: the highest once more
	if seq := ack(); seq != n {
		t.Fatalf("Ack(%d, again) wrote ACK %d, want %d", n-5, seq, n)
	}
	a.Ack(n+1, false)
	if seq := ack(); seq != n+1 {
		t.Fatalf("after the repeat, ACK %d, want %d (the lower and equal Acks wrote nothing)", seq, n+1)
	}

	c.Close()
	a.Ack(n+2, false) // after Close: nothing written, nothing panics
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("a byte after Close, want EOF")
	}
}
