package config_test

import (
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

func TestParseSize(t *testing.T) {
	f := func(in string, want config.Size) {
		t.Helper()
		got, err := config.ParseSize(in)
		if err != nil || got != want {
			t.Fatalf("ParseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	f("0", 0)
	f("1048576", 1<<20)
	f("100B", 100)
	f("64KB", 64000)
	f("2MB", 2000000)
	f("1GB", 1000000000)
	f("512KiB", 512<<10)
	f("1MiB", 1<<20)
	f("3GiB", 3<<30)
	f(" 1 MiB ", 1<<20)

	bad := func(in string) {
		t.Helper()
		if got, err := config.ParseSize(in); err == nil {
			t.Fatalf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
	bad("")
	bad("MiB")
	bad("-1")
	bad("1.5MiB")
	bad("1mib")
	bad("1 TiB")
	bad("9223372036854775808")
	bad("9000000000GiB")
}

func TestSizeString(t *testing.T) {
	f := func(in config.Size, want string) {
		t.Helper()
		if got := in.String(); got != want {
			t.Fatalf("Size(%d).String() = %q, want %q", int64(in), got, want)
		}
		if back, err := config.ParseSize(want); err != nil || back != in {
			t.Fatalf("ParseSize(%q) = %d, %v, want %d", want, back, err, int64(in))
		}
	}
	f(0, "0")
	f(1, "1B")
	f(1023, "1023B")
	f(1024, "1KiB")
	f(64000, "64KB")
	f(1<<20, "1MiB")
	f(1536<<10, "1536KiB")
	f(2<<30, "2GiB")
	f(5000000, "5MB")
}

func TestParseDuration(t *testing.T) {
	f := func(in string, want time.Duration) {
		t.Helper()
		got, err := config.ParseDuration(in)
		if err != nil || time.Duration(got) != want {
			t.Fatalf("ParseDuration(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	f("0", 0)
	f("50ms", 50*time.Millisecond)
	f("10s", 10*time.Second)
	f("168h", 168*time.Hour)
	f("1h30m", 90*time.Minute)
	for _, in := range []string{"", "10", "1.5", "ten seconds", "10 s"} {
		if got, err := config.ParseDuration(in); err == nil {
			t.Fatalf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}

func TestDurationString(t *testing.T) {
	f := func(in time.Duration, want string) {
		t.Helper()
		if got := config.Duration(in).String(); got != want {
			t.Fatalf("Duration(%v).String() = %q, want %q", in, got, want)
		}
		if back, err := config.ParseDuration(want); err != nil || time.Duration(back) != in {
			t.Fatalf("ParseDuration(%q) = %v, %v, want %v", want, back, err, in)
		}
	}
	f(0, "0s")
	f(50*time.Millisecond, "50ms")
	f(time.Minute, "1m")
	f(90*time.Second, "1m30s")
	f(168*time.Hour, "168h")
	f(time.Hour+time.Second, "1h0m1s")
	f(time.Hour+30*time.Minute, "1h30m")
	f(-time.Second, "-1s")
}

func TestParseFreeSpace(t *testing.T) {
	f := func(in string, bytes config.Size, percent float64) {
		t.Helper()
		b, p, err := config.ParseFreeSpace(in)
		if err != nil || b != bytes || p != percent {
			t.Fatalf("ParseFreeSpace(%q) = %d, %v, %v, want %d, %v", in, b, p, err, bytes, percent)
		}
	}
	f("5%", 0, 5)
	f(" 2.5 % ", 0, 2.5)
	f("0%", 0, 0)
	f("512MiB", 512*config.MiB, 0)
	f("1GB", config.GB, 0)
	f("0", 0, 0)
	for _, in := range []string{"", "%", "-1%", "NaN%", "Inf%", "5%%", "five%", "5 percent", "1.5MiB"} {
		if b, p, err := config.ParseFreeSpace(in); err == nil {
			t.Fatalf("ParseFreeSpace(%q) = %d, %v, want an error", in, b, p)
		}
	}
}
