package loadgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Faults are the failures a sink injects into the requests that carry batches. The zero value
// injects none. In JSON (POST /faults, GET /faults) durations are strings such as "50ms":
//
//	{"statusMix":{"503":0.1,"429":0.02},"delay":"5ms","jitter":"5ms","retryAfter":1,
//	 "outages":[{"from":"10s","duration":"5s"}]}
type Faults struct {
	// StatusMix answers a request with a status (300..599) with the given probability, drawn
	// independently for every request; the probabilities sum to at most 1. A refused batch is
	// not accounted.
	StatusMix map[int]float64
	// Delay is added before every answer, plus a uniform random part in [0, Jitter).
	Delay, Jitter time.Duration
	// RetryAfter, if positive, is sent as Retry-After (seconds) with every 429 and 503.
	RetryAfter int
	// Outages are windows, relative to when the faults took effect (the sink's start for
	// SinkOptions.Faults), during which every batch is answered 503.
	Outages []Outage
}

// Outage is a window during which a sink answers every batch with 503.
type Outage struct {
	From, Duration time.Duration
}

// Validate returns every problem of f, each with its field name, or nil.
func (f *Faults) Validate() error {
	var errs []error
	sum := 0.0
	for _, code := range slices.Sorted(maps.Keys(f.StatusMix)) {
		p := f.StatusMix[code]
		if code < 300 || code > 599 {
			errs = append(errs, fmt.Errorf("statusMix[%d]: status must be 300..599", code))
		}
		if !(p >= 0 && p <= 1) {
			errs = append(errs, fmt.Errorf("statusMix[%d]: probability %v outside [0, 1]", code, p))
		}
		sum += p
	}
	if sum > 1+1e-9 {
		errs = append(errs, fmt.Errorf("statusMix: probabilities sum to %v, above 1", sum))
	}
	if f.Delay < 0 {
		errs = append(errs, errors.New("delay: must not be negative"))
	}
	if f.Jitter < 0 {
		errs = append(errs, errors.New("jitter: must not be negative"))
	}
	if f.RetryAfter < 0 {
		errs = append(errs, errors.New("retryAfter: must not be negative"))
	}
	for i, o := range f.Outages {
		if o.From < 0 {
			errs = append(errs, fmt.Errorf("outages[%d].from: must not be negative", i))
		}
		if o.Duration <= 0 {
			errs = append(errs, fmt.Errorf("outages[%d].duration: must be positive", i))
		}
	}
	return errors.Join(errs...)
}

type faultsJSON struct {
	StatusMix  map[int]float64 `json:"statusMix,omitempty"`
	Delay      string          `json:"delay,omitempty"`
	Jitter     string          `json:"jitter,omitempty"`
	RetryAfter int             `json:"retryAfter,omitempty"`
	Outages    []outageJSON    `json:"outages,omitempty"`
}

type outageJSON struct {
	From     string `json:"from"`
	Duration string `json:"duration"`
}

// MarshalJSON writes f in its JSON form.
func (f Faults) MarshalJSON() ([]byte, error) {
	w := faultsJSON{StatusMix: f.StatusMix, RetryAfter: f.RetryAfter}
	if f.Delay != 0 {
		w.Delay = f.Delay.String()
	}
	if f.Jitter != 0 {
		w.Jitter = f.Jitter.String()
	}
	for _, o := range f.Outages {
		w.Outages = append(w.Outages, outageJSON{From: o.From.String(), Duration: o.Duration.String()})
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads f strictly: unknown keys are errors, every bad duration is reported.
// It does not validate values (see Validate).
func (f *Faults) UnmarshalJSON(data []byte) error {
	var w faultsJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	var errs []error
	dur := func(name, s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return d
	}
	g := Faults{StatusMix: w.StatusMix, RetryAfter: w.RetryAfter,
		Delay: dur("delay", w.Delay), Jitter: dur("jitter", w.Jitter)}
	for i, o := range w.Outages {
		g.Outages = append(g.Outages, Outage{
			From:     dur(fmt.Sprintf("outages[%d].from", i), o.From),
			Duration: dur(fmt.Sprintf("outages[%d].duration", i), o.Duration),
		})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	*f = g
	return nil
}

// faultState is a validated Faults in the form requests consult; it is never modified.
type faultState struct {
	cfg     Faults
	mix     []mixEntry // ascending status, cumulative probability
	outages []window
}

type mixEntry struct {
	status int
	cum    float64
}

type window struct{ from, to time.Time }

func newFaultState(f Faults, now time.Time) *faultState {
	fs := &faultState{cfg: f}
	fs.cfg.StatusMix = make(map[int]float64, len(f.StatusMix))
	cum := 0.0
	for _, code := range slices.Sorted(maps.Keys(f.StatusMix)) {
		p := f.StatusMix[code]
		fs.cfg.StatusMix[code] = p
		if p > 0 {
			cum += p
			fs.mix = append(fs.mix, mixEntry{code, cum})
		}
	}
	fs.cfg.Outages = slices.Clone(f.Outages)
	for _, o := range f.Outages {
		fs.outages = append(fs.outages, window{now.Add(o.From), now.Add(o.From + o.Duration)})
	}
	return fs
}

// faultRand is the random source of fault decisions: seeded, so a sequence of requests gets
// the same answers every run. Safe for concurrent use.
type faultRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newFaultRand(seed uint64) *faultRand {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &faultRand{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// decide is the injected answer for a request at now: a status (0: accept) and a delay. Every
// request draws the same random numbers whatever the outcome, so a seeded sequence of requests
// gets the same answers every run.
func (fs *faultState) decide(now time.Time, rnd *faultRand) (status int, delay time.Duration) {
	if len(fs.mix) == 0 && fs.cfg.Jitter == 0 && len(fs.outages) == 0 {
		return 0, fs.cfg.Delay
	}
	rnd.mu.Lock()
	defer rnd.mu.Unlock()
	for _, w := range fs.outages {
		if !now.Before(w.from) && now.Before(w.to) {
			status = 503
			break
		}
	}
	if len(fs.mix) > 0 {
		u := rnd.r.Float64()
		if status == 0 {
			for _, m := range fs.mix {
				if u < m.cum {
					status = m.status
					break
				}
			}
		}
	}
	delay = fs.cfg.Delay
	if j := fs.cfg.Jitter; j > 0 {
		delay += time.Duration(rnd.r.Int64N(int64(j)))
	}
	return status, delay
}
