package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// ChurnSpec makes the control plane busy while the fleet sends: device metadata replaced through
// the admin API (PUT /api/v1/devices/{id}) at a steady rate, over the fleet's own devices, so
// the data path reads metadata that keeps changing.
type ChurnSpec struct {
	Rate float64 `yaml:"rate"` // device updates per second (default 1000)
}

// ChurnResult is what the churn achieved during the load.
type ChurnResult struct {
	Asked    float64 `json:"asked"`    // updates per second asked for
	Requests int64   `json:"requests"` // updates answered 2xx
	Errors   int64   `json:"errors"`   // other answers and transport errors
	PerSec   float64 `json:"perSec"`   // answered 2xx per second of load
	P50Ms    float64 `json:"p50Ms"`    // request latency
	P99Ms    float64 `json:"p99Ms"`
	LastErr  string  `json:"lastError,omitempty"`
}

// newKey makes the bootstrap key the bench's relay runs with (admin.bootstrap_key): the churn
// and the profiles authenticate with it.
func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "fr_" + base64.RawURLEncoding.EncodeToString(b)
}

// churner replaces device metadata at a steady rate until stopped.
type churner struct {
	quit chan struct{}
	done chan struct{}
	res  ChurnResult
	lat  []time.Duration
}

// startChurn starts updating the metadata of devices prefix000000.. through admin's API at
// spec.Rate per second, spread over workers that each keep one request in flight.
func startChurn(ctx context.Context, spec *ChurnSpec, admin, key, prefix string, devices int) *churner {
	c := &churner{quit: make(chan struct{}), done: make(chan struct{}), res: ChurnResult{Asked: spec.Rate}}
	const workers = 64
	tick := time.Duration(float64(time.Second) / spec.Rate)
	due := make(chan int, workers)
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range due {
				id := fmt.Sprintf("%s%06d", prefix, n%devices)
				body := fmt.Sprintf(`{"custom1":"c%d","tags":["churn","t%d"]}`, n, n%7)
				req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+admin+"/api/v1/devices/"+id, strings.NewReader(body))
				if err != nil {
					continue
				}
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := client.Do(req)
				d := time.Since(t0)
				ok := false
				var msg string
				if err == nil {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					resp.Body.Close()
					ok = resp.StatusCode/100 == 2
					if !ok {
						msg = resp.Status + ": " + strings.TrimSpace(string(b))
					}
				} else {
					msg = err.Error()
				}
				mu.Lock()
				if ok {
					c.res.Requests++
					c.lat = append(c.lat, d)
				} else {
					c.res.Errors++
					c.res.LastErr = msg
				}
				mu.Unlock()
			}
		}()
	}
	go func() {
		defer close(c.done)
		defer wg.Wait()
		defer close(due)
		start := time.Now()
		for n := 0; ; n++ {
			if wait := time.Until(start.Add(time.Duration(n) * tick)); wait > 0 {
				select {
				case <-c.quit:
					return
				case <-time.After(wait):
				}
			}
			select {
			case <-c.quit:
				return
			case due <- n:
			default: // every worker busy: the API is slower than asked; this update is skipped
				mu.Lock()
				c.res.Errors++
				c.res.LastErr = "skipped: every worker busy"
				mu.Unlock()
			}
		}
	}()
	return c
}

// stop ends the churn and returns what it achieved over seconds of load.
func (c *churner) stop(seconds float64) *ChurnResult {
	close(c.quit)
	<-c.done
	sort.Slice(c.lat, func(i, j int) bool { return c.lat[i] < c.lat[j] })
	pct := func(p float64) float64 {
		if len(c.lat) == 0 {
			return 0
		}
		return ms(c.lat[min(len(c.lat)-1, int(p*float64(len(c.lat))))])
	}
	c.res.P50Ms, c.res.P99Ms = pct(0.50), pct(0.99)
	if seconds > 0 {
		c.res.PerSec = float64(c.res.Requests) / seconds
	}
	return &c.res
}
