package actors_test

import (
	"testing"

	"github.com/fleetrelay/fleetrelay/actors"
)

func TestFilterMatch(t *testing.T) {
	meta := &actors.DeviceMeta{Tags: []string{"eu"}, Groups: []string{"trucks"}}
	f := actors.NewFilter([]string{"356938035643809"}, []string{"cold"}, []string{"trucks"})
	for _, c := range []struct {
		f    *actors.Filter
		imei string
		m    *actors.DeviceMeta
		want bool
	}{
		{nil, "", nil, true}, // no filter: every device
		{actors.NewFilter(nil, nil, nil), "", nil, true},
		{f, "356938035643809", nil, true},                         // listed IMEI
		{f, "", meta, true},                                       // in a listed group
		{f, "", &actors.DeviceMeta{Tags: []string{"cold"}}, true}, // has a listed tag
		{f, "111111111111111", &actors.DeviceMeta{Tags: []string{"eu"}}, false},
		{f, "", nil, false},
	} {
		if got := c.f.Match(c.imei, c.m); got != c.want {
			t.Errorf("%+v.Match(%q, %+v) = %v, want %v", c.f, c.imei, c.m, got, c.want)
		}
	}
}
