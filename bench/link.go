package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/loadgen"
	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

// LinkSpec makes a scenario a device-link benchmark: one TCP device link's throughput each way
// (plain and AES-256-CTR), the round trip of small requests through it, and the relay's memory
// per idle link, each beside its floors in the same invocation (Scenario.Floors: FloorDirect,
// FloorProxy). The device is a loadgen echo (loadgen link -echo) of its own process; the relay
// learns its address from a native connection, and every link is created through the API.
type LinkSpec struct {
	// Bytes sent through the echo and checked as they come back, per throughput run (default
	// 1,000,000,000): the same count flows each way at once.
	Bytes int64 `yaml:"bytes"`
	// RoundTrips is the number of request/response exchanges per latency run (default 20,000),
	// one at a time, each of Size bytes (default 64).
	RoundTrips int `yaml:"roundtrips"`
	Size       int `yaml:"size"`
	// IdleLinks is the number of links opened, each with a client and a device connected and one
	// round trip done, to read the relay's memory per idle link (default 5,000, and the
	// proxy floor's per pair of connections). The bench's relay has devicelink.protocols [tcp]:
	// it binds a TCP listener on every port of devicelink.ports from the start and a TCP link
	// holds two more sockets (client and device), 3 open files a link, so within an open-file
	// limit of 20,000 it carries 6,000 links with room for its own files.
	IdleLinks int `yaml:"idle_links"`
	// Settle is the pause before each memory reading (default 2s).
	Settle Duration `yaml:"settle"`
	// BusyPoll, when set, is the relay's devicelink.busy_poll (unset: the relay's default), so
	// that a copy of the scenario measures the links with another setting or with it off (0).
	BusyPoll *Duration `yaml:"busy_poll"`
}

// Targets of a device-link scenario: the relay's link plain and encrypted, and its floors.
const (
	TargetRelayAES = "relay-aes" // the link with encrypt: AES-256-CTR on the client leg
	// FloorDirect is the client talking to the device echo over one loopback connection: what
	// the sockets cost. Its encrypted twin, TargetDirectAES, talks to an echo that plays the
	// relay's end of an encrypted link (loadgen link -echo -key -iv): what the cipher costs.
	FloorDirect     = "direct"
	TargetDirectAES = "direct-aes"
	// FloorProxy is the client talking to the echo through loadgen link -proxy, a process of its
	// own that copies each connection's bytes with io.Copy, a goroutine each way.
	FloorProxy = "proxy"
)

// linkDevice is the identity of the native device whose address the links reach.
const linkDevice = "LINK-BENCH-0001"

// LinkResult is a device-link scenario's measurements: every run, in the order they ran, the
// medians per target, and the relay's ratios to its floors.
type LinkResult struct {
	Count   int                `json:"count"`   // rounds: relay, floors, relay, floors, …
	Medians map[string]LinkRun `json:"medians"` // by target, field by field over the rounds
	Ratios  LinkRatios         `json:"ratios"`
	Runs    []LinkRun          `json:"runs"`
	// ListenAddr and Ports are the relay's devicelink.listen and devicelink.ports.
	ListenAddr string `json:"listenAddr"`
	Ports      string `json:"ports"`
}

// LinkRun is what one target measured in one round (zero fields: not measured for it).
type LinkRun struct {
	Round  int    `json:"round,omitempty"` // 1-based (0: a median)
	Target string `json:"target"`

	// Bytes went to the device echo and came back byte-exact, at once; ToDeviceMBps is the
	// client's send rate (until its last write returned), BackMBps the echo's over the whole
	// transfer (until the last byte was back). MB: 10^6 bytes.
	Bytes        int64   `json:"bytes,omitempty"`
	ToDeviceMBps float64 `json:"toDeviceMBps,omitempty"`
	BackMBps     float64 `json:"backMBps,omitempty"`
	// CPUPerGB is the relay's (or the proxy's) CPU seconds per 10^9 bytes carried, each
	// direction counted (2 × Bytes), during the transfer.
	CPUPerGB float64 `json:"cpuSecondsPerGB,omitempty"`
	// One way: Bytes to a one-way device (loadgen link -echo -oneway) until it confirmed every
	// byte, then Bytes from it until the last one arrived: each direction alone.
	OneWayToDeviceMBps float64 `json:"oneWayToDeviceMBps,omitempty"`
	OneWayToClientMBps float64 `json:"oneWayToClientMBps,omitempty"`

	// Round trips of Size-byte requests, one at a time, each echo checked, in µs.
	RoundTrips int     `json:"roundTrips,omitempty"`
	P50Us      float64 `json:"p50Us,omitempty"`
	P99Us      float64 `json:"p99Us,omitempty"`
	P999Us     float64 `json:"p999Us,omitempty"`
	MaxUs      float64 `json:"maxUs,omitempty"`
	// CPUPerRoundTripUs is the relay's (or the proxy's) CPU time during the round trips, per
	// round trip, in µs (busy polling included).
	CPUPerRoundTripUs float64 `json:"cpuPerRoundTripUs,omitempty"`

	// Idle links (the relay) or connection pairs (the proxy): memory before any was opened and
	// once IdleLinks were open, each with one round trip done, and the growth per link.
	IdleLinks      int     `json:"idleLinks,omitempty"`
	Before         *Mem    `json:"memBefore,omitempty"`
	After          *Mem    `json:"memAfter,omitempty"`
	RSSPerLinkKiB  float64 `json:"rssPerLinkKiB,omitempty"`
	AnonPerLinkKiB float64 `json:"anonPerLinkKiB,omitempty"`
	FilesBefore    float64 `json:"openFilesBefore,omitempty"` // the process's, from /proc/PID/fd
	FilesAfter     float64 `json:"openFilesAfter,omitempty"`
	// IdleCPUPercent is the process's CPU use, in % of one CPU, during the pause (Settle) with
	// the idle links open, before the second memory reading.
	IdleCPUPercent float64 `json:"idleCPUPercent,omitempty"`
}

