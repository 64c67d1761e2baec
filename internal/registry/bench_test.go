package registry_test

import (
	"fmt"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/registry"
)

const benchDevices = 10000

func benchEnv(b *testing.B) *env {
	e := newEnv(b)
	var batch []any
	for i := range benchDevices {
		batch = append(batch, &registry.Device{ID: fmt.Sprintf("DEV%05d", i), IMEI: "350000000000001",
			Custom1: "site-7", Tags: []string{"cold", "north"}, Groups: []string{"fleet-a"}, Account: "acme"})
		if len(batch) == 500 || i == benchDevices-1 {
			if err := e.reg.Apply(ctx, batch...); err != nil {
				b.Fatalf("Apply(%d devices) = %v", len(batch), err)
			}
			batch = batch[:0]
		}
	}
	return e
}

// The registry's part of GET /api/v1/devices/{id}: one device of 10,000, by an upper-case ID
// (as stored) and by a lower-case one, from one goroutine and from all.
func BenchmarkDeviceGet(b *testing.B) {
	e := benchEnv(b)
	ids := make([]string, benchDevices)
	lower := make([]string, benchDevices)
	for i := range ids {
		ids[i] = fmt.Sprintf("DEV%05d", (i*7919)%benchDevices)
		lower[i] = fmt.Sprintf("dev%05d", (i*7919)%benchDevices)
	}
	run := func(ids []string) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := e.reg.Device(ids[i%len(ids)]); !ok {
					b.Fatal("not found")
				}
				i++
			}
		}
	}
	b.Run("upper", run(ids))
	b.Run("lower", run(lower))
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, ok := e.reg.Device(ids[i%len(ids)]); !ok {
					b.Error("not found")
					return
				}
				i++
			}
		})
	})
}

// The registry's part of PUT /api/v1/devices/{id}: an update of one device of 10,000, written
// to Badger and synced (store.sync off: the registry syncs its own writes) before it returns.
func BenchmarkDeviceUpdate(b *testing.B) {
	e := benchEnv(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d := &registry.Device{ID: fmt.Sprintf("DEV%05d", (i*7919)%benchDevices), Custom1: fmt.Sprint(i),
			Tags: []string{"cold"}, Account: "acme"}
		if err := e.reg.Update(ctx, d, 0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
