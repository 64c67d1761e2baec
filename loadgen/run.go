package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// RunOptions describe a simulated fleet.
type RunOptions struct {
	Addr      string        // relay native TCP address
	Devices   int           // simulated devices
	Rate      float64       // frames per second per device; 0: as fast as the window allows
	Poisson   bool          // exponential gaps instead of a fixed interval (open loop either way)
	Records   int           // records per frame (default 1)
	Payload   Payload       // default: the sensor profile
	Window    int           // unacknowledged frames in flight per device (default 64)
	RampUp    time.Duration // connect devices evenly over this long
	Duration  time.Duration // sending time after ramp-up
	Churn     float64       // device reconnects per second, over the whole fleet
	SourceIPs int           // spread connections over 127.0.0.2.. (default: one per 1,000 devices)
	Prefix    string        // device serial prefix (default "LG")
	FirstSeq  uint64        // first seq of every device (default 1)
	Progress  io.Writer     // one status line per second, or nil
	OnSecond  func(Second)  // called with each second's figures (from one goroutine), or nil
	// DrainTimeout bounds the wait for outstanding ACKs after sending stops (default 30s).
	DrainTimeout time.Duration
	// UDPAddr and UDPShare put that fraction of the devices (0..1) on UDP: UDATA datagrams,
	// each resent every UDPRetry (default 200ms) until its own ACK arrives, with up to UDPWindow
	// in flight (default 1: stop-and-wait). UDPDrop is the share of datagram sends (0..1) the
	// devices skip as if the network lost them.
	UDPAddr   string
	UDPShare  float64
	UDPRetry  time.Duration
	UDPWindow int
	UDPDrop   float64
	// NDJSONAddr, when set, runs the fleet over the relay's NDJSON listener instead of the native
	// protocol: NDJSONConns connections (default 16, like gateways) each carry the lines of
	// Devices/NDJSONConns identities, one JSON object per record with "serial" set. There are no
	// acknowledgements: RunReport.Lines counts what each identity sent.
	NDJSONAddr  string
	NDJSONConns int
	// Idle devices connect and hold their connection for the duration without sending.
	Idle bool
	// Commands is how the TCP devices answer the relay's COMMANDs (delay, failure ratio).
	Commands CommandConfig
	// TLS, if set, connects the TCP devices over TLS with it (Addr is then the relay's TLS
	// listener). One configuration for every device: a relay that identifies devices by their
	// certificates (client_ca) needs one per device, so this suits a relay without client_ca.
	TLS *tls.Config
	// Token, if set, gives each device its token (HELLO's, and UDATA's for UDP devices), by
	// identity, for a relay with devices.auth: token.
	Token func(identity string) string
	// OnConnected, if set, is called once when every device is connected.
	OnConnected func()
	// Acked and Sent, if set, count acknowledged and sent frames (NDJSON: lines written) as the
	// run goes (read them while it runs, e.g. to see when a restarted relay acknowledges again).
	Acked, Sent *atomic.Int64
	// Stop, if set, ends sending when it is closed, before Duration if need be; outstanding ACKs
	// are still waited for.
	Stop <-chan struct{}

	// Protocol is ProtocolNative (""), ProtocolTeltonikaTCP (trackers dial Addr) or
	// ProtocolTeltonikaUDP (trackers send to UDPAddr). Teltonika trackers send one AVL packet at
	// a time (Window, UDPShare and Churn do not apply) of Records records, or a number drawn
	// uniformly from Records..RecordsMax; Rate counts packets.
	Protocol   string
	RecordsMax int
	// IMEIBase is the IMEI of the first tracker (default DefaultIMEIBase); the others follow.
	IMEIBase uint64
	// AckTimeout is how long a tracker waits for a packet's answer before it sends the packet
	// again: over TCP on a new connection (default 5s), over UDP (default 1s, doubling).
	AckTimeout time.Duration
	// TeltonikaCodec is the trackers' AVL codec: 0x08 (default), 0x8E or 0x10.
	TeltonikaCodec byte
	// AckedRecords, if set, counts the records of the Teltonika packets acknowledged as the run
	// goes (Acked counts the packets).
	AckedRecords *atomic.Int64
}

