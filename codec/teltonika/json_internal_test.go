package teltonika

import (
	"os"
	"strconv"
	"strings"
	"testing"
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
