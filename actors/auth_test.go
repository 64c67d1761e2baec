package actors_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/access"
)

// from is a TCP connection from a given address.
type from struct {
	tconn
	addr netip.AddrPort
}

func (c *from) Remote() netip.AddrPort { return c.addr }

// The limiter in token mode: once an address has spent its budget of failed checks, it is
// refused without a check, even with the right token; another address is not.
func TestAuthLimitedSourceRefusedUnchecked(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := actors.NewMetrics(reg)
	sys := actors.New(actors.Options{
		AckMode: actors.AckPersist, MaxFrame: 4096, Journal: &journal{last: map[string]uint64{}}, Metrics: m,
		Auth: actors.AuthToken, AuthLimit: access.NewLimiter(time.Hour, 2),
		Fleet: map[string]*actors.DeviceMeta{"sn1": {TokenHash: actors.TokenHash([]byte("right"))}},
	})
	defer sys.Stop(context.Background())
	attacker := netip.MustParseAddrPort("10.0.0.1:4000")
	other := netip.MustParseAddrPort("[::ffff:10.0.0.2]:4000") // IPv4-mapped: the same as 10.0.0.2

	f := func(addr netip.AddrPort, token string, want error) {
		t.Helper()
		_, err := sys.Open(&from{addr: addr}, &native.Hello{Serial: "SN1", Token: token})
		if !errors.Is(err, want) {
			t.Fatalf("Open(SN1, token %q, from %v) = %v, want %v", token, addr, err, want)
		}
	}
	f(attacker, "wrong1", actors.ErrRefused)
	f(attacker, "wrong2", actors.ErrRefused)
	f(attacker, "right", actors.ErrRefused) // limited: not checked
	f(attacker, "wrong3", actors.ErrRefused)
	f(other, "right", nil)
	for reason, want := range map[string]float64{actors.RefusedBadToken: 2, actors.RefusedLimited: 2, actors.RefusedNoToken: 0, actors.RefusedUnknown: 0} {
		var pm dto.Metric
		if err := m.AuthRefused.WithLabelValues(reason).Write(&pm); err != nil {
			t.Fatal(err)
		}
		if got := pm.GetCounter().GetValue(); got != want {
			t.Errorf("refusals %s = %v, want %v", reason, got, want)
		}
	}
}

// The per-frame cost of admission (what UData adds before dispatching a datagram): nothing in
// mode open, the metadata's lookup in mode known, and the token's SHA-256 and constant-time
// compare in mode token.
func BenchmarkAdmit(b *testing.B) {
	const token = "tok-0123456789abcdef0123456789abcdef"
	for _, mode := range []string{actors.AuthOpen, actors.AuthKnown, actors.AuthToken} {
		b.Run(mode, func(b *testing.B) {
			sys := actors.New(actors.Options{
				AckMode: actors.AckPersist, MaxFrame: 4096, Journal: &journal{last: map[string]uint64{}},
				Auth: mode, AuthLimit: access.NewLimiter(time.Second, 20),
				Fleet: map[string]*actors.DeviceMeta{"SN1": {TokenHash: actors.TokenHash([]byte(token))}},
			})
			defer sys.Stop(context.Background())
			remote := netip.MustParseAddrPort("10.0.0.1:4000")
			tok := []byte(token)
			b.ReportAllocs()
			for b.Loop() {
				if r := sys.Admit("SN1", tok, remote); r != "" {
					b.Fatal(r)
				}
			}
		})
	}
}
