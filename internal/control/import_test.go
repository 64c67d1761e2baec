package control_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// An import writes every good row and rejects each bad one with its line, in line order, also
// when its rows are far larger in the store than the chunk estimate thinks (text JSON escapes
// six-fold: the chunk is refused by the store and split until its parts fit), and when a row
// names another account than the importing key's or a device of another account.
func TestImportChunks(t *testing.T) {
	p := start(t, t.TempDir())
	for _, a := range []string{"acme", "other"} {
		if err := p.reg.Create(t.Context(), &registry.Account{ID: a, Name: a}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.reg.Create(t.Context(), &registry.Device{ID: "THEIRS", Account: "other"}); err != nil {
		t.Fatal(err)
	}
	im := p.c.NewImport("acme")
	escaped := strings.Repeat("<", 1000) // 6,000 bytes of JSON each
	const n = 3000
	for line := 1; line <= n; line++ {
		d := config.Device{ID: fmt.Sprintf("dev%04d", line), Custom1: escaped, Tags: []string{"t"}}
		switch line {
		case 10:
			d.IMEI = "12"
		case 777:
			d.Account = "other"
		case 1500:
			d.ID = "theirs"
		case 2999:
			im.Reject(line, "", fmt.Errorf("unreadable"))
			continue
		}
		if err := im.Add(t.Context(), line, d, nil); err != nil {
			t.Fatalf("Add line %d: %v", line, err)
		}
	}
	upserted, rejected, err := im.Finish(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if upserted != n-4 {
		t.Errorf("upserted %d, want %d", upserted, n-4)
	}
	var got []string
	for _, r := range rejected {
		got = append(got, fmt.Sprintf("%d %s", r.Line, r.ID))
	}
	if want := "[10 DEV0010 777 DEV0777 1500 THEIRS 2999 ]"; fmt.Sprint(got) != want {
		t.Errorf("rejected %v, want %s", got, want)
	}
	for _, id := range []string{"DEV0001", "DEV1499", "DEV3000"} {
		d, ok := p.reg.Device(id)
		if !ok || d.Account != "acme" || d.Custom1 != escaped {
			t.Errorf("device %s after the import: %v %+v", id, ok, d)
		}
	}
	if d, _ := p.reg.Device("THEIRS"); d.Account != "other" || d.Revision != 1 {
		t.Errorf("another account's device after the import: %+v", d)
	}
}