// LinkRatios are the relay's medians divided by (or, for latency, minus) its floors' medians;
// 0 where a side is missing.
type LinkRatios struct {
	// One way, each direction alone: link ÷ direct, link ÷ proxy, encrypted link ÷ plain link.
	OneWayToDeviceDirect float64 `json:"oneWayToDeviceDirect"`
	OneWayToClientDirect float64 `json:"oneWayToClientDirect"`
	OneWayToDeviceProxy  float64 `json:"oneWayToDeviceProxy"`
	OneWayToClientProxy  float64 `json:"oneWayToClientProxy"`
	AESPlainToDevice     float64 `json:"aesPlainToDevice"`
	AESPlainToClient     float64 `json:"aesPlainToClient"`
	// Both ways at once, through the echo:
	ToDeviceDirect  float64 `json:"toDeviceDirect"`  // link ÷ direct, MB/s to the device
	BackDirect      float64 `json:"backDirect"`      // link ÷ direct, MB/s back
	ToDeviceProxy   float64 `json:"toDeviceProxy"`   // link ÷ io.Copy proxy
	BackProxy       float64 `json:"backProxy"`       //
	AESPlain        float64 `json:"aesPlain"`        // encrypted link ÷ plain link, MB/s back (the target: ≥ 0.7)
	AESDirect       float64 `json:"aesDirect"`       // encrypted link ÷ encrypted direct floor, MB/s back
	CPUPerGBProxy   float64 `json:"cpuPerGBProxy"`   // relay CPU per GB ÷ the proxy's
	P99Direct       float64 `json:"p99Direct"`       // link p99 ÷ direct p99
	AddedP99Us      float64 `json:"addedP99Us"`      // link p99 − direct p99 (the target: ≤ 50 µs)
	AddedP99ProxyUs float64 `json:"addedP99ProxyUs"` // link p99 − proxy p99
	RSSPerLinkProxy float64 `json:"rssPerLinkProxy"` // relay RSS per idle link ÷ the proxy's per pair
}

func (s *LinkSpec) defaults() {
	if s.Bytes == 0 {
		s.Bytes = 1_000_000_000
	}
	if s.RoundTrips == 0 {
		s.RoundTrips = 20_000
	}
	if s.Size == 0 {
		s.Size = 64
	}
	if s.IdleLinks == 0 {
		s.IdleLinks = 5000
	}
	if s.Settle == 0 {
		s.Settle = Duration(2 * time.Second)
	}
}

func (s *LinkSpec) validate() []string {
	var errs []string
	if s.Bytes < 0 || s.RoundTrips < 0 || s.IdleLinks < 0 {
		errs = append(errs, "link.bytes, link.roundtrips, link.idle_links: must be >= 0")
	}
	if s.Size < 8 || s.Size > 64<<10 {
		errs = append(errs, "link.size: must be 8 to 65536 bytes")
	}
	if s.IdleLinks > 6000 {
		errs = append(errs, "link.idle_links: at most 6000 (3 open files a link in the relay, within the open-file limit of 20,000)")
	}
	return errs
}

// runLink runs a device-link scenario Options.Count times, alternating: the relay (its idle
// links, a plain and an encrypted link's throughput, round trips), then each floor.
func runLink(ctx context.Context, s *Scenario, o Options, res *Result, logf func(string, ...any)) (*Result, error) {
	if o.LoadgenBin == "" {
		return nil, errors.New("device link: Options.LoadgenBin is not set (the echo and the proxy are loadgen processes)")
	}
	spec := *s.Link
	lr := &LinkResult{Count: max(o.Count, 1)}
	res.Link = lr
	dir, err := os.MkdirTemp("", "fleetrelay-bench-link-")
	if err != nil {
		return nil, err
	}
	defer removeAll(dir, o.Log)
	for round := 1; round <= lr.Count; round++ {
		l := &linkRound{spec: spec, o: o, dir: filepath.Join(dir, strconv.Itoa(round)), round: round, logf: logf}
		runs, err := l.run(ctx, s.Floors)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", round, err)
		}
		lr.Runs = append(lr.Runs, runs...)
		lr.ListenAddr, lr.Ports = l.listen.String(), l.ports
	}
	lr.compare()
	if lr.Count > 1 {
		res.Notes = append(res.Notes, fmt.Sprintf("figures in the tables are medians of %d rounds of the relay and of each floor, alternating", lr.Count))
	}
	if spec.IdleLinks > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("idle links: %d links in the relay (devicelink.ports %s, protocols [tcp]: a listening socket a port, 2 sockets a link), their %d clients in the bench process and %d device connections in the echo's",
			spec.IdleLinks, lr.Ports, spec.IdleLinks, spec.IdleLinks))
	}
	return res, nil
}

