// Package relaytest owns what tests need to run fleetrelay for real, as net/http/httptest does
// for HTTP servers: a relay started inside the test process on loopback port 0, with its data
// directory under t.TempDir() and a shutdown registered with t.Cleanup; the relay binary, built
// once per test process, run as a child process; and a sink to deliver to. Conditions are polled
// with package checkfor, which the store, auth and api tests use as well (they cannot import this
// package's weight, and the store's internal tests could not import it at all).
//
// Only tests import it.
package relaytest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// Logger is the relay's logger in tests: silent, or to stderr at info level under -v.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// Config is a relay on loopback port 0 (native TCP and UDP, admin; NDJSON off) with its data
// under t.TempDir(), private networks allowed and fast retries (20 ms up to 200 ms). With
// sinkURL set it has one route, "test", to sinkURL/ingest/[SERIAL] with a 5 ms linger. Change
// what the test needs before Start.
func Config(t testing.TB, sinkURL string) *config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Devices.Native.TCP = "127.0.0.1:0"
	cfg.Devices.Native.UDP = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Delivery.AllowPrivateNetworks = true
	cfg.Delivery.Retry.InitialBackoff = config.Duration(20 * time.Millisecond)
	cfg.Delivery.Retry.MaxBackoff = config.Duration(200 * time.Millisecond)
	if sinkURL != "" {
		r := config.DefaultRoute()
		r.Name = "test"
		r.URL = sinkURL + "/ingest/[SERIAL]"
		r.Batch.Linger = config.Duration(5 * time.Millisecond)
		cfg.Routes = append(cfg.Routes, r)
	}
	return cfg
}

// Open resolves and validates cfg, builds the relay and starts it. On an error nothing is left
// running. For a relay started away from the test's goroutine (a restart under load); the
// caller shuts it down.
func Open(cfg *config.Config, log *slog.Logger) (*relay.Relay, error) {
	cfg.Resolve()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	r, err := relay.New(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := r.Start(); err != nil {
		_ = Shutdown(r)
		return nil, err
	}
	return r, nil
}

// Shutdown shuts r down within 10 s.
func Shutdown(r *relay.Relay) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.Shutdown(ctx)
}

// Start starts a relay on cfg logging to Logger(t), and shuts it down when the test ends (a
// shutdown error fails the test). Shutting it down earlier is fine: Shutdown is idempotent.
func Start(t testing.TB, cfg *config.Config) *relay.Relay {
	t.Helper()
	return StartLogged(t, cfg, Logger(t))
}

// StartLogged is Start with the relay's log going to log.
func StartLogged(t testing.TB, cfg *config.Config, log *slog.Logger) *relay.Relay {
	t.Helper()
	r, err := Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Shutdown(r); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
	})
	return r
}

// StartSink starts loadgen's accounting sink on a loopback port and closes it when the test ends.
func StartSink(t testing.TB) *loadgen.Sink {
	t.Helper()
	s, err := loadgen.StartSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// FreeAddr returns a loopback address whose port was free a moment ago for TCP and UDP, for a
// relay process whose address the test must know before it starts (and keep across a restart).
// The port is below Linux's ephemeral range (32768 and up): a port the kernel hands out (":0")
// can be taken, between a kill and a restart, as the local port of another test's outgoing
// connection, and the restarted relay would then fail to bind it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 500 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = u.Close()
		return addr
	}
	t.Fatal("no free port from 20000 to 31999 on 127.0.0.1")
	return ""
}

// LogBuffer collects log lines written from many goroutines (a relay's, a server's), for tests
// that look for what was logged — or that a secret never was.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