// fdReserve is kept free of device sockets for the process's other files.
const fdReserve = 64

// FDLimit is the process's open-file limit (RLIMIT_NOFILE, soft).
func FDLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return int(rl.Cur)
}

// Run simulates the fleet until the duration passes or ctx ends, then waits for outstanding ACKs
// and returns the report. Devices beyond the open-file limit are not started; the report says so.
func Run(ctx context.Context, o RunOptions) (*RunReport, error) {
	if o.Records <= 0 {
		o.Records = 1
	}
	if o.Payload == nil {
		o.Payload = sensorPayload{}
	}
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.Prefix == "" {
		o.Prefix = "LG"
	}
	if o.FirstSeq == 0 {
		o.FirstSeq = 1
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	rep := &RunReport{Options: o.describe(), FDLimit: FDLimit(), Requested: o.Devices}
	if max := rep.FDLimit - fdReserve; o.Devices > max {
		rep.Notes = append(rep.Notes, fmt.Sprintf("open-file limit %d: running %d of %d devices", rep.FDLimit, max, o.Devices))
		o.Devices = max
	}
	if o.SourceIPs <= 0 {
		o.SourceIPs = o.Devices/1000 + 1
	}
	if o.UDPRetry <= 0 {
		o.UDPRetry = 200 * time.Millisecond
	}
	o.UDPWindow = max(o.UDPWindow, 1)
	rep.Devices = o.Devices
	switch o.Protocol {
	case "", ProtocolNative:
		if o.RecordsMax > o.Records {
			return nil, errors.New("a range of records per frame is for Teltonika trackers only")
		}
	case ProtocolTeltonikaTCP, ProtocolTeltonikaUDP:
		return runTeltonika(ctx, o, rep)
	default:
		return nil, fmt.Errorf("protocol %q: want %s, %s or %s", o.Protocol, ProtocolNative, ProtocolTeltonikaTCP, ProtocolTeltonikaUDP)
	}
	if o.NDJSONAddr != "" {
		return runNDJSON(ctx, o, rep)
	}
	nUDP := int(math.Round(min(max(o.UDPShare, 0), 1) * float64(o.Devices)))
	if nUDP > 0 && o.UDPAddr == "" {
		return nil, errors.New("UDPShare set without UDPAddr")
	}

	r := newRecorder()
	if o.Acked != nil {
		r.acked = o.Acked
	}
	if o.Sent != nil {
		r.sent = o.Sent
	}
	rep.FirstSeq, rep.Records = o.FirstSeq, o.Records
	udps := make([]*UDPDevice, nUDP)
	for i := range udps {
		id := fmt.Sprintf("%sU%06d", o.Prefix, i)
		u, err := NewUDPDevice(UDPConfig{Addr: o.UDPAddr, Identity: id, Token: o.token(id),
			First: o.FirstSeq, Drop: o.UDPDrop, Seed: uint64(i) + 1, OnAck: r.ack})
		if err != nil {
			for _, u := range udps[:i] {
				u.Close()
			}
			return nil, err
		}
		udps[i] = u
	}
	defer func() {
		for _, u := range udps {
			u.Close()
		}
	}()
	devs := make([]*Device, o.Devices-nUDP)
	for i := range devs {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, byte(2+i%o.SourceIPs/250), byte(2+i%o.SourceIPs%250))}
		if o.SourceIPs == 1 {
			src = nil
		}
		serial := fmt.Sprintf("%s%06d", o.Prefix, i)
		devs[i] = NewDevice(DeviceConfig{
			Addr:     o.Addr,
			Hello:    native.Hello{Serial: serial, Token: o.token(serial)},
			Window:   o.Window,
			Local:    src,
			OnAck:    r.ack,
			Commands: o.Commands,
			TLS:      o.TLS,
		}, o.FirstSeq)
	}

	start, sendUntil, runCtx, closeWindow := o.sendWindow(ctx, rep)
	defer closeWindow()

	var wg sync.WaitGroup
	var connected atomic.Int64
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !o.rampWait(runCtx, start, i, len(devs)) {
				return
			}
			if err := connectRetry(runCtx, d); err != nil {
				r.errors.Add(1)
				return
			}
			if connected.Add(1) == int64(o.Devices) && o.OnConnected != nil {
				o.OnConnected()
			}
			if o.Idle {
				<-runCtx.Done()
				return
			}
			r.simulate(runCtx, d, &o, i)
		}()
	}
	// The drain context outlives sending so a UDP frame in flight at the end still gets its ACK.
	drainCtx, cancelDrain := context.WithDeadline(ctx, sendUntil.Add(o.DrainTimeout))
	defer cancelDrain()
	for i, u := range udps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !o.rampWait(runCtx, start, i, len(udps)) {
				return
			}
			if connected.Add(1) == int64(o.Devices) && o.OnConnected != nil {
				o.OnConnected()
			}
			if !o.Idle {
				r.simulateUDP(runCtx, drainCtx, u, &o, i)
			}
		}()
	}
	stopProgress := r.progress(o.Progress, o.OnSecond, start, &connected)
	var churnWG sync.WaitGroup
	if o.Churn > 0 {
		churnWG.Add(1)
		go func() {
			defer churnWG.Done()
			r.churn(runCtx, devs, o.Churn)
		}()
	}
	wg.Wait()
	churnWG.Wait()
	sendEnd := time.Now()

	// Drain: every frame sent gets its ACK, or the timeout ends the wait.
	var dwg sync.WaitGroup
	for _, d := range devs {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			last := d.NextSeq() - 1
			for d.Acked() < last && drainCtx.Err() == nil {
				if d.Err() != nil { // reconnect to get the rest acknowledged
					if err := d.Connect(drainCtx); err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					r.reconnects.Add(1)
				}
				_ = d.WaitAcked(drainCtx, last)
			}
		}()
	}
	dwg.Wait()
	stopProgress()
	for _, d := range devs {
		d.Close()
	}
	rep.fill(r, devs, start, sendEnd, time.Now())
	var sends, dropped, acks int
	for _, u := range udps {
		var n int
		rep.Acked[u.identity], n = u.Acked()
		acks += n
		rep.Unacked += int64(u.Unacked())
		s, d := u.Sends()
		sends, dropped = sends+s, dropped+d
	}
	if len(udps) > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("udp: %d datagrams sent, resends included, %d of them skipped as lost (drop %g), %d ACKs received; window %d",
			sends, dropped, o.UDPDrop, acks, o.UDPWindow))
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return rep, err
	}
	return rep, nil
}

