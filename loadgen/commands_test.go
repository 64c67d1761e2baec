package loadgen_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// commandingRelay accepts one device, welcomes it, sends the COMMANDs of tasks, and returns the
// RESULTs it reads as "task code data".
func commandingRelay(t *testing.T, tasks ...uint64) (addr string, results <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan string, len(tasks))
	go func() {
		defer close(ch)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			var hdr [native.HeaderLen]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			body := make([]byte, int(binary.BigEndian.Uint32(hdr[:4]))-1)
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			switch hdr[4] {
			case native.TypeHello:
				out := native.AppendWelcome(nil, &native.Welcome{Ack: "persist", MaxFrame: 65536})
				for _, task := range tasks {
					out = native.AppendCommand(out, task, []byte(`{"op":"x"}`))
				}
				if _, err := c.Write(out); err != nil {
					return
				}
			case native.TypeResult:
				res, err := native.ParseResult(body)
				if err != nil {
					ch <- err.Error()
					return
				}
				ch <- fmt.Sprintf("%d %d %s", res.Task, res.Code, res.Data)
			}
		}
	}()
	return l.Addr().String(), ch
}

// A device answers each COMMAND with a RESULT after its delay, with code 1 at FailRatio 1 (0 at
// 0), and a task id it executed already with the same code again, marked as a repeat.
func TestDeviceAnswersCommands(t *testing.T) {
	for _, c := range []struct {
		ratio float64
		code  int
	}{{0, 0}, {1, 1}} {
		addr, results := commandingRelay(t, 7, 8, 7)
		d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: addr, Hello: native.Hello{Serial: "C"},
			Commands: loadgen.CommandConfig{Delay: time.Millisecond, FailRatio: c.ratio}}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := d.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		got := map[string]bool{}
		for range 3 {
			select {
			case r := <-results:
				got[r] = true
			case <-time.After(10 * time.Second):
				t.Fatalf("FailRatio %v: results so far %v, want 3", c.ratio, got)
			}
		}
		for _, want := range []string{
			fmt.Sprintf(`7 %d {"task":7,"repeat":false}`, c.code),
			fmt.Sprintf(`8 %d {"task":8,"repeat":false}`, c.code),
			fmt.Sprintf(`7 %d {"task":7,"repeat":true}`, c.code),
		} {
			if !got[want] {
				t.Errorf("FailRatio %v: results %v, want %q among them", c.ratio, got, want)
			}
		}
		if frames, tasks := d.CommandsReceived(); frames != 3 || tasks != 2 {
			t.Errorf("CommandsReceived = %d, %d; want 3 frames, 2 tasks", frames, tasks)
		}
		d.Close()
	}
}