// linkRound is one round of a device-link scenario: the device echoes started, then the relay
// and each floor measured in turn.
type linkRound struct {
	spec   LinkSpec
	o      Options
	dir    string
	round  int
	logf   func(string, ...any)
	listen netip.Addr // devicelink.listen
	ports  string
	// The device processes: an echo and a one-way device.
	echoAddr, oneWayAddr string
}

func (l *linkRound) run(ctx context.Context, floors []string) ([]LinkRun, error) {
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, err
	}
	echoAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	echo, err := startProc(ctx, "echo", exec.Command(l.o.LoadgenBin, "link", "-echo", "-addr", echoAddr), echoAddr, "", 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer echo.stop()
	oneWayAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	oneWay, err := startProc(ctx, "one-way device", exec.Command(l.o.LoadgenBin, "link", "-echo", "-oneway", "-addr", oneWayAddr), oneWayAddr, "", 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer oneWay.stop()
	l.echoAddr, l.oneWayAddr = echoAddr, oneWayAddr

	var runs []LinkRun
	rs, err := l.relay(ctx, echoAddr)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	runs = append(runs, rs...)
	for _, f := range floors {
		var rs []LinkRun
		switch f {
		case FloorDirect:
			rs, err = l.direct(ctx, echoAddr)
		case FloorProxy:
			rs, err = l.proxy(ctx, echoAddr)
		}
		if err != nil {
			return nil, fmt.Errorf("%s floor: %w", f, err)
		}
		runs = append(runs, rs...)
	}
	return runs, nil
}

// relay measures the relay's links: idle links first (on a relay that carried nothing yet),
// then a plain link's and an encrypted link's throughput, then round trips over a plain link.
func (l *linkRound) relay(ctx context.Context, echoAddr string) ([]LinkRun, error) {
	devicePort, oneWayPort := portOf(echoAddr), portOf(l.oneWayAddr)
	devAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if err := l.pickPorts(l.spec.IdleLinks + 4); err != nil {
		return nil, err
	}
	key := newKey()
	busyPoll := ""
	if b := l.spec.BusyPoll; b != nil {
		busyPoll = fmt.Sprintf("  busy_poll: %s\n", time.Duration(*b))
	}
	cfg := fmt.Sprintf("data_dir: %s\nlog:\n  level: warn\ndevices:\n  native:\n    tcp: %s\n    udp: \"\"\n  max_connections: 16\n"+
		"admin:\n  listen: %q\n  bootstrap_key: %q\ndevicelink:\n  listen: %q\n  ports: %q\n  protocols: [tcp]\n%sfleet:\n  - id: %s\n",
		filepath.Join(l.dir, "data"), devAddr, adminAddr, key, l.listen.String(), l.ports, busyPoll, linkDevice)
	cfgPath := filepath.Join(l.dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	relay, err := startRelay(ctx, l.o.RelayBin, cfgPath, devAddr, adminAddr, time.Minute)
	if err != nil {
		return nil, err
	}
	defer relay.stop()

	// The device connects over the native protocol: its address becomes the one links reach.
	dev := loadgen.NewDevice(loadgen.DeviceConfig{Addr: devAddr, Hello: native.Hello{Serial: linkDevice}}, 1)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = dev.Connect(cctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("native device: %w", err)
	}
	defer dev.Close()
	api := &linkAPI{admin: adminAddr, key: key, client: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: linkOpeners}}, listen: l.listen}
	defer api.client.CloseIdleConnections()

	main := LinkRun{Round: l.round, Target: TargetRelay}
	if n := l.spec.IdleLinks; n > 0 {
		time.Sleep(time.Duration(l.spec.Settle))
		if err := l.idle(ctx, &main, relay, adminAddr, func(ctx context.Context) (*loadgen.LinkClient, error) {
			return api.dial(ctx, nil, devicePort)
		}); err != nil {
			return nil, fmt.Errorf("idle links: %w", err)
		}
		// The idle links' clients are closed: wait until the relay let go of them, so the
		// transfers below run beside no other link.
		if err := waitMetric(ctx, adminAddr, "fleetrelay_devicelink_tcp_links", 0, 30*time.Second); err != nil {
			return nil, err
		}
	}
	aes := LinkRun{Round: l.round, Target: TargetRelayAES}
	if l.spec.Bytes > 0 {
		if err := l.throughput(ctx, &main, relay, func(ctx context.Context) (*loadgen.LinkClient, error) { return api.dial(ctx, nil, devicePort) }); err != nil {
			return nil, fmt.Errorf("plain link: %w", err)
		}
		c, err := newLinkCipher()
		if err != nil {
			return nil, err
		}
		if err := l.throughput(ctx, &aes, relay, func(ctx context.Context) (*loadgen.LinkClient, error) { return api.dial(ctx, c, devicePort) }); err != nil {
			return nil, fmt.Errorf("encrypted link: %w", err)
		}
		if err := l.oneWay(ctx, &main, func(ctx context.Context) (*loadgen.LinkClient, error) { return api.dial(ctx, nil, oneWayPort) }); err != nil {
			return nil, fmt.Errorf("plain link: %w", err)
		}
		if err := l.oneWay(ctx, &aes, func(ctx context.Context) (*loadgen.LinkClient, error) { return api.dial(ctx, c, oneWayPort) }); err != nil {
			return nil, fmt.Errorf("encrypted link: %w", err)
		}
	}
	if err := l.roundTrips(ctx, &main, relay, func(ctx context.Context) (*loadgen.LinkClient, error) { return api.dial(ctx, nil, devicePort) }); err != nil {
		return nil, err
	}
	if aes.Bytes == 0 {
		return []LinkRun{main}, nil
	}
	return []LinkRun{main, aes}, nil
}

