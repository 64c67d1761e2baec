package loadgen

import (
	"math"
	"strconv"
	"testing"
)

func TestAppendFixedMatchesStrconv(t *testing.T) {
	for _, dec := range []int{0, 1, 2, 3, 6} {
		p := math.Pow10(dec)
		for _, v := range []int64{0, 1, 5, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 12345, 4800000, 52399999, -1, -5, -1000, -74500001} {
			got := string(appendFixed(nil, v, dec))
			want := strconv.FormatFloat(float64(v)/p, 'f', dec, 64)
			if got != want {
				t.Errorf("appendFixed(%d, %d) = %s, want %s", v, dec, got, want)
			}
		}
	}
}
