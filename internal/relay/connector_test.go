package relay_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/proxytest"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// upstream is an end server behind a connector: a loopback listener serving each connection
// with handle on a goroutine of its own; the test's cleanup closes it and waits for them.
func upstream(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func connector(name, listen, up string, edit ...func(*config.Connector)) config.Connector {
	c := config.DefaultConnector()
	c.Name, c.Listen, c.Upstream = name, listen, up
	for _, e := range edit {
		e(&c)
	}
	return c
}

// The connector acceptance through the whole relay, with three connectors from the
// config: devices talk to an echo server through one that sends a PROXY v2 header (the server
// sees the device's address, and 4 MiB pass both ways at once, byte-exact), to a server that
// speaks first through one without a header (the server reads the device's own bytes first),
// and to an upstream that is down through the third (the device is closed, the refusal
// counted). The start-up log names each connector's address; /metrics has their series,
// labelled by connector.
func TestConnectorsThroughRelay(t *testing.T) {
	headers := make(chan proxytest.Header, 1)
	echoAddr := upstream(t, func(c net.Conn) {
		h, err := proxytest.ReadV2(c)
		if err != nil {
			t.Errorf("PROXY header: %v", err)
			return
		}
		headers <- h
		_, _ = io.Copy(c, c)
	})
	const banner, hello = "220 end server ready\n", "HELO device\n"
	firsts := make(chan string, 1)
	bannerAddr := upstream(t, func(c net.Conn) {
		if _, err := c.Write([]byte(banner)); err != nil {
			return
		}
		b := make([]byte, len(hello))
		_, _ = io.ReadFull(c, b)
		firsts <- string(b)
		_, _ = c.Write([]byte("250 ok\n"))
	})
	cfg := testConfig(t, nil)
	cfg.Connectors = []config.Connector{
		connector("gw", "127.0.0.1:0", echoAddr, func(c *config.Connector) { c.ProxyProtocol = "v2" }),
		connector("plain", "127.0.0.1:0", bannerAddr),
		connector("down", "127.0.0.1:0", relaytest.FreeAddr(t), func(c *config.Connector) { c.ConnectTimeout = config.Duration(2 * time.Second) }),
	}
	r, logs := startLoggedRelay(t, cfg)
	for _, name := range []string{"gw", "plain", "down"} {
		addr := r.ConnectorAddr(name)
		if addr == nil {
			t.Fatalf("ConnectorAddr(%q) = nil after Start", name)
		}
		if line := fmt.Sprintf("connector=%s listen=%s", name, addr); !strings.Contains(logs.String(), line) {
			t.Errorf("the start-up log has no %q:\n%s", line, logs.String())
		}
	}
	if r.ConnectorAddr("none") != nil {
		t.Error("ConnectorAddr of a connector not configured is not nil")
	}

	// Through gw: the header, then 4 MiB each way at once.
	dev := rawConn(t, r.ConnectorAddr("gw").String())
	const size = 4 << 20
	werr := make(chan error, 1)
	go func() { werr <- streamOut(dev, size, 0x5a) }()
	if err := streamIn(dev, size, 0x5a); err != nil {
		t.Fatalf("the echo through gw: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	h := <-headers
	want := proxytest.Header{Version: 2, Command: 1, Family: 1, Proto: 1,
		Src: dev.LocalAddr().(*net.TCPAddr).AddrPort(), Dst: r.ConnectorAddr("gw").(*net.TCPAddr).AddrPort()}
	if h != want {
		t.Errorf("the end server's PROXY header %+v, want %+v", h, want)
	}
	_ = dev.Close()

	// Through plain: the server speaks first, then reads the device's bytes (no header).
	dev = rawConn(t, r.ConnectorAddr("plain").String())
	_ = dev.SetDeadline(time.Now().Add(30 * time.Second)) // against a hang, not a speed check
	got := make([]byte, len(banner))
	if _, err := io.ReadFull(dev, got); err != nil || string(got) != banner {
		t.Fatalf("the device read %q, %v; want the server's banner", got, err)
	}
	if _, err := dev.Write([]byte(hello)); err != nil {
		t.Fatal(err)
	}
	if first := <-firsts; first != hello {
		t.Errorf("the end server read %q first, want the device's %q", first, hello)
	}
	if answer, err := io.ReadAll(dev); err != nil || string(answer) != "250 ok\n" {
		t.Errorf("the device read %q, %v after its bytes; want the answer, then the server's close", answer, err)
	}

	// Through down: nothing listens upstream, the device is closed.
	dev = rawConn(t, r.ConnectorAddr("down").String())
	if err := closedByPeer(dev); err != nil {
		t.Errorf("a device of a connector whose upstream is down: %v", err)
	}

	metric := func(series string) (float64, error) { return metricValue(t, r.AdminAddr().String(), series) }
	for series, want := range map[string]float64{
		`fleetrelay_connector_accepted_total{connector="gw"}`:                             1,
		`fleetrelay_connector_accepted_total{connector="down"}`:                           1,
		`fleetrelay_connector_bytes_total{connector="gw",direction="to_upstream"}`:        size,
		`fleetrelay_connector_bytes_total{connector="gw",direction="to_device"}`:          size,
		`fleetrelay_connector_bytes_total{connector="plain",direction="to_upstream"}`:     float64(len(hello)),
		`fleetrelay_connector_upstream_failures_total{connector="down",reason="refused"}`: 1,
		`fleetrelay_connector_upstream_failures_total{connector="gw",reason="refused"}`:   0,
		`fleetrelay_connector_connections{connector="down"}`:                              0,
	} {
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if got, err := metric(series); err != nil || got != want {
				return fmt.Errorf("/metrics %s = %v (%v), want %v", series, got, err, want)
			}
			return nil
		})
	}
}

// A connector whose listen address another socket holds fails the relay's start, naming the
// connector and the address, and leaves nothing running.
func TestConnectorListenTaken(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1")}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig(t, nil)
	cfg.Connectors = []config.Connector{
		connector("first", "127.0.0.1:0", relaytest.FreeAddr(t)),
		connector("busy", taken.Addr().String(), relaytest.FreeAddr(t)),
	}
	r, err := relaytest.Open(cfg, relaytest.Logger(t))
	if err == nil {
		_ = relaytest.Shutdown(r)
		t.Fatalf("the relay started with connector busy on %s, which another socket listens on", taken.Addr())
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "connectors[1]") || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("start = %v, want EADDRINUSE naming connectors[1] and %s", err, taken.Addr())
	}
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error { return goleak.Find(opts...) })
}