// sendWindow opens the run's send window now (rep.Start): runCtx ends at until, after the
// ramp-up and the duration, or once o.Stop is closed; end, deferred, releases it.
func (o *RunOptions) sendWindow(ctx context.Context, rep *RunReport) (start, until time.Time, runCtx context.Context, end func()) {
	start = time.Now()
	rep.Start = start
	until = start.Add(o.RampUp + o.Duration)
	runCtx, cancel := context.WithDeadline(ctx, until)
	stopWatch := stopOn(runCtx, o.Stop, cancel)
	return start, until, runCtx, func() { stopWatch(); cancel() }
}

// rampWait waits for the turn of starter i of n: the ramp-up spreads the starts evenly over
// o.RampUp from start. It reports false if ctx ended first.
func (o *RunOptions) rampWait(ctx context.Context, start time.Time, i, n int) bool {
	return o.RampUp <= 0 || sleepUntil(ctx, start.Add(time.Duration(float64(o.RampUp)*float64(i)/float64(n))))
}

// stopOn cancels ctx's cancel when stop is closed; the returned func ends the watch and waits
// for it. A nil stop watches nothing.
func stopOn(ctx context.Context, stop <-chan struct{}, cancel context.CancelFunc) (wait func()) {
	if stop == nil {
		return func() {}
	}
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		case <-quit:
		}
	}()
	return func() { close(quit); <-done }
}