// direct measures the floor without anything between the client and the device: a loopback
// connection to the echo, and one to an echo that plays an encrypted link's relay end.
func (l *linkRound) direct(ctx context.Context, echoAddr string) ([]LinkRun, error) {
	run := LinkRun{Round: l.round, Target: FloorDirect}
	dial := func(ctx context.Context) (*loadgen.LinkClient, error) {
		return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: echoAddr})
	}
	if l.spec.Bytes > 0 {
		if err := l.throughput(ctx, &run, nil, dial); err != nil {
			return nil, err
		}
		if err := l.oneWay(ctx, &run, func(ctx context.Context) (*loadgen.LinkClient, error) {
			return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: l.oneWayAddr})
		}); err != nil {
			return nil, err
		}
	}
	if err := l.roundTrips(ctx, &run, nil, dial); err != nil {
		return nil, err
	}
	if l.spec.Bytes == 0 {
		return []LinkRun{run}, nil
	}
	c, err := newLinkCipher()
	if err != nil {
		return nil, err
	}
	aesAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	echo, err := startProc(ctx, "echo", exec.Command(l.o.LoadgenBin, "link", "-echo", "-addr", aesAddr,
		"-key", hex.EncodeToString(c.key), "-iv", hex.EncodeToString(c.iv)), aesAddr, "", 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer echo.stop()
	aesOneWay, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dev, err := startProc(ctx, "one-way device", exec.Command(l.o.LoadgenBin, "link", "-echo", "-oneway", "-addr", aesOneWay,
		"-key", hex.EncodeToString(c.key), "-iv", hex.EncodeToString(c.iv)), aesOneWay, "", 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer dev.stop()
	aes := LinkRun{Round: l.round, Target: TargetDirectAES}
	if err := l.throughput(ctx, &aes, nil, func(ctx context.Context) (*loadgen.LinkClient, error) {
		return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: aesAddr, Cipher: c.cipher})
	}); err != nil {
		return nil, fmt.Errorf("encrypted: %w", err)
	}
	if err := l.oneWay(ctx, &aes, func(ctx context.Context) (*loadgen.LinkClient, error) {
		return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: aesOneWay, Cipher: c.cipher})
	}); err != nil {
		return nil, fmt.Errorf("encrypted: %w", err)
	}
	return []LinkRun{run, aes}, nil
}

// proxy measures the io.Copy proxy floor (a process of its own) in front of the echo, as the
// relay: idle pairs, throughput, round trips.
func (l *linkRound) proxy(ctx context.Context, echoAddr string) ([]LinkRun, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startProc(ctx, "proxy", exec.Command(l.o.LoadgenBin, "link", "-proxy", "-addr", addr, "-upstream", echoAddr), addr, "", 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	run := LinkRun{Round: l.round, Target: FloorProxy}
	dial := func(ctx context.Context) (*loadgen.LinkClient, error) {
		return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: addr})
	}
	if l.spec.IdleLinks > 0 {
		time.Sleep(time.Duration(l.spec.Settle))
		if err := l.idle(ctx, &run, p, "", dial); err != nil {
			return nil, fmt.Errorf("idle pairs: %w", err)
		}
	}
	if l.spec.Bytes > 0 {
		if err := l.throughput(ctx, &run, p, dial); err != nil {
			return nil, err
		}
		// A second proxy, to the one-way device.
		addr2, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p2, err := startProc(ctx, "proxy", exec.Command(l.o.LoadgenBin, "link", "-proxy", "-addr", addr2, "-upstream", l.oneWayAddr), addr2, "", 30*time.Second)
		if err != nil {
			return nil, err
		}
		defer p2.stop()
		if err := l.oneWay(ctx, &run, func(ctx context.Context) (*loadgen.LinkClient, error) {
			return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: addr2})
		}); err != nil {
			return nil, err
		}
	}
	if err := l.roundTrips(ctx, &run, p, dial); err != nil {
		return nil, err
	}
	return []LinkRun{run}, nil
}

