package deliver_test

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

func decompress(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Both compressors round-trip, append after what dst holds, and are safe for concurrent use.
func TestCompressors(t *testing.T) {
	body := []byte("[" + strings.Repeat(`{"serial":"SN1","data":{"t":21.5}},`, 500) + `{"x":1}]`)
	for _, name := range []string{"gzip", "zstd"} {
		c, err := deliver.NewCompressor(name)
		if err != nil || c == nil || c.Encoding() != name {
			t.Fatalf("NewCompressor(%q) = %v, %v", name, c, err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out := c.Append([]byte("prefix"), body)
				if !bytes.HasPrefix(out, []byte("prefix")) {
					t.Errorf("%s: dst's bytes were not kept", name)
					return
				}
				if len(out)-6 >= len(body)/4 {
					t.Errorf("%s: %d bytes from %d: not compressed", name, len(out)-6, len(body))
				}
				if got := decompress(t, name, out[6:]); !bytes.Equal(got, body) {
					t.Errorf("%s: round trip differs", name)
				}
			}()
		}
		wg.Wait()
	}
	if c, err := deliver.NewCompressor("none"); c != nil || err != nil {
		t.Fatalf(`NewCompressor("none") = %v, %v`, c, err)
	}
	if _, err := deliver.NewCompressor("br"); err == nil {
		t.Fatal(`NewCompressor("br") accepted`)
	}
}
