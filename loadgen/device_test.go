package loadgen_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// silentRelay accepts one device, welcomes it and then never acknowledges; it counts the DATA
// frames it reads.
func silentRelay(t *testing.T) (addr string, frames <-chan int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan int, 1)
	go func() {
		defer close(ch)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		n := 0
		for {
			var hdr [native.HeaderLen]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				ch <- n
				return
			}
			body := make([]byte, int(hdr[0])<<24|int(hdr[1])<<16|int(hdr[2])<<8|int(hdr[3])-1)
			if _, err := io.ReadFull(r, body); err != nil {
				ch <- n
				return
			}
			switch hdr[4] {
			case native.TypeHello:
				if _, err := c.Write(native.AppendWelcome(nil, &native.Welcome{Ack: "persist", MaxFrame: 65536})); err != nil {
					return
				}
			case native.TypeData:
				n++
			}
		}
	}()
	return l.Addr().String(), ch
}

// A burst waiting for a full window gives up when its context ends and sends nothing: a run's
// fleet stops sending when the run ends, not one window later.
func TestSendBurstContextStopsWaiting(t *testing.T) {
	addr, frames := silentRelay(t)
	d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: addr, Hello: native.Hello{Serial: "W"}, Window: 2}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	fill := func(seq uint64, recs [][]byte) [][]byte { return append(recs, []byte(`{"x":1}`)) }
	if n, err := d.SendBurstContext(ctx, 8, nil, fill); n != 2 || err != nil {
		t.Fatalf("first burst = %d, %v; want the window of 2", n, err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		n, err := d.SendBurstContext(wctx, 8, nil, fill)
		if n != 0 {
			err = errors.Join(err, errors.New("sent frames after the context ended"))
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the burst returned with the window full: %v", err)
	case <-time.After(50 * time.Millisecond): // waiting, as it should
	}
	wcancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("burst after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the burst still waits for the window after its context ended")
	}
	if d.NextSeq() != 3 || d.Unacked() != 2 {
		t.Errorf("next seq %d, unacked %d; want 3 and 2", d.NextSeq(), d.Unacked())
	}
	d.Close()
	if n := <-frames; n != 2 {
		t.Errorf("the relay read %d DATA frames, want 2", n)
	}
}