// throughput sends spec.Bytes through a fresh client of dial and the echo behind it, checked
// as it comes back; mid (the relay or the proxy, nil for direct) has its CPU read around it.
func (l *linkRound) throughput(ctx context.Context, run *LinkRun, mid *relayProc, dial func(context.Context) (*loadgen.LinkClient, error)) error {
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var cpu0 float64
	if mid != nil {
		cpu0 = mid.cpu()
	}
	// A transfer slower than 10 MB/s, or a stuck one, fails the run instead of hanging it.
	tctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(l.spec.Bytes/10)*time.Microsecond)
	defer cancel()
	t, err := c.Throughput(tctx, l.spec.Bytes)
	if err != nil {
		return err
	}
	run.Bytes = t.Bytes
	run.ToDeviceMBps, run.BackMBps = t.SentPerSec()/1e6, t.EchoedPerSec()/1e6
	if mid != nil {
		run.CPUPerGB = (mid.cpu() - cpu0) / (2 * float64(t.Bytes) / 1e9)
	}
	l.logf("%s: %d bytes each way, checked: to device %.0f MB/s, back %.0f MB/s", run.Target, t.Bytes, run.ToDeviceMBps, run.BackMBps)
	return nil
}

// oneWay sends spec.Bytes to a one-way device through a fresh client of dial until it confirmed
// them, then has it send as many back: each direction alone.
func (l *linkRound) oneWay(ctx context.Context, run *LinkRun, dial func(context.Context) (*loadgen.LinkClient, error)) error {
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, 2*(time.Minute+time.Duration(l.spec.Bytes/10)*time.Microsecond))
	defer cancel()
	up, err := c.ToDevice(tctx, l.spec.Bytes)
	if err != nil {
		return err
	}
	down, err := c.FromDevice(tctx, l.spec.Bytes)
	if err != nil {
		return err
	}
	run.OneWayToDeviceMBps, run.OneWayToClientMBps = up.PerSec()/1e6, down.PerSec()/1e6
	l.logf("%s: one way, %d bytes each, checked: to device %.0f MB/s, to client %.0f MB/s", run.Target, l.spec.Bytes, run.OneWayToDeviceMBps, run.OneWayToClientMBps)
	return nil
}

// portOf is the port of a host:port (0 if it has none).
func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// roundTrips times spec.RoundTrips requests through a fresh client of dial; mid (the relay or
// the proxy, nil for direct) has its CPU read around them.
func (l *linkRound) roundTrips(ctx context.Context, run *LinkRun, mid *relayProc, dial func(context.Context) (*loadgen.LinkClient, error)) error {
	if l.spec.RoundTrips == 0 {
		return nil
	}
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(l.spec.RoundTrips)*10*time.Millisecond)
	defer cancel()
	var cpu0 float64
	if mid != nil {
		cpu0 = mid.cpu()
	}
	r, err := c.RoundTrips(rctx, l.spec.RoundTrips, l.spec.Size, 5*time.Second)
	if err != nil {
		return err
	}
	us := func(q float64) float64 { return float64(r.Quantile(q)) / 1e3 }
	run.RoundTrips = len(r.Samples)
	run.P50Us, run.P99Us, run.P999Us, run.MaxUs = us(0.5), us(0.99), us(0.999), us(1)
	cpu := ""
	if mid != nil && run.RoundTrips > 0 {
		run.CPUPerRoundTripUs = (mid.cpu() - cpu0) * 1e6 / float64(run.RoundTrips)
		cpu = fmt.Sprintf(", %.1f µs of its CPU each", run.CPUPerRoundTripUs)
	}
	l.logf("%s: %d round trips of %d bytes: p50 %.1f µs, p99 %.1f µs%s", run.Target, run.RoundTrips, l.spec.Size, run.P50Us, run.P99Us, cpu)
	return nil
}

// linkOpeners is how many idle links are opened at once.
const linkOpeners = 8

