package teltonika

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The README's table of named IO elements and AppendJSON's documentation name what namedIO
// maps, id for id.
func TestNamedIODocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### Teltonika records")
	if !ok {
		t.Fatal("README has no Teltonika records section")
	}
	section, _, _ = strings.Cut(section, "\n#")
	src, err := os.ReadFile("json.go")
	if err != nil {
		t.Fatal(err)
	}
	for id := range 1 << 16 {
		n, ok := namedIO(uint16(id))
		if !ok {
			continue
		}
		found := false
		for _, line := range strings.Split(section, "\n") {
			if strings.Contains(line, "`"+n.key+"`") && strings.Contains(line, strconv.Itoa(id)) {
				found = true
			}
		}
		if !found {
			t.Errorf("README's Teltonika records table lacks IO %d `%s`", id, n.key)
		}
		if !docRow(string(src), strconv.Itoa(id), n.key) {
			t.Errorf("AppendJSON's documentation lacks IO %d %s", id, n.key)
		}
	}
}

// docRow reports whether a doc comment table in src has the row | id | key | ….
func docRow(src, id, key string) bool {
	for _, line := range strings.Split(src, "\n") {
		cells := strings.Split(strings.TrimPrefix(line, "//\t"), "|")
		if len(cells) > 3 && strings.TrimSpace(cells[1]) == id && strings.TrimSpace(cells[2]) == key {
			return true
		}
	}
	return false
}

// appendTime writes what time.AppendFormat writes with AppendJSON's layout, for every year
// (digit by digit in 0–9999, AppendFormat's own answer outside), whatever the location.
func TestAppendTime(t *testing.T) {
	const layout = "2006-01-02T15:04:05.000Z07:00"
	f := func(tm time.Time) {
		t.Helper()
		want := tm.UTC().AppendFormat(nil, layout)
		if got := appendTime([]byte("x"), tm); string(got) != "x"+string(want) {
			t.Errorf("appendTime(%v) = %q, want %q", tm, got[1:], want)
		}
	}
	f(time.UnixMilli(1560161086000))
	f(time.UnixMilli(0))
	f(time.UnixMilli(1765000000123).In(time.FixedZone("x", -7*3600)))
	f(time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC))
	f(time.Date(10000, 1, 1, 0, 0, 0, 1e6, time.UTC))
	f(time.Date(0, 1, 1, 0, 0, 0, 5e6, time.UTC))
	f(time.Date(-1, 6, 15, 12, 30, 45, 50e6, time.UTC))
	f(time.UnixMilli(1<<62 - 1))
	f(time.UnixMilli(-1 << 62))
	for ms := int64(0); ms < 1<<45; ms += 1<<45/9973 + 7 {
		f(time.UnixMilli(ms))
	}
}

// appendDec writes what strconv writes; appendDecimal writes v × 10^-scale as the integer part
// and the fraction's digits without trailing zeros (none if it is zero).
func TestAppendDecimalDigits(t *testing.T) {
	ref := func(v int64, scale int) string {
		sign, u := "", uint64(v)
		if v < 0 {
			sign, u = "-", uint64(-(v+1))+1
		}
		p := uint64(1)
		for range scale {
			p *= 10
		}
		s := sign + strconv.FormatUint(u/p, 10)
		if frac := fmt.Sprintf("%0*d", scale, u%p); strings.TrimRight(frac, "0") != "" {
			s += "." + strings.TrimRight(frac, "0")
		}
		return s
	}
	f := func(v int64) {
		t.Helper()
		if v >= 0 {
			if got, want := string(appendDec([]byte("x"), uint64(v))), "x"+strconv.FormatUint(uint64(v), 10); got != want {
				t.Errorf("appendDec(%d) = %q, want %q", v, got, want)
			}
		}
		for _, scale := range []int{0, 1, 3, 7} {
			if got, want := string(appendDecimal([]byte("x"), v, scale)), "x"+ref(v, scale); got != want {
				t.Errorf("appendDecimal(%d, %d) = %q, want %q", v, scale, got, want)
			}
		}
	}
	for v := int64(-20001); v <= 20001; v++ {
		f(v)
	}
	for _, v := range []int64{99999, 100000, 1234567, 10000000, 10000001, -10000001, 546963999, -546543210,
		1<<31 - 1, -1 << 31, 1<<63 - 1, -1 << 63} {
		f(v)
	}
	if got := string(appendUDecimal(nil, 1<<64-1, 7)); got != "1844674407370.9551615" {
		t.Errorf("appendUDecimal(MaxUint64, 7) = %q", got)
	}
}