func connectRetry(ctx context.Context, d *Device) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.Connect(cctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var re *ErrRelay
		if errors.As(err, &re) && re.Code != native.CodeUnavailable {
			return err
		}
		if !sleepUntil(ctx, time.Now().Add(100*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// simulate sends on an open-loop schedule: frame k is due at t0 + k/rate (or Poisson gaps). At
// each wake-up every frame already due goes out in one write (up to the window); a frame that
// waits for the window is still timed from when it was due.
func (r *recorder) simulate(ctx context.Context, d *Device, o *RunOptions, i int) {
	rnd := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	if o.Rate <= 0 { // as fast as the window allows: flush whatever fits in one write
		r.burst(ctx, d, o, rnd, nil)
		return
	}
	interval := float64(time.Second) / o.Rate
	next := time.Now().Add(time.Duration(rnd.Float64() * interval)) // spread phases over one interval
	var dues []time.Time
	gap := func() time.Duration {
		if o.Poisson {
			return time.Duration(rnd.ExpFloat64() * interval)
		}
		return time.Duration(interval)
	}
	for ctx.Err() == nil {
		if len(dues) == 0 {
			if !sleepUntil(ctx, next) {
				return
			}
		}
		now := time.Now()
		for !next.After(now) && len(dues) < o.Window {
			dues = append(dues, next)
			next = next.Add(gap())
		}
		n, err := r.sendBurst(ctx, d, o, rnd, len(dues), func(k int) time.Time { return dues[k] })
		if err != nil {
			return
		}
		dues = append(dues[:0], dues[n:]...)
	}
}

// runNDJSON runs the fleet over NDJSON connections (no acknowledgements, no window).
func runNDJSON(ctx context.Context, o RunOptions, rep *RunReport) (*RunReport, error) {
	if o.NDJSONConns <= 0 {
		o.NDJSONConns = 16
	}
	conns := min(o.NDJSONConns, o.Devices)
	r := newRecorder()
	if o.Sent != nil {
		r.sent = o.Sent
	}
	start := time.Now()
	rep.Start = start
	runCtx, cancel := context.WithDeadline(ctx, start.Add(o.RampUp+o.Duration))
	defer cancel()
	sent := make([][]int64, conns) // per connection, per identity
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := 0; c < conns; c++ {
		ids := make([]string, 0, o.Devices/conns+1)
		for i := c; i < o.Devices; i += conns {
			ids = append(ids, fmt.Sprintf("%s%06d", o.Prefix, i))
		}
		sent[c] = make([]int64, len(ids))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !o.rampWait(runCtx, start, c, conns) {
				return
			}
			cl, err := DialNDJSON(o.NDJSONAddr)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			errs <- r.simulateNDJSON(runCtx, cl, ids, sent[c], &o)
		}()
	}
	stop := r.progress(o.Progress, o.OnSecond, start, new(atomic.Int64))
	wg.Wait()
	stop()
	close(errs)
	end := time.Now()
	for err := range errs {
		if err != nil && runCtx.Err() == nil {
			rep.Notes = append(rep.Notes, err.Error())
			r.errors.Add(1)
		}
	}
	rep.fill(r, nil, start, end, end)
	rep.Lines = make(map[string]int64, o.Devices)
	for c := range sent {
		for k, n := range sent[c] {
			rep.Lines[fmt.Sprintf("%s%06d", o.Prefix, c+k*conns)] = n
		}
	}
	return rep, nil
}

// simulateNDJSON writes the lines of ids on one connection: at each wake-up every line due (open
// loop at Rate per identity), or batches of 64 lines back to back at Rate 0.
func (r *recorder) simulateNDJSON(ctx context.Context, cl *NDJSONClient, ids []string, sent []int64, o *RunOptions) error {
	rnd := rand.New(rand.NewPCG(uint64(len(ids)), uint64(time.Now().UnixNano())))
	var interval time.Duration // between two lines of this connection
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / (o.Rate * float64(len(ids))))
	}
	next := time.Now()
	var buf []byte
	k := 0
	for ctx.Err() == nil {
		n := 64
		if interval > 0 {
			if !sleepUntil(ctx, next) {
				return nil
			}
			n = max(1, min(int(time.Since(next)/interval)+1, 4096))
			next = next.Add(time.Duration(n) * interval)
		}
		buf = buf[:0]
		now := time.Now()
		for j := 0; j < n; j++ {
			id := k % len(ids)
			k++
			seq := uint64(sent[id] + 1)
			for rec := 0; rec < o.Records; rec++ {
				buf = append(buf, `{"serial":`...)
				buf = append(buf, '"')
				buf = append(buf, ids[id]...)
				buf = append(buf, `",`...)
				line := o.Payload.Append(nil, ids[id], seq, rec, now, rnd)
				buf = append(buf, line[1:]...) // the payload's object without its '{'
				buf = append(buf, '\n')
			}
			sent[id]++
		}
		if err := cl.SendRaw(buf); err != nil {
			return err
		}
		r.sent.Add(int64(n))
		r.records.Add(int64(n * o.Records))
	}
	return nil
}

