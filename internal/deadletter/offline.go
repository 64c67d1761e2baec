package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The commands behind `fleetrelay dlq`: each asks the running relay on its admin listener, with
// key as its Bearer token, and, when none answers there, works on the data directory, which
// only opens while no relay holds it.

// List lists the dead letters of a route (at most limit of them): from the running relay's
// admin listener if it answers (page after page), else from the data directory.
func List(ctx context.Context, cfg *config.Config, key, route string, limit int) (*Page, error) {
	page, err := listAdmin(ctx, cfg, key, route, limit)
	if !errors.Is(err, errNoAdmin) {
		return page, err
	}
	err = offline(ctx, cfg, route, func(st *store.Store, id uint16) (err error) {
		page, err = list(st, route, id, 0, limit)
		return err
	})
	return page, err
}

// listAdmin pages through the running relay's listing until limit dead letters are in.
func listAdmin(ctx context.Context, cfg *config.Config, key, route string, limit int) (*Page, error) {
	var all *Page
	cursor := ""
	for {
		n := min(limit, MaxLimit)
		if all != nil {
			n = min(limit-len(all.DeadLetters), MaxLimit)
		}
		q := url.Values{"limit": {strconv.Itoa(n)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page Page
		if err := viaAdmin(ctx, cfg, key, "GET", deadLettersPath(route)+"?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		if all == nil {
			all = &page
		} else {
			all.DeadLetters = append(all.DeadLetters, page.DeadLetters...)
		}
		if page.NextCursor == "" || len(all.DeadLetters) >= limit {
			return all, nil
		}
		cursor = page.NextCursor
	}
}

// Replay moves a route's dead letters to its replay list: through the running relay, which
// delivers them at once, or in the data directory, and then the relay delivers them when it
// starts.
func Replay(ctx context.Context, cfg *config.Config, key, route string) (*Result, error) {
	res := &Result{Route: route}
	err := adminOrDir(ctx, cfg, key, route, "POST", "/replay", res, func(st *store.Store, id uint16) (err error) {
		res.Letters, res.Messages, err = st.Replay(id)
		return err
	})
	return res, err
}

// Purge deletes a route's dead letters older than age (all of them for 0): through the running
// relay, or in the data directory.
func Purge(ctx context.Context, cfg *config.Config, key, route string, age time.Duration) (*Result, error) {
	res := &Result{Route: route}
	err := adminOrDir(ctx, cfg, key, route, "DELETE", "?older_than="+age.String(), res, func(st *store.Store, id uint16) (err error) {
		res.Letters, res.Messages, err = purge(st, id, age)
		return err
	})
	return res, err
}

func deadLettersPath(route string) string {
	return "/api/v1/routes/" + url.PathEscape(route) + "/dead-letters"
}

// adminOrDir asks the running relay (method on the route's dead letters + rest, its answer
// decoded into out) or, when none answers on the admin listener, runs inDir on the data
// directory.
func adminOrDir(ctx context.Context, cfg *config.Config, key, route, method, rest string, out any, inDir func(st *store.Store, id uint16) error) error {
	err := viaAdmin(ctx, cfg, key, method, deadLettersPath(route)+rest, out)
	if !errors.Is(err, errNoAdmin) {
		return err
	}
	return offline(ctx, cfg, route, inDir)
}

// errNoAdmin means no relay answered on the admin listener.
var errNoAdmin = errors.New("relay not running")

func viaAdmin(ctx context.Context, cfg *config.Config, key, method, path string, out any) error {
	if cfg.Admin.Listen == "" {
		return errNoAdmin
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		return errNoAdmin
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+net.JoinHostPort(host, port)+path, nil)
	if err != nil {
		return err
	}
	// The admin server refuses Host names it does not know (DNS rebinding); this client dials
	// the configured address itself, so it names the host as loopback.
	req.Host = "localhost"
	if key == "" {
		key = access.LocalKey(cfg.DataDir, cfg.Admin.BootstrapKey)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return errNoAdmin
		}
		return fmt.Errorf("relay admin at %s: %w", cfg.Admin.Listen, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("relay admin at %s: %w", cfg.Admin.Listen, err)
	}
	if resp.StatusCode != http.StatusOK {
		var p struct{ Detail string }
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return fmt.Errorf("relay admin at %s: %s: %s", cfg.Admin.Listen, resp.Status, p.Detail)
		}
		return fmt.Errorf("relay admin at %s: %s", cfg.Admin.Listen, resp.Status)
	}
	return json.Unmarshal(body, out)
}

// offline opens the data directory (which fails while a relay holds it) and runs fn with the
// route's ID in it. The store is recovered, never started: the dead-letter commands write
// nothing through its journal.
func offline(ctx context.Context, cfg *config.Config, route string, fn func(st *store.Store, id uint16) error) error {
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return fmt.Errorf("no relay answered on the admin listener (%s), and the data directory: %w", cfg.Admin.Listen, err)
	}
	st, err := store.Open(ctx, store.Options{Dir: cfg.DataDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("no relay answered on the admin listener (%s), and %w", cfg.Admin.Listen, err)
	}
	id, ok := st.Routes()[route]
	if !ok {
		err = fmt.Errorf("route %q has no queue in %s", route, cfg.DataDir)
	} else {
		err = fn(st, id)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return err
}
