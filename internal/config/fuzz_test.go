package config_test

import (
	"reflect"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts validates and survives a
// Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(config.ExampleYAML))
	f.Add([]byte("routes:\n  - name: a\n    url: https://[SERIAL].example.com/\n    batch: {max_bytes: 1KiB}\n"))
	f.Add([]byte("routes:\n  - &r {name: a, url: 'https://example.com/'}\n  - <<: *r\n    name: b\n"))
	f.Add([]byte("devices: {max_frame: 16, idle_timeout: 0}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal = %v", err)
		}
		back, err := config.Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)) = %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("Parse(Marshal(c)) = %+v, want %+v", back, c)
		}
	})
}

// FuzzParseSize checks that every size ParseSize accepts formats back to the same size.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1MiB", "512KiB", "64KB", "100 B", "1048576", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := config.ParseSize(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, int64(v))
		}
		back, err := config.ParseSize(v.String())
		if err != nil || back != v {
			t.Fatalf("ParseSize(%q) = %d, %v, want %d", v.String(), int64(back), err, int64(v))
		}
	})
}
