package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// BenchmarkCommandRoundTrip: the command round trip with 1,000 connected devices (loadgen's,
// answering at once): POST /api/v1/devices/{id}/commands → COMMAND on the device's connection →
// RESULT → the task's state succeeded as GET .../commands/{task} shows it. 32 clients, each with
// one command in flight on its own devices; p50 and p99 of the round trip and the commands
// completed per second. The state is read once the device has answered, then every 0.5 ms.
func BenchmarkCommandRoundTrip(b *testing.B) {
	const devices, clients = 1000, 32
	cfg := testConfig(b, nil)
	r := startRelay(b, cfg)
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
	if err != nil {
		b.Fatal(err)
	}
	key := strings.TrimSpace(string(raw))
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * clients}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "http://" + r.AdminAddr().String() + "/api/v1/devices/"
	answered := make([]chan uint64, devices)
	for i := range devices {
		id := fmt.Sprintf("cmd-%04d", i)
		if st := benchDo(b, c, "PUT", base+id, key, `{"tags":["a"]}`); st != http.StatusCreated {
			b.Fatalf("PUT device = %d", st)
		}
		ch := make(chan uint64, 16)
		answered[i] = ch
		d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTCPAddr().String(), Hello: native.Hello{Serial: id},
			Commands: loadgen.CommandConfig{OnResult: func(task uint64, _ uint8, _ bool) { ch <- task }}}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.Connect(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(d.Close)
	}

	var (
		mu   sync.Mutex
		lats []time.Duration
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for n := 0; next.Add(1) <= int64(b.N); n++ {
				dev := w + (n*clients)%(devices-devices%clients) // this client's devices only
				id := fmt.Sprintf("cmd-%04d", dev)
				t0 := time.Now()
				task, err := benchPost(c, base+id+"/commands", key, `{"payload":{"op":"setInterval","interval":60},"ttl":"1h"}`)
				if err != nil {
					b.Error(err)
					return
				}
				for got := range answered[dev] {
					if got == task {
						break
					}
				}
				for !benchSucceeded(b, c, fmt.Sprintf("%s%s/commands/%d", base, id, task), key) {
					time.Sleep(500 * time.Microsecond)
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lats) == 0 {
		return
	}
	slices.Sort(lats)
	q := func(p float64) float64 { return float64(lats[int(p*float64(len(lats)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "commands/s")
}

// benchPost creates a task and returns its id.
func benchPost(c *http.Client, url, key, body string) (uint64, error) {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("POST %s = %d %s", url, resp.StatusCode, raw)
	}
	var v struct {
		Task uint64 `json:"task"`
	}
	return v.Task, json.Unmarshal(raw, &v)
}

// benchSucceeded reports whether the task at url is succeeded.
func benchSucceeded(b *testing.B, c *http.Client, url, key string) bool {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		b.Error(err)
		return true
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return true
	}
	defer resp.Body.Close()
	var v struct {
		State string `json:"state"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		b.Error(err)
		return true
	}
	return v.State == "succeeded"
}
