package relay_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Cluster mode's commands: two relays on a real 3-node JetStream cluster share their tasks. A
// command created through relay B's API reaches a native device connected to relay A at once,
// and the device's RESULT shows through B's API (and A's); a command created through A while
// the device is connected to A shows through B too, with the next id. A device that got a
// COMMAND on A and left without answering gets it again from B when it reconnects there, and
// its RESULT shows through A's API.
func TestClusterCommandsAcrossRelays(t *testing.T) {
	nats := natstest.Start(t, 3)
	cfgA, cfgB := testConfig(t, nil), testConfig(t, nil)
	for _, cfg := range []*config.Config{cfgA, cfgB} {
		cfg.Cluster.NATS.URL, cfg.Cluster.NATS.Prefix = nats.URL(), "relaytest"
	}
	ra, rb := startRelay(t, cfgA), startRelay(t, cfgB)
	apiA, apiB := newAPI(t, ra, bootstrapKey(t, cfgA)), newAPI(t, rb, bootstrapKey(t, cfgB))

	const dev = "CLUSTERCMD1"
	apiA.must(http.StatusCreated, "PUT", "/api/v1/devices/"+dev, map[string]any{"tags": []string{"cmd"}})
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if st, _ := apiB.do("GET", "/api/v1/devices/"+dev, nil); st != http.StatusOK {
			return fmt.Errorf("GET on B of the device created through A = %d", st)
		}
		return nil
	})
	rs := &results{code: map[string]uint8{}, answers: map[string]int{}}
	d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: ra.DeviceTCPAddr().String(), Hello: native.Hello{Serial: dev},
		Commands: loadgen.CommandConfig{OnResult: rs.on(dev)}}, 1)
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}

	succeeded := func(api *apiClient, relay string, id uint64) {
		t.Helper()
		checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
			var tk apiTask
			st, raw := api.raw("GET", fmt.Sprintf("/api/v1/devices/%s/commands/%d", dev, id), "", nil)
			if st != http.StatusOK {
				return fmt.Errorf("GET task %d on %s = %d %s", id, relay, st, raw)
			}
			if err := json.Unmarshal(raw, &tk); err != nil {
				return err
			}
			want := fmt.Sprintf(`{"task":%d,"repeat":false}`, id)
			if tk.State != "succeeded" || tk.Code == nil || *tk.Code != 0 || string(tk.Result) != want || tk.Sends != 1 {
				return fmt.Errorf("task %d on %s: %s, code %v, result %s, sends %d; want succeeded, 0, %s, 1",
					id, relay, tk.State, tk.Code, tk.Result, tk.Sends, want)
			}
			return nil
		})
	}
	v := apiB.must(http.StatusCreated, "POST", "/api/v1/devices/"+dev+"/commands",
		map[string]any{"payload": map[string]any{"op": "setInterval", "interval": 30}})
	if v["task"] != float64(1) || v["state"] != "queued" {
		t.Fatalf("POST through B = %v, want task 1 queued", v)
	}
	succeeded(apiB, "B", 1)
	succeeded(apiA, "A", 1)

	v = apiA.must(http.StatusCreated, "POST", "/api/v1/devices/"+dev+"/commands",
		map[string]any{"payload": map[string]any{"op": "reboot"}})
	if v["task"] != float64(2) {
		t.Fatalf("POST through A = %v, want task 2", v)
	}
	succeeded(apiB, "B", 2)
	rs.mu.Lock()
	for id := uint64(1); id <= 2; id++ {
		if k := fmt.Sprintf("%s/%d", dev, id); rs.answers[k] != 1 {
			t.Errorf("the device answered task %d %d times, want once", id, rs.answers[k])
		}
	}
	rs.mu.Unlock()

	// A device that got its COMMAND on A and left without answering reconnects to B (as after
	// A's loss): B sends the task again, and the RESULT it gets shows through A's API.
	const moved = "CLUSTERCMD2"
	apiB.must(http.StatusCreated, "PUT", "/api/v1/devices/"+moved, map[string]any{})
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if st, _ := apiA.do("GET", "/api/v1/devices/"+moved, nil); st != http.StatusOK {
			return fmt.Errorf("GET on A of the device created through B = %d", st)
		}
		return nil
	})
	hello := func(addr string) net.Conn {
		t.Helper()
		c := rawConn(t, addr)
		if _, err := c.Write(native.AppendHello(nil, &native.Hello{Serial: moved})); err != nil {
			t.Fatal(err)
		}
		if typ, body := readOne(t, c); typ != native.TypeWelcome {
			t.Fatalf("answer to HELLO: %#x %q", typ, body)
		}
		return c
	}
	command := func(c net.Conn, relay string) {
		t.Helper()
		typ, body := readOne(t, c)
		if typ != native.TypeCommand || binary.BigEndian.Uint64(body) != 1 || string(body[8:]) != `{"op":"locate"}` {
			t.Fatalf("frame from %s: %#x %q, want the COMMAND of task 1", relay, typ, body)
		}
	}
	onA := hello(ra.DeviceTCPAddr().String())
	apiB.must(http.StatusCreated, "POST", "/api/v1/devices/"+moved+"/commands", map[string]any{"payload": map[string]any{"op": "locate"}})
	command(onA, "A")
	onA.Close()
	waitState := func(api *apiClient, relay, want string, sends int) apiTask {
		t.Helper()
		var tk apiTask
		checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
			st, raw := api.raw("GET", "/api/v1/devices/"+moved+"/commands/1", "", nil)
			if st != http.StatusOK {
				return fmt.Errorf("GET on %s = %d %s", relay, st, raw)
			}
			if err := json.Unmarshal(raw, &tk); err != nil {
				return err
			}
			if tk.State != want || tk.Sends != sends {
				return fmt.Errorf("task on %s: %s, sends %d; want %s, %d", relay, tk.State, tk.Sends, want, sends)
			}
			return nil
		})
		return tk
	}
	waitState(apiB, "B", "sent", 1)
	onB := hello(rb.DeviceTCPAddr().String())
	command(onB, "B")
	if _, err := onB.Write(native.AppendResult(nil, 1, 0, []byte(`{"where":"here"}`))); err != nil {
		t.Fatal(err)
	}
	if tk := waitState(apiA, "A", "succeeded", 2); string(tk.Result) != `{"where":"here"}` {
		t.Errorf("result on A = %s, want the device's", tk.Result)
	}
}
