package config_test

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

var update = flag.Bool("update", false, "rewrite README.md's configuration reference from ExampleYAML")

// The README's configuration reference is ExampleYAML, verbatim (go test -update rewrites it).
func TestReadmeHasReference(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	want := "```yaml\n" + config.ExampleYAML + "```"
	if strings.Contains(readme, want) {
		return
	}
	start := strings.Index(readme, "```yaml\n# fleetrelay configuration.")
	end := -1
	if start >= 0 {
		end = strings.Index(readme[start+3:], "```")
	}
	if !*update || start < 0 || end < 0 {
		t.Fatal("README.md's configuration reference differs from config.ExampleYAML; run go test ./internal/config -run Readme -update")
	}
	readme = readme[:start] + want + readme[start+3+end+3:]
	if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
}
