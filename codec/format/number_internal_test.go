package format

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseDecimal(t *testing.T) {
	f := func(in string, neg bool, sig int64, exp int, formatted string) {
		t.Helper()
		d, ok := parseDecimal([]byte(in))
		if !ok || d != (decimal{neg, sig, exp}) {
			t.Errorf("parseDecimal(%q) = %+v, %v; want {%v %d %d}", in, d, ok, neg, sig, exp)
		}
		if got := string(d.appendFormatted(nil)); got != formatted {
			t.Errorf("parseDecimal(%q).appendFormatted = %q, want %q", in, got, formatted)
		}
	}
	// The HTTPS forwarding spec's examples: 7,827,000 W and 230.41 V.
	f("7827000", false, 7827, 3, "7,827,000")
	f("230.41", false, 23041, -2, "230.41")
	f("0", false, 0, 0, "0")
	f("-0", false, 0, 0, "0")
	f("-0.0e5", false, 0, 0, "0")
	f("60", false, 6, 1, "60")
	f("87", false, 87, 0, "87")
	f("-0.123", true, 123, -3, "-0.123")
	f("0.005", false, 5, -3, "0.005")
	f("100.500", false, 1005, -1, "100.5")
	f("1234.5", false, 12345, -1, "1,234.5")
	f("-1234567.25", true, 123456725, -2, "-1,234,567.25")
	f("1e3", false, 1, 3, "1,000")
	f("1.5E-7", false, 15, -8, "1.5e-7")
	f("0.000001", false, 1, -6, "0.000001")
	f("2.5e+30", false, 25, 29, "2.5e+30")
	f("1e21", false, 1, 21, "1e+21")
	f("123456789012345678901", false, 123456789012346, 6, "123,456,789,012,346,000,000")
	// Rounding to 15 significant digits, half away from zero, carrying into the exponent.
	f("0.1234567890123456789", false, 123456789012346, -15, "0.123456789012346")
	f("999999999999999.9", false, 1, 15, "1,000,000,000,000,000")
	f("-999999999999999.4", true, 999999999999999, 0, "-999,999,999,999,999")
	f("1.000000000000000049", false, 1, 0, "1")
	// Huge exponents saturate instead of overflowing.
	f("1e99999999999999999999", false, 1, maxExp, "1e+"+strconv.Itoa(maxExp))
	f("1e-99999999999999999999", false, 1, -maxExp, "1e-"+strconv.Itoa(maxExp))

	for _, bad := range []string{"", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1x", "0x1", "NaN", "1.5.2"} {
		if d, ok := parseDecimal([]byte(bad)); ok {
			t.Errorf("parseDecimal(%q) = %+v, want not ok", bad, d)
		}
	}
}

// TestParseDecimalRandom checks parseDecimal and appendFormatted against strconv on random
// numbers of every magnitude.
func TestParseDecimalRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := (rnd.Float64() - 0.5) * math.Pow10(rnd.IntN(60)-30)
		for _, s := range []string{
			strconv.FormatFloat(v, 'g', -1, 64),
			strconv.FormatFloat(v, 'f', rnd.IntN(8), 64),
			strconv.FormatFloat(v, 'e', rnd.IntN(20), 64),
		} {
			want, _ := strconv.ParseFloat(s, 64)
			d, ok := parseDecimal([]byte(s))
			if !ok {
				t.Fatalf("parseDecimal(%q) not ok", s)
			}
			got := float64(d.sig) * math.Pow10(d.exp)
			if d.neg {
				got = -got
			}
			if math.Abs(got-want) > 1e-14*math.Abs(want) {
				t.Fatalf("parseDecimal(%q) = %+v = %g, want %g", s, d, got, want)
			}
			fs := string(d.appendFormatted(nil))
			fv, err := strconv.ParseFloat(strings.ReplaceAll(fs, ",", ""), 64)
			if err != nil || math.Abs(fv-got) > 1e-15*math.Abs(got) {
				t.Fatalf("parseDecimal(%q).appendFormatted = %q, want %g", s, fs, got)
			}
		}
	}
}

func TestParseTime(t *testing.T) {
	f := func(in string, want int64, ok bool) {
		t.Helper()
		got, gotOK := parseTime([]byte(in))
		if gotOK != ok || (ok && got != want) {
			t.Errorf("parseTime(%s) = %d, %v; want %d, %v", in, got, gotOK, want, ok)
		}
	}
	ms := time.Date(2026, 11, 22, 10, 0, 0, 123e6, time.UTC).UnixMilli()
	f("1795341600", ms-123, true)          // seconds
	f("1795341600.123", ms, true)          // seconds with a fraction
	f("1795341600123", ms, true)           // milliseconds
	f("1.795341600123e12", ms, true)       // milliseconds, exponent form
	f("99999999999", 99999999999000, true) // below 10^11: seconds
	f("100000000000", 100000000000, true)  // from 10^11: milliseconds
	f("0", 0, true)
	f("-1", -1000, true)
	f("1e16", 0, false)
	f(`"2026-11-22T10:00:00.123Z"`, ms, true)
	f(`"2026-11-22T10:00:00.1239Z"`, ms, true) // truncated to ms
	f(`"2026-11-22T11:00:00.123+01:00"`, ms, true)
	f(`"2026-11-22T05:30:00.123-04:30"`, ms, true)
	f(`"2026-11-22t10:00:00.123z"`, ms, true)
	f(`"2026-11-22T10:00:00Z"`, ms-123, true)
	for _, bad := range []string{`"2026-11-22 10:00:00Z"`, `"2026-02-30T10:00:00Z"`, `"2026-11-22T24:00:00Z"`,
		`"2026-11-22T10:00:00"`, `"2026-11-22T10:00:00.Z"`, `"2026-11-22T10:00:00+0100"`, `"x"`, `""`,
		`"2026-13-01T00:00:00Z"`, `true`, `null`, `{}`} {
		f(bad, 0, false)
	}
}

// TestParseRFC3339 compares with time.Parse on random times and offsets.
func TestParseRFC3339(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		tm := time.UnixMilli(rnd.Int64N(4e12) - 1e12).In(time.FixedZone("", (rnd.IntN(48)-24)*1800))
		s := tm.Format(time.RFC3339Nano)
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseRFC3339([]byte(s))
		if !ok || got != want.UnixMilli() {
			t.Fatalf("parseRFC3339(%q) = %d, %v; want %d", s, got, ok, want.UnixMilli())
		}
	}
}
