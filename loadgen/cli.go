package loadgen

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/teltonika"
)

// Main runs the loadgen command line: "run", "sink", "capacity", "floor" or "link". It returns the process exit code: 0, 1 on
// an error or when acknowledged data was lost, 2 on bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: loadgen run|sink|capacity|floor|link [flags]")
		return 2
	}
	switch args[0] {
	case "run":
		return mainRun(ctx, args[1:], stdout, stderr)
	case "sink":
		return mainSink(ctx, args[1:], stdout, stderr)
	case "capacity":
		return mainCapacity(ctx, args[1:], stdout, stderr)
	case "floor":
		return mainFloor(ctx, args[1:], stdout, stderr)
	case "link":
		return mainLink(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "loadgen: unknown command %q (want run, sink, capacity, floor or link)\n", args[0])
	return 2
}

func mainRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o RunOptions
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:5000", "relay native TCP address")
	fs.IntVar(&o.Devices, "devices", 100, "simulated devices (capped by the open-file limit)")
	fs.Float64Var(&o.Rate, "rate", 1, "frames per second per device; 0 = as fast as the window allows")
	fs.BoolVar(&o.Poisson, "poisson", false, "exponential gaps between frames instead of a fixed interval")
	o.Records = 1
	fs.Func("records", "records per frame (default 1); Teltonika: N or a range N-M drawn per packet, at most 255", func(v string) error {
		return parseRecords(v, &o)
	})
	fs.StringVar(&o.Protocol, "protocol", ProtocolNative, "native, teltonika-tcp (trackers dial -addr) or teltonika-udp (trackers send to -udp-addr)")
	fs.DurationVar(&o.AckTimeout, "ack-timeout", 0, "Teltonika: wait this long for a packet's answer before sending it again (0: 5s over TCP, on a new connection; 1s doubling over UDP)")
	fs.Uint64Var(&o.IMEIBase, "imei-base", DefaultIMEIBase, "Teltonika: the first tracker's IMEI; the others follow")
	codec := fs.String("codec", "8", "Teltonika: AVL codec, 8, 8E or 16")
	payload := fs.String("payload", "sensor", "record profile: sensor, gps, or a JSON template file with \"$sentAt\", \"$seq\", \"$index\", \"$device\"")
	fs.IntVar(&o.Window, "window", 64, "unacknowledged frames in flight per device")
	fs.DurationVar(&o.RampUp, "ramp", 0, "connect devices evenly over this long")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "sending time after ramp-up")
	fs.Float64Var(&o.Churn, "churn", 0, "device reconnects per second over the fleet")
	fs.IntVar(&o.SourceIPs, "source-ips", 0, "spread connections over this many 127.0.x.y source addresses (0: one per 1,000 devices)")
	fs.StringVar(&o.Prefix, "prefix", "LG", "device serial prefix")
	fs.StringVar(&o.UDPAddr, "udp-addr", "127.0.0.1:5000", "relay native UDP address (for -udp-share)")
	fs.Float64Var(&o.UDPShare, "udp-share", 0, "fraction of the devices on UDP (0..1)")
	fs.IntVar(&o.UDPWindow, "udp-window", 1, "datagrams in flight per UDP device, each resent until its own ACK (1: stop-and-wait)")
	fs.Float64Var(&o.UDPDrop, "udp-drop", 0, "share of datagram sends (0..1) UDP devices skip as if lost, resends included")
	fs.StringVar(&o.NDJSONAddr, "ndjson-addr", "", "send NDJSON lines to the relay's NDJSON listener instead of the native protocol")
	fs.IntVar(&o.NDJSONConns, "ndjson-conns", 16, "NDJSON connections (each carries the lines of devices/conns identities)")
	fs.DurationVar(&o.Commands.Delay, "command-delay", 0, "devices answer each COMMAND's RESULT after this long")
	fs.Float64Var(&o.Commands.FailRatio, "command-fail", 0, "share of COMMANDs (0..1) devices answer with code 1 (failure)")
	tlsCA := fs.String("tls-ca", "", "connect the TCP devices over TLS (-addr: the relay's devices.native.tls.listen), trusting the CAs of this PEM file")
	tlsCert := fs.String("tls-cert", "", "with -tls-ca: the certificate (PEM) every device presents, with -tls-key")
	tlsKey := fs.String("tls-key", "", "with -tls-ca: the key (PEM) of -tls-cert")
	tlsVersion := fs.String("tls-version", "", "with -tls-ca: the one TLS version to speak, 1.2 or 1.3 (default: the highest both sides have)")
	token := fs.String("token", "", "token every device presents in HELLO (and UDATA): register the devices with it for devices.auth: token")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	htmlOut := fs.String("html", "", "write the report as a self-contained HTML chart to this file")
	quiet := fs.Bool("quiet", false, "no progress line even on a terminal")
	sinkURL := fs.String("sink", "", "URL of the loadgen sink the relay delivers to: after the run, wait until it has every acknowledged message and report lost and duplicated ones (exit 1 if any was lost)")
	var drain DrainOptions
	fs.DurationVar(&drain.Quiet, "sink-quiet", 30*time.Second, "with -sink: stop waiting when the sink received nothing new for this long")
	fs.DurationVar(&drain.Timeout, "sink-timeout", 10*time.Minute, "with -sink: stop waiting after this long in any case")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch strings.ToUpper(*codec) {
	case "8":
		o.TeltonikaCodec = teltonika.Codec8
	case "8E":
		o.TeltonikaCodec = teltonika.Codec8E
	case "16":
		o.TeltonikaCodec = teltonika.Codec16
	default:
		fmt.Fprintf(stderr, "-codec %q: want 8, 8E or 16\n", *codec)
		return 2
	}
	if *token != "" {
		tok := *token
		o.Token = func(string) string { return tok }
	}
	if *tlsCA != "" || *tlsCert != "" || *tlsKey != "" {
		cfg, err := ClientTLS(*tlsCA, *tlsCert, *tlsKey, *tlsVersion)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		o.TLS = cfg
	}
	p, err := NewPayload(*payload)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	o.Payload = p
	if f, ok := stderr.(*os.File); ok && !*quiet && isTerminal(f) {
		o.Progress = stderr
	}
	rep, err := Run(ctx, o)
	if err == nil && *sinkURL != "" {
		err = verify(ctx, rep, &SinkClient{URL: *sinkURL}, drain)
	}
	if rep != nil {
		_ = rep.WriteText(stdout)
		if werr := writeFile(*jsonOut, rep.WriteJSON); werr != nil {
			fmt.Fprintln(stderr, werr)
			return 1
		}
		if werr := writeFile(*htmlOut, rep.WriteHTML); werr != nil {
			fmt.Fprintln(stderr, werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	code := 0
	if rep.Unacked > 0 {
		fmt.Fprintf(stderr, "loadgen: %d frames never acknowledged\n", rep.Unacked)
		code = 1
	}
	if a := rep.Account; a != nil && a.Lost > 0 {
		fmt.Fprintf(stderr, "loadgen: %d acknowledged messages lost: %s\n", a.Lost, a.String())
		code = 1
	}
	return code
}

// verify waits until the sink has everything rep expects, or stops receiving, and puts the
// account, per device, in rep.
func verify(ctx context.Context, rep *RunReport, sink *SinkClient, o DrainOptions) error {
	req := rep.AccountRequest(true)
	unique := func(ctx context.Context) (int64, error) {
		st, err := sink.Stats(ctx)
		return int64(st.Unique), err
	}
	account := func(ctx context.Context) (AccountReport, error) { return sink.Account(ctx, req) }
	a, err := WaitAccount(ctx, req.Expect().Total(), unique, account, o)
	if err != nil {
		return fmt.Errorf("check the sink: %w", err)
	}
	rep.Account = &a
	return nil
}

func mainCapacity(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen capacity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o CapacityOptions
	fs.StringVar(&o.Run.Addr, "addr", "127.0.0.1:5000", "relay native TCP address")
	fs.IntVar(&o.Run.Devices, "devices", 1000, "simulated devices")
	fs.IntVar(&o.Run.Records, "records", 1, "records per frame")
	fs.IntVar(&o.Run.Window, "window", 64, "unacknowledged frames in flight per device")
	fs.DurationVar(&o.Run.RampUp, "ramp", 2*time.Second, "connect devices evenly over this long (each probe)")
	fs.DurationVar(&o.P99, "p99", 10*time.Millisecond, "SLO: p99 ACK latency bound")
	fs.DurationVar(&o.Probe, "probe", 10*time.Second, "how long each rate is held")
	fs.Float64Var(&o.Tolerance, "tolerance", 0.05, "stop when the bracket is this narrow (relative)")
	fs.StringVar(&o.SinkURL, "sink", "", "URL of the loadgen sink the relay delivers to (checks delivery keeps up)")
	jsonOut := fs.String("json", "", "write the search as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Log = stderr
	rep, err := Capacity(ctx, o)
	if rep != nil {
		fmt.Fprintln(stdout, rep.String())
		if werr := writeFile(*jsonOut, func(w io.Writer) error {
			e := json.NewEncoder(w)
			e.SetIndent("", "  ")
			return e.Encode(rep)
		}); werr != nil {
			fmt.Fprintln(stderr, werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// mainFloor runs an ACK floor (-ack) or a pipeline floor (-pipeline -sink URL): what bench
// measures the relay against, in the same run, with the same fleet and sink.
func mainFloor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o FloorOptions
	ack := fs.Bool("ack", false, "ACK floor: WELCOME each HELLO, ACK each DATA frame (answer each Teltonika packet) on receipt, store nothing")
	fs.BoolVar(&o.Pipeline, "pipeline", false, "pipeline floor: as -ack, and forward every record to -sink as envelopes in JSON-array batches (no durability)")
	fs.StringVar(&o.Addr, "listen", "127.0.0.1:5000", "native TCP listen address (empty: none)")
	fs.StringVar(&o.UDPAddr, "udp", "", "native UDP listen address (empty: none)")
	fs.StringVar(&o.NDJSONAddr, "ndjson", "", "NDJSON listen address (empty: none)")
	fs.StringVar(&o.TeltonikaAddr, "teltonika", "", "Teltonika TCP listen address (empty: none)")
	fs.StringVar(&o.TeltonikaUDPAddr, "teltonika-udp", "", "Teltonika UDP listen address (empty: none)")
	fs.StringVar(&o.SinkURL, "sink", "", "pipeline: the URL batches are POSTed to, path included")
	fs.IntVar(&o.MaxMessages, "max-messages", 500, "pipeline: batch size")
	fs.DurationVar(&o.Linger, "linger", 20*time.Millisecond, "pipeline: batch linger")
	fs.IntVar(&o.Concurrency, "concurrency", 4, "pipeline: requests in flight (lanes)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *ack == o.Pipeline {
		fmt.Fprintln(stderr, "loadgen floor: give -ack or -pipeline")
		return 2
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := RunFloor(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func mainSink(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o SinkOptions
	fs.StringVar(&o.Addr, "listen", "127.0.0.1:9000", "listen address")
	fs.StringVar(&o.SentField, "sent-field", DefaultSentField, "record field holding the device's send time (Unix µs), for end-to-end latency")
	fs.StringVar(&o.KeyField, "key-field", DefaultKeyField, `data field identifying a record within its device instead of the envelope's seq and index, when present ("outer.inner" for a nested member; "-": none)`)
	faults := fs.String("faults", "", `faults as JSON, e.g. {"statusMix":{"503":0.1},"delay":"5ms","retryAfter":2,"outages":[{"from":"10s","duration":"30s"}]} (also POST /faults at run time)`)
	fs.Uint64Var(&o.Seed, "seed", 0, "seed of fault decisions (0: random)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *faults != "" {
		if err := json.Unmarshal([]byte(*faults), &o.Faults); err != nil {
			fmt.Fprintf(stderr, "-faults: %v\n", err)
			return 2
		}
	}
	s, err := StartSinkWith(o)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "sink listening on %s (GET /stats, GET /stats/devices, POST /reset, GET|POST /faults)\n", s.URL())
	<-ctx.Done()
	st := s.Stats()
	fmt.Fprintf(stdout, "requests %d, refused %d, messages %d, unique %d, duplicates %d, reordered %d\n",
		st.Requests, st.Refused, st.Messages, st.Unique, st.Dups, st.Reordered)
	if err := s.Close(); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// parseRecords sets o.Records (and o.RecordsMax) from "N" or "N-M".
func parseRecords(v string, o *RunOptions) error {
	lo, hi, isRange := strings.Cut(v, "-")
	n, err := strconv.Atoi(lo)
	if err != nil || n < 1 {
		return fmt.Errorf("want a positive number or a range N-M, not %q", v)
	}
	o.Records, o.RecordsMax = n, 0
	if isRange {
		m, err := strconv.Atoi(hi)
		if err != nil || m < n {
			return fmt.Errorf("want a range N-M with N ≤ M, not %q", v)
		}
		o.RecordsMax = m
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
