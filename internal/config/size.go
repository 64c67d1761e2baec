package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Size is a number of bytes. In YAML it is a plain integer (1048576) or an integer with a unit: B, the
// decimal KB, MB, GB (powers of 1000) or the binary KiB, MiB, GiB (powers of 1024), e.g. 512KiB, 1MiB,
// 64KB. Convert it with int64(s) or int(s).
type Size int64

// Size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	KB  Size = 1000
	MB  Size = 1000 * KB
	GB  Size = 1000 * MB
)

var sizeUnits = map[string]Size{
	"":    1,
	"B":   1,
	"KB":  KB,
	"MB":  MB,
	"GB":  GB,
	"KiB": KiB,
	"MiB": MiB,
	"GiB": GiB,
}

// ParseSize parses a size such as "1MiB", "512KiB", "64KB", "100B" or "1048576". The number is a
// non-negative integer; a space between number and unit is allowed; units are case-sensitive.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want a non-negative integer with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 1MiB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: number out of range", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KB, MB, GB, KiB, MiB or GiB)", s, unit)
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("invalid size %q: out of range", s)
	}
	return Size(n) * mult, nil
}

// String formats s with the largest unit that divides it exactly, preferring binary units:
// 1048576 → "1MiB", 64000 → "64KB", 100 → "100B".
func (s Size) String() string {
	if s == 0 {
		return "0"
	}
	for _, u := range []struct {
		name string
		size Size
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"GB", GB}, {"MB", MB}, {"KB", KB}} {
		if s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// UnmarshalYAML implements [yaml.Unmarshaler].
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid size: want a value such as 1MiB, got %s", kindName(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML implements [yaml.Marshaler]; the output is what [Size.String] returns.
func (s Size) MarshalYAML() (any, error) {
	if s < 0 {
		return int64(s), nil
	}
	return s.String(), nil
}
