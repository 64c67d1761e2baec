package deliver_test

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/valyala/fasthttp"
)

// startFastServer starts a fasthttp server on 127.0.0.1:0 that answers 200
// to every request and returns its URL.
func startFastServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusOK) }}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return "http://" + ln.Addr().String() + "/ingest"
}

func BenchmarkDo(b *testing.B) {
	url := startFastServer(b)
	body := bytes.Repeat([]byte("x"), 100<<10)
	for _, bc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"100KiB", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
		{"100KiB-cancellable", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := deliver.NewClient(deliver.Options{AllowPrivateNetworks: true})
			defer c.Close()
			ctx, cancel := bc.ctx()
			defer cancel()
			req := &deliver.Request{URL: url, Header: [][2]string{{"Authorization", "Bearer t"}}, Body: body}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if res := c.Do(ctx, req); res.Status != fasthttp.StatusOK {
					b.Fatalf("Do = %+v", res)
				}
			}
		})
	}
}
