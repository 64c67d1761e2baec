package cluster

import (
	"fmt"
	"testing"
)

// Rendezvous hashing: every partition has one winner; a node joining takes partitions only for
// itself, a node leaving hands only its own to the others; the spread is even enough.
func TestLeaseRendezvous(t *testing.T) {
	const parts = 256
	nodes := []string{"relay-a", "relay-b", "relay-c"}
	win := func(live []string) map[int]string {
		m := make(map[int]string)
		for p := range parts {
			m[p] = winner(live, p)
		}
		return m
	}
	three := win(nodes)
	count := make(map[string]int)
	for _, n := range three {
		count[n]++
	}
	for _, n := range nodes {
		if c := count[n]; c < parts/3/2 || c > 2*parts/3 {
			t.Errorf("%s wins %d of %d partitions", n, c, parts)
		}
	}
	four := win(append(nodes[:3:3], "relay-d"))
	for p := range parts {
		if four[p] != three[p] && four[p] != "relay-d" {
			t.Errorf("partition %d moved from %s to %s when relay-d joined", p, three[p], four[p])
		}
	}
	two := win(nodes[:2])
	for p := range parts {
		if three[p] != "relay-c" && two[p] != three[p] {
			t.Errorf("partition %d moved from %s to %s when relay-c left", p, three[p], two[p])
		}
	}
	if winner(nil, 0) != "" {
		t.Error("a winner among no nodes")
	}
	if k := nodeKey("a.b"); k != fmt.Sprintf("x%x", "a.b") {
		t.Errorf("nodeKey(a.b) = %q", k)
	}
}