// simulateUDP sends UDATA on the open-loop schedule with up to UDPWindow datagrams in flight,
// each resent until its own ACK arrives (OnAck records it), and once sending time is over resends
// until all are acknowledged or drain ends.
func (r *recorder) simulateUDP(ctx, drain context.Context, u *UDPDevice, o *RunOptions, i int) {
	rnd := rand.New(rand.NewPCG(uint64(i)+1<<32, uint64(time.Now().UnixNano())))
	var interval float64
	if o.Rate > 0 {
		interval = float64(time.Second) / o.Rate
	}
	next := time.Now().Add(time.Duration(rnd.Float64() * interval))
	recs := make([][]byte, o.Records)
	for ctx.Err() == nil {
		if interval > 0 && u.WaitUntil(ctx, next, o.UDPRetry) != nil {
			break
		}
		now := time.Now()
		due := next
		if interval == 0 {
			due = now
		}
		seq := u.NextSeq() // this goroutine alone sends: Post takes this seq
		var buf []byte
		for k := range recs {
			start := len(buf)
			buf = o.Payload.Append(buf, u.identity, seq, k, now, rnd)
			recs[k] = buf[start:len(buf):len(buf)]
		}
		if _, err := u.Post(ctx, o.UDPWindow, o.UDPRetry, due, recs...); err != nil {
			break // sending time is over while waiting for the window
		}
		r.sent.Add(1)
		r.records.Add(int64(o.Records))
		if interval > 0 {
			gap := interval
			if o.Poisson {
				gap = rnd.ExpFloat64() * interval
			}
			next = next.Add(time.Duration(gap))
		}
	}
	if err := u.Flush(drain, o.UDPRetry); err != nil {
		r.errors.Add(1)
	}
}

// burst keeps the device's window full, one write per refill, until ctx ends.
func (r *recorder) burst(ctx context.Context, d *Device, o *RunOptions, rnd *rand.Rand, due func(int) time.Time) {
	for ctx.Err() == nil {
		if _, err := r.sendBurst(ctx, d, o, rnd, o.Window, due); err != nil {
			return
		}
	}
}

