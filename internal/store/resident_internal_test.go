package store

import (
	"math/rand/v2"
	"testing"
)

func TestCountSet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(8))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		from := uint32(r.IntN(70))
		to := from + uint32(r.IntN(70))
		want := 0
		for p := from; p < to; p++ {
			if int(p>>3) < len(b) && b[p>>3]&(1<<(p&7)) != 0 {
				want++
			}
		}
		if got := countSet(b, from, to); got != want {
			t.Fatalf("countSet(%08b, %d, %d) = %d, want %d", b, from, to, got, want)
		}
	}
}
