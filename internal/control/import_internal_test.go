package control

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// typicalDevice is a device as an import of a fleet brings it: an identity of 15 characters,
// an IMEI, a site, two tags, a group, an account.
func typicalDevice(i int) config.Device {
	return config.Device{ID: fmt.Sprintf("IMP%012d", i), IMEI: "356938035643809", Custom1: fmt.Sprintf("site-%d", i%97),
		Tags: []string{"cold", "north"}, Groups: []string{"fleet-a"}, Account: "acme"}
}

// The chunk estimate never undercounts a device whose text JSON does not escape: the key, the
// JSON the registry stores (meta included) and Badger's per-entry bytes.
func TestStoredSizeCovers(t *testing.T) {
	now := time.Now().UTC()
	var token [32]byte
	for i := range token {
		token[i] = 255
	}
	for _, d := range []config.Device{typicalDevice(1), {ID: "A"}, {ID: "X", ICCID: "8931089318104314834", Custom2: "k", Custom3: "zzzz", Tags: []string{"a"}, Groups: []string{"b", "c"}}} {
		for _, hash := range [][32]byte{{}, token} {
			v, err := json.Marshal(&registry.Device{ID: d.ID, IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
				Tags: d.Tags, Groups: d.Groups, Account: d.Account, TokenHash: hash,
				Meta: registry.Meta{CreatedAt: now, UpdatedAt: now, Revision: 1 << 40, Source: registry.SourceAPI}})
			if err != nil {
				t.Fatal(err)
			}
			actual := len("g/devices/") + len(d.ID) + len(v) + 2 + 10 // Badger: meta bytes, the version in the key
			if got := storedSize(&d, hash != [32]byte{}); got < actual {
				t.Errorf("storedSize(%+v, token %v) = %d, less than the %d it takes", d, hash != [32]byte{}, got, actual)
			}
		}
	}
}

// The biggest chunk of typical devices one store transaction takes, found by trying: the
// import's chunk of them (estimated) must fit, and is logged beside the limit.
func TestChunkFits(t *testing.T) {
	st, err := store.Open(t.Context(), store.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := registry.Open(t.Context(), registry.NewStoreBackend(st))
	if err != nil {
		t.Fatal(err)
	}
	fits := func(n int) bool {
		changes := make([]any, n)
		for i := range changes {
			d := typicalDevice(i)
			changes[i] = &registry.Device{ID: d.ID, IMEI: d.IMEI, Custom1: d.Custom1, Tags: d.Tags, Groups: d.Groups, Account: d.Account}
		}
		return reg.Apply(context.Background(), changes...) == nil
	}
	lo, hi := 1, chunkRows+1 // fits(lo), !fits(hi)
	if !fits(lo) || fits(hi) {
		t.Fatalf("want one device to fit and %d not to", hi)
	}
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	d := typicalDevice(0)
	size := storedSize(&d, false)
	chunk := min(chunkRows, (chunkBytes+size-1)/size)
	t.Logf("a store transaction takes %d typical devices; the import's chunk of them is %d (estimated %d bytes each)", lo, chunk, size)
	if chunk > lo {
		t.Errorf("the import's chunk of %d typical devices does not fit one transaction (%d do)", chunk, lo)
	}
}