// idle reads p's memory, opens spec.IdleLinks clients of dial, each with one round trip done
// (so that both of a link's sockets exist), reads the memory again, and closes them.
func (l *linkRound) idle(ctx context.Context, run *LinkRun, p *relayProc, admin string, dial func(context.Context) (*loadgen.LinkClient, error)) error {
	n := l.spec.IdleLinks
	before := p.mem(ctx, admin)
	run.Before, run.FilesBefore = &before, float64(p.openFiles())
	clients := make([]*loadgen.LinkClient, n)
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
		next = make(chan int)
	)
	for range linkOpeners {
		wg.Go(func() {
			for i := range next {
				lctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a stuck link fails the run
				c, err := dial(lctx)
				if err == nil {
					clients[i] = c
					_, err = c.RoundTrips(lctx, 1, l.spec.Size, 5*time.Second)
				}
				cancel()
				if err != nil {
					mu.Lock()
					ferr = cmp.Or(ferr, fmt.Errorf("link %d of %d: %w", i+1, n, err))
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		mu.Lock()
		failed := ferr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if ferr != nil {
		return ferr
	}
	cpu0, t0 := p.cpu(), time.Now()
	time.Sleep(time.Duration(l.spec.Settle))
	run.IdleCPUPercent = (p.cpu() - cpu0) / time.Since(t0).Seconds() * 100
	after := p.mem(ctx, admin)
	run.After, run.FilesAfter = &after, float64(p.openFiles())
	run.IdleLinks = n
	run.RSSPerLinkKiB = (after.RSSMiB - before.RSSMiB) * 1024 / float64(n)
	run.AnonPerLinkKiB = (after.AnonMiB - before.AnonMiB) * 1024 / float64(n)
	l.logf("%s: %d idle links: RSS %.1f → %.1f MiB (%.1f KiB a link; anon %.1f KiB), open files %.0f → %.0f, CPU %.1f %% while idle",
		run.Target, n, before.RSSMiB, after.RSSMiB, run.RSSPerLinkKiB, run.AnonPerLinkKiB, run.FilesBefore, run.FilesAfter, run.IdleCPUPercent)
	return nil
}

// openFiles counts the process's open files (/proc/PID/fd); 0 if unreadable.
func (p *relayProc) openFiles() int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	return len(es)
}

// pickPorts chooses devicelink.listen, an address of 127.0.0.0/8 other than 127.0.0.1 (so no
// other server on this machine is in the way), and n consecutive ports on it that are free
// for TCP and UDP, below the kernel's ephemeral range (so no outgoing connection takes one).
func (l *linkRound) pickPorts(n int) error {
	const low, high = 10000, 32767
	if n > high-low {
		return fmt.Errorf("%d link ports do not fit %d-%d", n, low, high)
	}
	for range 20 {
		ip := netip.AddrFrom4([4]byte{127, byte(64 + mrand.IntN(128)), byte(mrand.IntN(256)), byte(1 + mrand.IntN(254))})
		first := low + mrand.IntN(high-low-n)
		if portsFree(ip, first, n) {
			l.listen = ip
			l.ports = fmt.Sprintf("%d-%d", first, first+n-1)
			return nil
		}
	}
	return errors.New("no free range of link ports found")
}

// portsFree reports whether n ports from first can be bound on ip for TCP and for UDP.
func portsFree(ip netip.Addr, first, n int) bool {
	for p := first; p < first+n; p++ {
		a := netip.AddrPortFrom(ip, uint16(p)).String()
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return false
		}
		_ = ln.Close()
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return false
		}
		_ = pc.Close()
	}
	return true
}

// waitMetric polls the relay's /metrics until name sums to want.
func waitMetric(ctx context.Context, admin, name string, want float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		v, err := scrape(ctx, admin, name)
		if err == nil && v == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %v (err %v) after %v, want %v", name, v, err, timeout, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// linkCipher is a fresh key and IV for one encrypted link.
type linkCipher struct {
	key, iv []byte
	cipher  *linkcrypt.Cipher
}

func newLinkCipher() (*linkCipher, error) {
	c := &linkCipher{key: make([]byte, 32), iv: make([]byte, 16)}
	_, _ = rand.Read(c.key)
	_, _ = rand.Read(c.iv)
	var err error
	c.cipher, err = linkcrypt.New(c.key, c.iv)
	return c, err
}

// linkAPI creates links to the bench's device through the relay's API.
type linkAPI struct {
	admin, key string
	client     *http.Client
	listen     netip.Addr
}

// dial creates a TCP link to the device's devicePort (encrypted with c when set) and connects
// its client. The device's
// address may not be known yet just after it connected: 404 is retried for a while.
func (a *linkAPI) dial(ctx context.Context, c *linkCipher, devicePort int) (*loadgen.LinkClient, error) {
	body := map[string]any{"protocol": "tcp", "devicePort": devicePort}
	var lc *linkcrypt.Cipher
	if c != nil {
		body["encrypt"] = map[string]string{"key": hex.EncodeToString(c.key), "initializationVector": hex.EncodeToString(c.iv)}
		lc = c.cipher
	}
	b, _ := json.Marshal(body)
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a.admin+"/api/v1/devicelink/"+linkDevice, bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+a.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := a.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("create link: %w", err)
		}
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if resp.StatusCode != http.StatusCreated {
			return nil, fmt.Errorf("create link: %s: %s", resp.Status, strings.TrimSpace(string(out)))
		}
		var info struct {
			Port uint16 `json:"port"`
		}
		if err := json.Unmarshal(out, &info); err != nil || info.Port == 0 {
			return nil, fmt.Errorf("create link: answer %s: %v", out, err)
		}
		return loadgen.DialLink(ctx, loadgen.LinkOptions{Addr: netip.AddrPortFrom(a.listen, info.Port).String(), Cipher: lc})
	}
}

