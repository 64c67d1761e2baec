package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FreeSpace is an amount of free disk space: a [Size] such as 512MiB, or a percentage of the
// filesystem's size such as 5% (a decimal number followed by %). Read it with [FreeSpace.Value].
type FreeSpace string

// ParseFreeSpace parses a size ("512MiB", see [ParseSize]) or a percentage ("5%", "2.5%"):
// percent is set for a percentage, bytes otherwise.
func ParseFreeSpace(s string) (bytes Size, percent float64, err error) {
	t := strings.TrimSpace(s)
	if num, ok := strings.CutSuffix(t, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || p < 0 || math.IsNaN(p) || math.IsInf(p, 0) {
			return 0, 0, fmt.Errorf("invalid percentage %q: want a non-negative number followed by %%, e.g. 5%%", s)
		}
		return 0, p, nil
	}
	b, err := ParseSize(t)
	if err != nil {
		return 0, 0, fmt.Errorf("%w, or a percentage such as 5%%", err)
	}
	return b, 0, nil
}

// Value is f parsed (see [ParseFreeSpace]); zero if f is not valid, which [Config.Validate]
// reports.
func (f FreeSpace) Value() (bytes Size, percent float64) {
	bytes, percent, _ = ParseFreeSpace(string(f))
	return bytes, percent
}

// UnmarshalYAML implements [yaml.Unmarshaler]: the value must parse.
func (f *FreeSpace) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid free space: want a size such as 512MiB or a percentage such as 5%%, got %s", kindName(n))
	}
	if _, _, err := ParseFreeSpace(n.Value); err != nil {
		return err
	}
	*f = FreeSpace(strings.TrimSpace(n.Value))
	return nil
}
