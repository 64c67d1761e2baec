package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
)

// Command results through the real relay: a device sends DATA and RESULT frames on one TCP
// connection; a sensoro route with body object receives a sensor-data push for each DATA record
// and a task event for each RESULT, in the order the device sent them. RESULTs are not
// acknowledged and do not disturb the DATA acknowledgements around them.
func TestCommandResultsDelivered(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies [][]byte
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	defer srv.Close()

	cfg := testConfig(t, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Format, rt.AppID, rt.DeviceType, rt.Body = "s", srv.URL+"/sensoro", "sensoro", "123456", "node", config.BodyObject
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, rt)
	cfg.Resolve()
	r := startRelay(t, cfg)

	c := rawConn(t, r.DeviceTCPAddr().String())
	send := func(frame []byte) {
		t.Helper()
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	send(native.AppendHello(nil, &native.Hello{Serial: "R1", IMEI: "356307042441013"}))
	if typ, body := readOne(t, c); typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: type %#x %s", typ, body)
	}
	expectAck := func(seq uint64) {
		t.Helper()
		typ, body := readOne(t, c)
		if typ != native.TypeAck {
			t.Fatalf("frame type %#x (%q), want ACK %d", typ, body, seq)
		}
		if got, _ := native.ParseAck(body); got != seq {
			t.Fatalf("ACK %d, want %d", got, seq)
		}
	}

	send(native.AppendData(nil, 1, []byte(`{"temperature":21.5}`)))
	expectAck(1)
	send(native.AppendResult(nil, 42, 1, []byte(`{"interval":60,"error":"busy"}`)))
	send(native.AppendData(nil, 2, []byte(`{"temperature":22}`)))
	expectAck(2) // the RESULT between took no part in the seq chain
	send(native.AppendResult(nil, 43, 0, []byte(`{}`)))
	send(native.AppendData(nil, 3, []byte(`{"temperature":23}`)))
	expectAck(3)
	// No ACK (or anything else) for the RESULTs.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var buf [64]byte
	if n, err := c.Read(buf[:]); n > 0 {
		t.Fatalf("the relay sent % x after the last ACK", buf[:n])
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read after the last ACK: %v", err)
	}

	type push struct {
		AppID       string          `json:"appId"`
		SN          string          `json:"sn"`
		Type        string          `json:"type"`
		DeviceType  *string         `json:"deviceType"`
		TaskID      *string         `json:"taskId"`
		CreatedTime int64           `json:"createdTime"`
		MsgID       string          `json:"msgId"`
		Data        json.RawMessage `json:"data"`
		ResultCode  *int            `json:"resultCode"`
		ResultData  json.RawMessage `json:"resultData"`
	}
	var pushes []push
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) < 5 {
			return fmt.Errorf("%d of 5 pushes arrived", len(bodies))
		}
		pushes = pushes[:0]
		for _, b := range bodies {
			var p push
			if err := json.Unmarshal(b, &p); err != nil {
				return fmt.Errorf("body %s is not one JSON object: %v", b, err)
			}
			pushes = append(pushes, p)
		}
		return nil
	})
	if len(pushes) != 5 {
		t.Fatalf("%d pushes, want 5 (nothing twice)", len(pushes))
	}
	now := time.Now().UnixMilli()
	for i, p := range pushes {
		if p.AppID != "123456" || p.SN != "R1" || p.CreatedTime < now-60_000 || p.CreatedTime > now {
			t.Errorf("push %d: appId %q, sn %q, createdTime %d", i, p.AppID, p.SN, p.CreatedTime)
		}
	}
	data := func(i int, msgID, record string) {
		t.Helper()
		p := pushes[i]
		if p.Type != "text" || p.DeviceType == nil || *p.DeviceType != "node" || p.MsgID != msgID ||
			string(p.Data) != record || p.TaskID != nil || p.ResultCode != nil || p.ResultData != nil {
			t.Errorf("push %d = %s, want the sensor-data push %s of %s", i, bodies[i], msgID, record)
		}
	}
	event := func(i int, task string, code int, result string) {
		t.Helper()
		p := pushes[i]
		if p.Type != "event" || p.TaskID == nil || *p.TaskID != task || p.ResultCode == nil || *p.ResultCode != code ||
			string(p.ResultData) != result || p.MsgID != "R1-0-"+task || p.Data != nil || p.DeviceType != nil {
			t.Errorf("push %d = %s, want the task event of task %s, code %d, data %s", i, bodies[i], task, code, result)
		}
	}
	data(0, "R1-1-0", `{"temperature":21.5}`)
	event(1, "42", 1, `{"interval":60,"error":"busy"}`)
	data(2, "R1-2-0", `{"temperature":22}`)
	event(3, "43", 0, `{}`)
	data(4, "R1-3-0", `{"temperature":23}`)
}