// compare fills the medians and the ratios from the runs.
func (r *LinkResult) compare() {
	by := map[string][]LinkRun{}
	for _, x := range r.Runs {
		by[x.Target] = append(by[x.Target], x)
	}
	r.Medians = map[string]LinkRun{}
	for t, xs := range by {
		r.Medians[t] = medianLinkRun(xs)
	}
	m := r.Medians
	rel, aes, dir, daes, px := m[TargetRelay], m[TargetRelayAES], m[FloorDirect], m[TargetDirectAES], m[FloorProxy]
	sub := func(a, b float64) float64 {
		if a <= 0 || b <= 0 {
			return 0
		}
		return a - b
	}
	r.Ratios = LinkRatios{
		OneWayToDeviceDirect: ratio(rel.OneWayToDeviceMBps, dir.OneWayToDeviceMBps), OneWayToClientDirect: ratio(rel.OneWayToClientMBps, dir.OneWayToClientMBps),
		OneWayToDeviceProxy: ratio(rel.OneWayToDeviceMBps, px.OneWayToDeviceMBps), OneWayToClientProxy: ratio(rel.OneWayToClientMBps, px.OneWayToClientMBps),
		AESPlainToDevice: ratio(aes.OneWayToDeviceMBps, rel.OneWayToDeviceMBps), AESPlainToClient: ratio(aes.OneWayToClientMBps, rel.OneWayToClientMBps),
		ToDeviceDirect: ratio(rel.ToDeviceMBps, dir.ToDeviceMBps), BackDirect: ratio(rel.BackMBps, dir.BackMBps),
		ToDeviceProxy: ratio(rel.ToDeviceMBps, px.ToDeviceMBps), BackProxy: ratio(rel.BackMBps, px.BackMBps),
		AESPlain: ratio(aes.BackMBps, rel.BackMBps), AESDirect: ratio(aes.BackMBps, daes.BackMBps),
		CPUPerGBProxy: ratio(rel.CPUPerGB, px.CPUPerGB),
		P99Direct:     ratio(rel.P99Us, dir.P99Us), AddedP99Us: sub(rel.P99Us, dir.P99Us), AddedP99ProxyUs: sub(rel.P99Us, px.P99Us),
		RSSPerLinkProxy: ratio(rel.RSSPerLinkKiB, px.RSSPerLinkKiB),
	}
}

// medianLinkRun is the field-by-field median of xs (all of one target): every float64 field,
// and the memory readings of the run whose RSS per link is the median.
func medianLinkRun(xs []LinkRun) LinkRun {
	m := LinkRun{Target: xs[0].Target, Bytes: xs[0].Bytes, IdleLinks: xs[0].IdleLinks}
	mv := reflect.ValueOf(&m).Elem()
	vs := make([]float64, len(xs))
	for i := range mv.NumField() {
		if mv.Field(i).Kind() != reflect.Float64 {
			continue
		}
		for k := range xs {
			vs[k] = reflect.ValueOf(xs[k]).Field(i).Float()
		}
		mv.Field(i).SetFloat(median(vs))
	}
	for _, x := range xs {
		m.RoundTrips = max(m.RoundTrips, x.RoundTrips)
	}
	return m
}