// Shutdown with a connector's pair open cuts both of its connections and leaves no goroutine.
func TestConnectorShutdownLeavesNoGoroutines(t *testing.T) {
	ended := make(chan error, 1)
	up := upstream(t, func(c net.Conn) {
		_, err := io.Copy(c, c)
		ended <- err
	})
	// The upstream's accept loop is the test's (its cleanup ends it).
	opts := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1")}
	cfg := testConfig(t, nil)
	cfg.Connectors = []config.Connector{connector("gw", "127.0.0.1:0", up)}
	r, err := relaytest.Open(cfg, relaytest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	dev := rawConn(t, r.ConnectorAddr("gw").String())
	if _, err := dev.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(dev, got); err != nil || !bytes.Equal(got, []byte("ping")) {
		t.Fatalf("echo %q, %v", got, err)
	}
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	if err := closedByPeer(dev); err != nil {
		t.Errorf("after shutdown, the device: %v", err)
	}
	select {
	case <-ended: // the upstream connection ended too
	case <-time.After(10 * time.Second):
		t.Error("the upstream connection is still open after shutdown")
	}
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error { return goleak.Find(opts...) })
}

// Connectors are config-only and a reload does not apply them: a reloaded config with another
// upstream and one more connector names "connectors" among the sections that need a restart,
// and the running connector still forwards to its first upstream.
func TestConnectorsNeedRestartOnReload(t *testing.T) {
	serve := func(name string) string {
		return upstream(t, func(c net.Conn) { _, _ = c.Write([]byte(name)) })
	}
	first, second := serve("first"), serve("second")
	cfg := testConfig(t, nil)
	cfg.Connectors = []config.Connector{connector("gw", "127.0.0.1:0", first)}
	r := startRelay(t, cfg)

	next := *cfg
	next.Connectors = []config.Connector{connector("gw", "127.0.0.1:0", second), connector("more", "127.0.0.1:0", second)}
	restart, _, err := r.Reload(t.Context(), &next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(restart, "connectors") {
		t.Errorf("Reload: restart needed for %v, want connectors among them", restart)
	}
	if r.ConnectorAddr("more") != nil {
		t.Error("a connector added by a reload listens")
	}
	dev := rawConn(t, r.ConnectorAddr("gw").String())
	_ = dev.SetReadDeadline(time.Now().Add(30 * time.Second)) // against a hang, not a speed check
	if got, err := io.ReadAll(dev); err != nil || string(got) != "first" {
		t.Errorf("after the reload, the device reached %q, %v; want the first upstream", got, err)
	}
}

// connectors[].max_connections reaches the connector: with 2, a third device is closed at
// accept while the two keep working, and /metrics counts the refusal by reason; buffer is
// passed on too (a small one still carries more than itself).
func TestConnectorMaxConnectionsThroughRelay(t *testing.T) {
	echoAddr := upstream(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	cfg := testConfig(t, nil)
	cfg.Connectors = []config.Connector{connector("capped", "127.0.0.1:0", echoAddr, func(c *config.Connector) {
		c.MaxConnections, c.Buffer = 2, config.MinLinkBuffer
	})}
	r, logs := startLoggedRelay(t, cfg)
	if line := "connector=capped listen=" + r.ConnectorAddr("capped").String(); !strings.Contains(logs.String(), line) ||
		!strings.Contains(logs.String(), "max_connections=2") {
		t.Errorf("the start-up log has no %q with max_connections=2:\n%s", line, logs.String())
	}
	echo := func(dev net.Conn, n int, fill byte) {
		t.Helper()
		werr := make(chan error, 1)
		go func() { werr <- streamOut(dev, n, fill) }()
		if err := streamIn(dev, n, fill); err != nil {
			t.Fatalf("the echo through capped: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
	}
	devs := []net.Conn{rawConn(t, r.ConnectorAddr("capped").String()), rawConn(t, r.ConnectorAddr("capped").String())}
	for i, dev := range devs {
		echo(dev, 256<<10, byte(i+1)) // 64 times the buffer
	}
	third := rawConn(t, r.ConnectorAddr("capped").String())
	if err := closedByPeer(third); err != nil {
		t.Errorf("a device beyond max_connections: %v", err)
	}
	for i, dev := range devs {
		echo(dev, 1000, byte(i+10))
	}
	metric := func(series string) (float64, error) { return metricValue(t, r.AdminAddr().String(), series) }
	for series, want := range map[string]float64{
		`fleetrelay_connector_refused_total{connector="capped",reason="max_connections"}`: 1,
		`fleetrelay_connector_accepted_total{connector="capped"}`:                         2,
		`fleetrelay_connector_pairs{connector="capped"}`:                                  2,
	} {
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if got, err := metric(series); err != nil || got != want {
				return fmt.Errorf("/metrics %s = %v (%v), want %v", series, got, err, want)
			}
			return nil
		})
	}
}

// errAbsent: the series is not exposed.
var errAbsent = errors.New("absent")

// metricValue is the value of series (name{labels}, as exposed) on the admin server at addr.
func metricValue(t testing.TB, addr, series string) (float64, error) {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, errAbsent
}
