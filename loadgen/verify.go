package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// AccountRequest is an Expect in the form POST /account takes: every device's frames hold the
// same number of records.
//
//	{"acked":{"LG000000":1200,"LG000001":1187},"first":{"LG000001":5},"records":2,"perDevice":true}
type AccountRequest struct {
	Acked     map[string]uint64 `json:"acked"`           // per device, the highest seq acknowledged
	First     map[string]uint64 `json:"first,omitempty"` // per device, its first seq; absent: 1
	Records   int               `json:"records"`         // records per frame (0: 1)
	PerDevice bool              `json:"perDevice"`       // add a DeviceAccount per device
	Sample    int               `json:"sample"`          // lost messages listed (0: 10)
}

// Expect is the request as an Expect.
func (a AccountRequest) Expect() Expect {
	n := max(a.Records, 1)
	return Expect{Acked: a.Acked, First: a.First, Records: func(string, uint64) int { return n },
		Sample: a.Sample, PerDevice: a.PerDevice}
}

// serveAccount answers POST /account: the AccountReport for the AccountRequest in the body.
func (s *Sink) serveAccount(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		methodNotAllowed(ctx, fasthttp.MethodPost)
		return
	}
	var req AccountRequest
	dec := json.NewDecoder(bytes.NewReader(ctx.PostBody()))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && req.Records < 0 {
		err = errors.New("records must not be negative")
	}
	if err != nil {
		ctx.Error("account request: "+err.Error(), fasthttp.StatusBadRequest)
		return
	}
	s.serveJSON(ctx, fasthttp.MethodPost, func() any { return s.Account(req.Expect()) })
}

// SinkClient reads a loadgen sink that runs in another process, over its HTTP API. Safe for
// concurrent use.
type SinkClient struct {
	URL    string       // the sink's base URL, e.g. http://127.0.0.1:9000
	Client *http.Client // default: a client with a 5-minute timeout (accounting 10M messages takes seconds)
}

func (c *SinkClient) client() *http.Client {
	if c.Client != nil {
		return c.Client
	}
	return &http.Client{Timeout: 5 * time.Minute}
}

// Stats returns the sink's counters (GET /stats).
func (c *SinkClient) Stats(ctx context.Context) (SinkStats, error) {
	var st SinkStats
	err := c.do(ctx, http.MethodGet, "/stats", nil, &st)
	return st, err
}

// Account compares req with what the sink received (POST /account).
func (c *SinkClient) Account(ctx context.Context, req AccountRequest) (AccountReport, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return AccountReport{}, err
	}
	var rep AccountReport
	err = c.do(ctx, http.MethodPost, "/account", b, &rep)
	return rep, err
}

func (c *SinkClient) do(ctx context.Context, method, path string, body []byte, v any) error {
	url := strings.TrimSuffix(c.URL, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return fmt.Errorf("sink %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("sink %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sink %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("sink %s: %w", path, err)
	}
	return nil
}

// DrainOptions bound WaitAccount.
type DrainOptions struct {
	// Quiet ends the wait when the sink received nothing new for this long (default 30s).
	Quiet time.Duration
	// Timeout ends the wait after this long in any case (default 10m).
	Timeout time.Duration
}

// WaitAccount waits until a sink holds every one of want expected messages, then returns the
// account. unique is the sink's count of distinct messages, cheap to read and polled often;
// account, which walks every expected message, runs only once unique reaches want, and once
// more at the end. The wait also ends when the sink received nothing new for opts.Quiet, after
// opts.Timeout, or when ctx ends; the account then shows what is missing. Only an error of
// unique or account, or ctx's, is returned.
func WaitAccount(ctx context.Context, want int64, unique func(context.Context) (int64, error),
	account func(context.Context) (AccountReport, error), opts DrainOptions) (AccountReport, error) {
	if opts.Quiet <= 0 {
		opts.Quiet = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	deadline := time.Now().Add(opts.Timeout)
	last, lastChange := int64(-1), time.Now()
	accounted := int64(-1) // the unique count of the last account that found messages missing
	for {
		got, err := unique(ctx)
		if err != nil {
			return AccountReport{}, err
		}
		if got >= want && got != accounted { // extras can make up the count: account again only on news
			a, err := account(ctx)
			if err != nil || a.Lost == 0 {
				return a, err
			}
			accounted = got
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastChange) > opts.Quiet {
			return account(ctx)
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return AccountReport{}, ctx.Err()
		}
	}
}