// writeLinkTable: one row per device-link result, ratios first.
func writeLinkTable(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| device-link scenario | one way: link ÷ direct (to device / to client) | one way: link ÷ io.Copy proxy | both ways at once: link ÷ direct (to device / back) | both at once: link ÷ proxy | AES link ÷ plain link: one way; both at once | AES link ÷ AES direct (both at once) | added p99 vs direct (vs proxy) | p99 ÷ direct | RSS per idle link ÷ proxy | CPU/GB ÷ proxy | runs | link MB/s one way; both at once | AES link MB/s one way; both at once | direct MB/s one way; both at once (AES) | proxy MB/s one way; both at once | p50 / p99: link, direct, proxy | RSS per idle link (anon): relay, proxy | relay CPU s/GB (proxy) | relay CPU µs per round trip (proxy) | relay CPU with idle links |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		l := r.Link
		m, q := l.Medians, l.Ratios
		rel, aes, dir, daes, px := m[TargetRelay], m[TargetRelayAES], m[FloorDirect], m[TargetDirectAES], m[FloorProxy]
		mbps := func(v float64) string {
			if !(v > 0) {
				return "–"
			}
			return strconv.FormatFloat(v, 'f', 0, 64)
		}
		pair := func(a, b float64) string { return mbps(a) + " / " + mbps(b) }
		both := func(x LinkRun) string {
			return pair(x.OneWayToDeviceMBps, x.OneWayToClientMBps) + "; " + pair(x.ToDeviceMBps, x.BackMBps)
		}
		us := func(v float64) string {
			if !(v > 0) {
				return "–"
			}
			return Micros(v)
		}
		added := "–"
		if q.AddedP99Us != 0 || q.AddedP99ProxyUs != 0 {
			added = fmt.Sprintf("%s µs (%s µs)", signed(q.AddedP99Us), signed(q.AddedP99ProxyUs))
		}
		kib := func(x LinkRun) string {
			if x.IdleLinks == 0 {
				return "–"
			}
			return fmt.Sprintf("%.1f KiB (%.1f)", x.RSSPerLinkKiB, x.AnonPerLinkKiB)
		}
		cpu := func(v float64) string {
			if !(v > 0) {
				return "–"
			}
			return strconv.FormatFloat(v, 'f', 2, 64)
		}
		perTrip := func(v float64) string {
			if !(v > 0) {
				return "–"
			}
			return strconv.FormatFloat(v, 'f', 1, 64)
		}
		idleCPU := "–"
		if rel.IdleLinks > 0 {
			idleCPU = fmt.Sprintf("%.1f %%", rel.IdleCPUPercent)
		}
		fmt.Fprintf(w, "| %s | **%s / %s** | %s / %s | %s / %s | %s / %s | **%s / %s**; %s | %s | **%s** | %s | **%s** | %s | %d | %s | %s | %s (%s) | %s | %s, %s, %s / %s, %s, %s | %s, %s | %s (%s) | %s (%s) | %s |\n",
			r.Scenario, Ratio(q.OneWayToDeviceDirect), Ratio(q.OneWayToClientDirect), Ratio(q.OneWayToDeviceProxy), Ratio(q.OneWayToClientProxy),
			Ratio(q.ToDeviceDirect), Ratio(q.BackDirect), Ratio(q.ToDeviceProxy), Ratio(q.BackProxy),
			Ratio(q.AESPlainToDevice), Ratio(q.AESPlainToClient), Ratio(q.AESPlain), Ratio(q.AESDirect),
			added, Ratio(q.P99Direct), Ratio(q.RSSPerLinkProxy), Ratio(q.CPUPerGBProxy), l.Count,
			both(rel), both(aes), both(dir), mbps(daes.BackMBps), both(px),
			us(rel.P50Us), us(dir.P50Us), us(px.P50Us), us(rel.P99Us), us(dir.P99Us), us(px.P99Us),
			kib(rel), kib(px), cpu(rel.CPUPerGB), cpu(px.CPUPerGB), perTrip(rel.CPUPerRoundTripUs), perTrip(px.CPUPerRoundTripUs), idleCPU)
	}
}

// writeLinkRuns: every run of the device-link results, in the order they ran.
func writeLinkRuns(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "| device-link scenario | round | target | one way MB/s: to device / to client | both at once MB/s: to device / back | CPU s/GB | round trips p50 / p99 / p99.9 / max | CPU µs per round trip | idle links | RSS before → after (anon) | per link: RSS (anon) | open files before → after | CPU with idle links |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		for _, x := range r.Link.Runs {
			one, tp, cpu, rt, rtCPU, idle, mem, per, files, idleCPU := "–", "–", "–", "–", "–", "–", "–", "–", "–", "–"
			if x.OneWayToDeviceMBps > 0 {
				one = fmt.Sprintf("%.0f / %.0f", x.OneWayToDeviceMBps, x.OneWayToClientMBps)
			}
			if x.Bytes > 0 {
				tp = fmt.Sprintf("%.0f / %.0f", x.ToDeviceMBps, x.BackMBps)
			}
			if x.CPUPerGB > 0 {
				cpu = fmt.Sprintf("%.2f", x.CPUPerGB)
			}
			if x.RoundTrips > 0 {
				rt = fmt.Sprintf("%s / %s / %s / %s", Micros(x.P50Us), Micros(x.P99Us), Micros(x.P999Us), Micros(x.MaxUs))
			}
			if x.CPUPerRoundTripUs > 0 {
				rtCPU = fmt.Sprintf("%.1f", x.CPUPerRoundTripUs)
			}
			if x.IdleLinks > 0 && x.Before != nil && x.After != nil {
				idle = strconv.Itoa(x.IdleLinks)
				mem = fmt.Sprintf("%.1f → %.1f MiB (%.1f → %.1f)", x.Before.RSSMiB, x.After.RSSMiB, x.Before.AnonMiB, x.After.AnonMiB)
				per = fmt.Sprintf("%.1f KiB (%.1f)", x.RSSPerLinkKiB, x.AnonPerLinkKiB)
				files = fmt.Sprintf("%.0f → %.0f", x.FilesBefore, x.FilesAfter)
				idleCPU = fmt.Sprintf("%.1f %%", x.IdleCPUPercent)
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Scenario, x.Round, x.Target, one, tp, cpu, rt, rtCPU, idle, mem, per, files, idleCPU)
		}
	}
}

// signed writes a difference of µs with its sign: +12.3, −4.56.
func signed(v float64) string {
	if v < 0 {
		return "−" + sig3(math.Abs(v))
	}
	if v == 0 {
		return "0"
	}
	if v >= 1000 {
		return "+" + strconv.FormatFloat(v, 'f', 0, 64)
	}
	return "+" + sig3(v)
}
