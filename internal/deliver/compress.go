package deliver

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compressor compresses request bodies; its methods are safe for concurrent use.
type Compressor interface {
	// Encoding is the Content-Encoding value.
	Encoding() string
	// Append appends src compressed to dst.
	Append(dst, src []byte) []byte
}

// NewCompressor returns the compressor for a route's compression setting: nil for "" and
// "none", else gzip or zstd (klauspost/compress, default levels).
func NewCompressor(name string) (Compressor, error) {
	switch name {
	case "", "none":
		return nil, nil
	case "gzip":
		return gzipCompressor{}, nil
	case "zstd":
		return zstdCompressor{}, nil
	}
	return nil, fmt.Errorf("unknown compression %q (none, gzip, zstd)", name)
}

type gzipCompressor struct{}

var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

func (gzipCompressor) Encoding() string { return "gzip" }

func (gzipCompressor) Append(dst, src []byte) []byte {
	buf := bytes.NewBuffer(dst)
	w := gzipWriters.Get().(*gzip.Writer)
	w.Reset(buf)
	_, _ = w.Write(src) // writes to a bytes.Buffer cannot fail
	_ = w.Close()
	w.Reset(nil) // do not keep buf reachable from the pool
	gzipWriters.Put(w)
	return buf.Bytes()
}

type zstdCompressor struct{}

// zstdEncoder is shared: EncodeAll is safe for concurrent use. Created on first use.
var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic("zstd: " + err.Error()) // only for invalid options
	}
	return e
})

func (zstdCompressor) Encoding() string { return "zstd" }

func (zstdCompressor) Append(dst, src []byte) []byte { return zstdEncoder().EncodeAll(src, dst) }
