package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time span. In YAML it is a Go duration string such as 50ms, 10s, 5m, 1h30m or 168h, or
// a plain 0. Convert it with time.Duration(d).
type Duration time.Duration

// ParseDuration parses a duration such as "50ms", "10s" or "168h" (units ns, us, ms, s, m, h), or "0".
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a number with a unit (ms, s, m, h), e.g. 10s", s)
	}
	return Duration(d), nil
}

// String formats d like [time.Duration.String] without trailing zero units: "1m" rather than "1m0s",
// "168h" rather than "168h0m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalYAML implements [yaml.Unmarshaler].
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid duration: want a value such as 10s, got %s", kindName(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML implements [yaml.Marshaler]; the output is what [Duration.String] returns.
func (d Duration) MarshalYAML() (any, error) {
	return d.String(), nil
}
