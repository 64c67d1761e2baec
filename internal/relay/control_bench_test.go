package relay_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// benchDevices starts a relay with n devices stored through the API, and returns an HTTP client
// (keep-alive, plain: no contract checks), the API's base URL and the bootstrap key.
func benchDevices(b *testing.B, n int) (*http.Client, string, string) {
	return benchDevicesOn(b, testConfig(b, nil), n)
}

// benchDevicesOn is benchDevices with a relay on cfg.
func benchDevicesOn(b *testing.B, cfg *config.Config, n int) (*http.Client, string, string) {
	r := startRelay(b, cfg)
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
	if err != nil {
		b.Fatal(err)
	}
	key := strings.TrimSpace(string(raw))
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "http://" + r.AdminAddr().String() + "/api/v1/devices/"
	for i := range n {
		if st := benchDo(b, c, "PUT", base+fmt.Sprintf("dev-%04d", i), key, `{"tags":["a"],"custom1":"x"}`); st != http.StatusCreated {
			b.Fatalf("PUT device = %d", st)
		}
	}
	return c, base, key
}

func benchDo(b *testing.B, c *http.Client, method, url, key, body string) int {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// benchRequests runs do from 8 clients b.N times in all and reports requests/s; do returns the
// status, which must be want.
func benchRequests(b *testing.B, want int, do func(n int64) int) {
	var i atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if st := do(i.Add(1)); st != want {
				b.Errorf("status %d, want %d", st, want)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkAPIDeviceGet: GET /api/v1/devices/{id} over loopback HTTP from 8 clients (the
// authentication, the registry read, the live state and the JSON answer): requests/s.
func BenchmarkAPIDeviceGet(b *testing.B) {
	const devices = 1000
	c, base, key := benchDevices(b, devices)
	benchRequests(b, http.StatusOK, func(n int64) int {
		return benchDo(b, c, "GET", base+fmt.Sprintf("DEV-%04d", n%devices), key, "")
	})
}

// BenchmarkAPIDevicePut: PUT /api/v1/devices/{id} replacing a device's metadata from 8 clients
// (the check, the durable registry write, the actors' metadata swap): requests/s.
func BenchmarkAPIDevicePut(b *testing.B) {
	const devices = 1000
	c, base, key := benchDevices(b, devices)
	benchRequests(b, http.StatusOK, func(n int64) int {
		return benchDo(b, c, "PUT", base+fmt.Sprintf("dev-%04d", n%devices), key, fmt.Sprintf(`{"tags":["a","t%d"],"custom1":"c%d"}`, n%7, n))
	})
}