// sendBurst sends up to max frames in one write, reconnecting after a failure; it returns an
// error only when the run is over or the device cannot reconnect.
func (r *recorder) sendBurst(ctx context.Context, d *Device, o *RunOptions, rnd *rand.Rand, max int, due func(int) time.Time) (int, error) {
	serial := d.cfg.Hello.Serial
	var buf []byte
	fill := func(seq uint64, recs [][]byte) [][]byte {
		now := time.Now()
		buf = buf[:0] // the frame encoder copies the records before the next fill
		for k := 0; k < o.Records; k++ {
			start := len(buf)
			buf = o.Payload.Append(buf, serial, seq, k, now, rnd)
			recs = append(recs, buf[start:len(buf):len(buf)])
		}
		return recs
	}
	for {
		n, err := d.SendBurstContext(ctx, max, due, fill)
		if err == nil {
			r.sent.Add(int64(n))
			r.records.Add(int64(n * o.Records))
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		r.errors.Add(1)
		if n > 0 { // written into a dead connection: kept, resent by Connect
			r.sent.Add(int64(n))
			r.records.Add(int64(n * o.Records))
		}
		if !errors.Is(err, ErrClosed) || d.Err() != nil {
			if cerr := connectRetry(ctx, d); cerr != nil {
				return 0, cerr
			}
			r.reconnects.Add(1)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// churn reconnects random devices at rate per second.
func (r *recorder) churn(ctx context.Context, devs []*Device, rate float64) {
	rnd := rand.New(rand.NewPCG(1, 2))
	every := time.Duration(float64(time.Second) / rate)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := devs[rnd.IntN(len(devs))]
		if d.Err() != nil {
			continue
		}
		d.Close()
		if connectRetry(ctx, d) == nil {
			r.reconnects.Add(1)
		}
	}
}

// recorder collects what the fleet did. Safe for concurrent use.
type recorder struct {
	records, errors, reconnects atomic.Int64
	sent, acked                 *atomic.Int64

	mu          sync.Mutex
	corrected   *hdrhistogram.Histogram // µs from due to ACK
	uncorrected *hdrhistogram.Histogram // µs from first write to ACK
	interval    *hdrhistogram.Histogram // corrected, this second
	timeline    []Second
}

func newRecorder() *recorder {
	return &recorder{
		sent:        new(atomic.Int64),
		acked:       new(atomic.Int64),
		corrected:   hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3),
		uncorrected: hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3),
		interval:    hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3),
	}
}

func (r *recorder) ack(_ uint64, due, sent, acked time.Time) {
	r.acked.Add(1)
	r.mu.Lock()
	r.recordLocked(due, sent, acked)
	r.mu.Unlock()
}

func (r *recorder) recordLocked(due, sent, acked time.Time) {
	c, u := acked.Sub(due).Microseconds(), acked.Sub(sent).Microseconds()
	_ = r.corrected.RecordValue(max(c, 1))
	_ = r.uncorrected.RecordValue(max(u, 1))
	_ = r.interval.RecordValue(max(c, 1))
}

// progress records one Second per second and, with w set, prints a status line.
func (r *recorder) progress(w io.Writer, each func(Second), start time.Time, connected *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastSent, lastAcked int64
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				sent, acked := r.sent.Load(), r.acked.Load()
				r.mu.Lock()
				p99 := float64(r.interval.ValueAtQuantile(99)) / 1000
				if r.interval.TotalCount() == 0 {
					p99 = math.NaN()
				}
				r.interval.Reset()
				s := Second{T: now.Sub(start).Seconds(), Sent: sent - lastSent, Acked: acked - lastAcked, P99ms: p99, Connected: connected.Load()}
				r.timeline = append(r.timeline, s)
				r.mu.Unlock()
				lastSent, lastAcked = sent, acked
				if each != nil {
					each(s)
				}
				if w != nil {
					fmt.Fprintf(w, "\r%6.0fs  connected %6d  sent/s %8d  acked/s %8d  p99 %8.2f ms ", s.T, s.Connected, s.Sent, s.Acked, s.P99ms)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		if w != nil {
			fmt.Fprintln(w)
		}
	}
}

// token is the token of the device with this identity ("" without RunOptions.Token).
func (o *RunOptions) token(identity string) string {
	if o.Token == nil {
		return ""
	}
	return o.Token(identity)
}
