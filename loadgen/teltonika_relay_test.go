package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Teltonika fleets through a real relay to a real sink, over TCP and UDP: packets of 1–50
// records answered with their counts, and every record a tracker had acknowledged delivered,
// checked by IMEI and record counter (the relay numbers packets its own way).
func TestTeltonikaThroughRelay(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := relayConfig(t, sink.URL())
	cfg.Devices.Teltonika.TCP = "127.0.0.1:0"
	cfg.Devices.Teltonika.UDP = "127.0.0.1:0"
	rl := relaytest.Start(t, cfg)
	for i, proto := range []string{loadgen.ProtocolTeltonikaTCP, loadgen.ProtocolTeltonikaUDP} {
		t.Run(proto, func(t *testing.T) {
			sink.Reset()
			rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{Protocol: proto,
				Addr: rl.TeltonikaTCPAddr().String(), UDPAddr: rl.TeltonikaUDPAddr().String(),
				Devices: 20, Records: 1, RecordsMax: 50, Rate: 10, Duration: time.Second,
				IMEIBase: 356307042000000 + uint64(i)*1000})
			if err != nil {
				t.Fatal(err)
			}
			tr := rep.Teltonika
			if tr.Packets == 0 || rep.Unacked != 0 || rep.Errors != 0 {
				t.Fatalf("teltonika %+v, unacked %d, errors %d", *tr, rep.Unacked, rep.Errors)
			}
			req := rep.AccountRequest(true)
			a, err := loadgen.WaitAccount(context.Background(), req.Expect().Total(),
				func(context.Context) (int64, error) { return int64(sink.Stats().Unique), nil },
				func(context.Context) (loadgen.AccountReport, error) { return sink.Account(req.Expect()), nil },
				loadgen.DrainOptions{Quiet: 10 * time.Second, Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if a.Lost != 0 || a.Expected != tr.RecordsAcked || a.Extra != 0 {
				t.Fatalf("%d records acknowledged; account: %s", tr.RecordsAcked, a.String())
			}
			if lat := sink.Snapshot().LatencyUs; lat.Count < a.Expected {
				t.Errorf("end-to-end latency of %d records, want one per record delivered (%d)", lat.Count, a.Expected)
			}
		})
	}
}

// A Codec 12 getinfo round trip through the relay's commands API with loadgen's trackers: while
// they send packets at a rate, a getinfo command to each is sent as a Codec 12 frame between its
// packets, and each task completes with the tracker's getinfo text.
func TestTeltonikaCommandsThroughRelay(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := relayConfig(t, sink.URL())
	cfg.Devices.Teltonika.TCP = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	rl := relaytest.Start(t, cfg)
	key, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	api := func(method, path string, body any) (int, []byte) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, err := http.NewRequest(method, "http://"+rl.AdminAddr().String()+path, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	const devices, base = 3, 356307044000000
	imei := func(i int) string { return fmt.Sprintf("%015d", base+i) }
	for i := range devices {
		if code, out := api("PUT", "/api/v1/devices/"+imei(i), map[string]any{"tags": []string{"fmb920"}}); code/100 != 2 {
			t.Fatalf("PUT device: %d %s", code, out)
		}
	}
	connected := make(chan struct{})
	done := make(chan *loadgen.RunReport, 1)
	go func() {
		rep, err := loadgen.Run(context.Background(), loadgen.RunOptions{Protocol: loadgen.ProtocolTeltonikaTCP,
			Addr: rl.TeltonikaTCPAddr().String(), Devices: devices, Records: 5, Rate: 4, Duration: 4 * time.Second,
			IMEIBase: base, OnConnected: func() { close(connected) }})
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	<-connected
	tasks := map[string]float64{}
	for i := range devices {
		code, out := api("POST", "/api/v1/devices/"+imei(i)+"/commands", map[string]any{"payload": map[string]any{"text": "getinfo"}})
		var v struct{ Task float64 }
		if code != http.StatusCreated || json.Unmarshal(out, &v) != nil {
			t.Fatalf("POST command: %d %s", code, out)
		}
		tasks[imei(i)] = v.Task
	}
	for id, task := range tasks {
		checkfor.Check(t, 20*time.Second, 20*time.Millisecond, func() error {
			code, out := api("GET", "/api/v1/devices/"+id+"/commands", nil)
			var page struct {
				Data []struct {
					ID     float64         `json:"task"`
					State  string          `json:"state"`
					Result json.RawMessage `json:"result"`
				} `json:"data"`
			}
			if code != http.StatusOK || json.Unmarshal(out, &page) != nil {
				return fmt.Errorf("GET commands: %d %s", code, out)
			}
			for _, tk := range page.Data {
				if tk.ID != task {
					continue
				}
				var res struct{ Text string }
				if tk.State != "succeeded" || json.Unmarshal(tk.Result, &res) != nil || !strings.HasPrefix(res.Text, "INI:") {
					return fmt.Errorf("task %v: %s %s", task, tk.State, tk.Result)
				}
				return nil
			}
			return fmt.Errorf("task %v not listed: %s", task, out)
		})
	}
	rep := <-done
	if rep == nil || rep.Teltonika.Commands != devices || rep.Unacked != 0 {
		t.Fatalf("report %+v", rep)
	}
}
