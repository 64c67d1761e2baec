package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// loadgen's fleet presents each device's token (RunOptions.Token), so the bench can drive a
// relay with devices.auth: token: with the right tokens every frame is acknowledged and
// delivered; with a wrong one the devices are refused (ERROR 401) and nothing is stored.
func TestLoadgenPresentsTokens(t *testing.T) {
	sink := relaytest.StartSink(t)
	cfg := relaytest.Config(t, sink.URL())
	cfg.Devices.Auth = config.AuthToken
	for _, id := range []string{"TK000000", "TK000001", "TK000002", "TKU000000"} {
		cfg.Fleet = append(cfg.Fleet, config.Device{ID: id, Token: config.SecretValue("tok-" + id)})
	}
	r := relaytest.Start(t, cfg)
	run := func(token func(string) string, drain time.Duration) (*loadgen.RunReport, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return loadgen.Run(ctx, loadgen.RunOptions{Addr: r.DeviceTCPAddr().String(), UDPAddr: r.DeviceUDPAddr().String(),
			Devices: 4, UDPShare: 0.25, Rate: 50, Duration: 300 * time.Millisecond, Prefix: "TK", Token: token,
			DrainTimeout: drain})
	}
	rep, err := run(func(id string) string { return "tok-" + id }, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FramesAcked == 0 || rep.FramesAcked != rep.FramesSent {
		t.Fatalf("with the right tokens: %d of %d frames acknowledged", rep.FramesAcked, rep.FramesSent)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := int64(sink.Stats().Unique); got < rep.FramesAcked {
			return fmt.Errorf("sink has %d of %d", got, rep.FramesAcked)
		}
		return nil
	})
	before := sink.Stats().Unique
	if rep, err := run(func(string) string { return "wrong" }, time.Second); err == nil && rep.FramesAcked > 0 {
		t.Errorf("with a wrong token: %d frames acknowledged, want none", rep.FramesAcked)
	}
	time.Sleep(200 * time.Millisecond)
	if after := sink.Stats().Unique; after != before {
		t.Errorf("with a wrong token the sink got %d more messages, want none", after-before)
	}
}
