package api_test

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkGetAccount measures an authenticated read through the real server on loopback:
// Host check, key hash and lookup, right check, registry read, JSON answer.
func BenchmarkGetAccount(b *testing.B) {
	e := newEnv(b, envOption{})
	e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "acme"}, 201, nil)
	req, err := http.NewRequest("GET", e.base+"/api/v1/accounts/acme", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.super)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
