package route

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
)

// Deps is what Compile builds a route with.
type Deps struct {
	// Delivery is the config's delivery section: what a route inherits (timeout, retry) and
	// allow_private_networks.
	Delivery config.Delivery
	// Clients gives the route its delivery client and OAuth2 token client by its TLS settings.
	// nil: check only — the TLS files are read but no client is made, and the compiled route
	// has no pipeline (Route.Deliver is nil).
	Clients *Clients
	// Metrics records the route's requests; nil records nothing.
	Metrics *pipeline.Metrics
	// Logger receives the route's failed attempts (rate-limited); nil discards them.
	Logger *slog.Logger
	// FailureLogInterval is log.failure_interval (0: the pipeline's default).
	FailureLogInterval time.Duration
}

// Compiled is a compiled route.
type Compiled struct {
	// Route is the route as the actors run it. Its ID is 0: the store names routes, and the
	// caller sets it.
	Route *actors.Route
	// Warnings are what the route may run with but should not ("routes[1].tls: ..."): an
	// unverified certificate, a client certificate close to its expiry.
	Warnings []string
}

// Compile turns rc, found at path in the config ("routes[2]"), into a compiled route, or returns
// a *config.ValidationError listing every problem of it, each "path.field: message": what the file
// shows (config.Route.Check), the TLS files, the secrets that cannot be read, and the values the
// auth schemes refuse (routes[2].auth.oauth2.token_url: must be an https URL …). A problem is
// reported once: an auth or sign section the file check faulted is not built. No message shows a
// secret's value. rc is read, not kept; it holds the defaults config.Config.Resolve fills, except
// that its timeout and retry may be left to inherit from deps.Delivery.
func Compile(rc config.Route, path string, deps Deps) (*Compiled, error) {
	problems := rc.Check(path, &deps.Delivery)
	out := &Compiled{}

	faulted := slices.Clone(problems)
	skip := func(section string) bool { // a section the file check faulted is not built again
		return slices.ContainsFunc(faulted, func(p string) bool {
			return strings.HasPrefix(p, path+"."+section+".") || strings.HasPrefix(p, path+"."+section+":") ||
				strings.HasPrefix(section, "auth.") && strings.HasPrefix(p, path+".auth:")
		})
	}
	var (
		client *deliver.Client
		tokens = http.DefaultClient
		warn   string
		err    error
	)
	switch {
	case skip("tls"):
	case deps.Clients != nil:
		client, tokens, warn, err = deps.Clients.forTLS(rc.TLS)
	default:
		warn, err = checkTLS(rc.TLS)
	}
	if err != nil {
		for _, e := range flatten(err) { // each named "tls.field: ..." or not named
			if msg := e.Error(); strings.HasPrefix(msg, "tls.") {
				problems = append(problems, path+"."+msg)
			} else {
				problems = append(problems, path+".tls: "+msg)
			}
		}
	}
	if warn != "" {
		out.Warnings = append(out.Warnings, path+".tls: "+warn)
	}
	chain, err := routeAuth(&rc, path, tokens, skip)
	if err != nil {
		for _, e := range flatten(err) {
			problems = append(problems, e.Error())
		}
	}
	if len(problems) > 0 {
		return nil, &config.ValidationError{Problems: problems}
	}

	// What follows was checked by rc.Check; an error here is a bug between the two.
	bad := func(field string, err error) {
		problems = append(problems, fmt.Sprintf("%s.%s: %v", path, field, err))
	}
	rt := &actors.Route{
		Name:        rc.Name,
		MaxMessages: rc.Batch.MaxMessages,
		MaxBytes:    int(rc.Batch.MaxBytes),
		Linger:      time.Duration(rc.Batch.Linger),
		Concurrency: rc.Concurrency,
		Filter:      actors.NewFilter(rc.Filter.IMEIs, rc.Filter.Tags, rc.Filter.Groups),
		Account:     rc.Account,
		Paused:      !rc.IsEnabled(),

		Notifications: rc.Notifications,
	}
	if rt.URL, err = fields.CompileURL(rc.URL); err != nil {
		bad("url", err)
	}
	for _, k := range slices.Sorted(maps.Keys(rc.Headers)) {
		t, err := fields.Compile(rc.Headers[k])
		if err != nil {
			bad("headers."+k, err)
			continue
		}
		rt.Headers = append(rt.Headers, actors.Header{Name: k, Value: t})
	}
	retry := deps.Delivery.Retry
	if rc.Retry != nil {
		retry = *rc.Retry
	}
	rt.Retention = time.Duration(retry.Retention)
	timeout := rc.Timeout
	if timeout == 0 {
		timeout = deps.Delivery.Timeout
	}
	po := pipeline.Options{Route: rc.Name, Method: rc.Method, URL: rc.URL, Timeout: time.Duration(timeout), Concurrency: rc.Concurrency,
		Auth: chain, Client: client, Metrics: deps.Metrics, Logger: deps.Logger, FailureLogInterval: deps.FailureLogInterval,
		Policy: &deliver.Policy{InitialBackoff: time.Duration(retry.InitialBackoff), MaxBackoff: time.Duration(retry.MaxBackoff),
			MaxAttempts: retry.MaxAttempts}}
	if codes := rc.SuccessCodes; len(codes) > 0 {
		ok := make(map[int]bool, len(codes))
		for _, c := range codes {
			ok[c] = true
		}
		po.Policy.Success = func(status int) bool { return ok[status] }
	}
	if po.Compress, err = deliver.NewCompressor(rc.Compression); err != nil {
		bad("compression", err)
	}
	if rt.Format, err = rc.CompileFormat(); err != nil {
		bad("format", err)
	}
	po.Format = rt.Format
	if rc.Body == config.BodyObject {
		po.Object, rt.MaxMessages = true, 1
	}
	if len(problems) > 0 {
		return nil, &config.ValidationError{Problems: problems}
	}
	if deps.Clients != nil {
		rt.Deliver = pipeline.New(po)
	}
	out.Route = rt
	return out, nil
}

// checkTLS builds the TLS settings t ask for, reading their files, and discards them.
func checkTLS(t config.TLS) (warning string, err error) {
	cfg, err := tlsConfig(t)
	if err != nil {
		return "", err
	}
	warning, _ = deliver.TLSWarning(cfg)
	return warning, nil
}
