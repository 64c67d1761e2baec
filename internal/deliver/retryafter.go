package deliver

import (
	"net/http"
	"time"
)

// maxRetryAfter caps delta-seconds values so that absurd numbers do not
// overflow a Duration.
const maxRetryAfter = 365 * 24 * time.Hour

// ParseRetryAfter parses a Retry-After header value, delta-seconds ("120")
// or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT"), into the wait from now.
// A date in the past gives 0. ok is false when v is neither.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	return parseRetryAfter([]byte(v), now)
}

func parseRetryAfter(v []byte, now time.Time) (time.Duration, bool) {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	if len(v) == 0 {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		var secs int64
		for _, c := range v {
			if c < '0' || c > '9' {
				return 0, false
			}
			if secs < int64(maxRetryAfter/time.Second) {
				secs = secs*10 + int64(c-'0')
			}
		}
		return min(time.Duration(secs)*time.Second, maxRetryAfter), true
	}
	t, err := http.ParseTime(string(v))
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}
