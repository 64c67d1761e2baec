package relay_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Shutdown leaves no goroutine of the relay behind (every goroutine has an owner that waits).
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	sink, err := loadgen.StartSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		// fasthttp's process-wide Date-header ticker and its idle-connection cleaners stop on
		// their own schedule, not with the client or server.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	}
	r := startRelay(t, testConfig(t, sink)) // shut down below, before the check
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "L1"}, 1)
	if _, err := d.Send([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, 1); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		return goleak.Find(opts...)
	})
}
