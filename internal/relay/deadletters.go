package relay

import (
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

	"github.com/valyala/fasthttp"

	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Dead letters are inspected and replayed through the admin listener while the relay runs
// (GET /dlq/:route, POST /dlq/:route/replay, DELETE /dlq/:route), and straight from the data directory when it does
// not (the store is one process's). `fleetrelay dlq` picks whichever works: see DeadLetterList
// and DeadLetterReplay.

// DeadLetterView is one dead letter as the admin API and `fleetrelay dlq list` show it.
type DeadLetterView struct {
	ID       uint64            `json:"id"`
	At       time.Time         `json:"at"`
	Status   int               `json:"status"`
	Error    string            `json:"error"`
	Attempts int               `json:"attempts"`
	Messages []DeadMessageView `json:"messages"`
}

// DeadMessageView is one message of a dead letter.
type DeadMessageView struct {
	Device     string          `json:"device"`
	Serial     string          `json:"serial,omitempty"`
	IMEI       string          `json:"imei,omitempty"`
	Seq        uint64          `json:"seq"`
	Index      int             `json:"index"`
	ReceivedAt time.Time       `json:"received_at"`
	Task       *uint64         `json:"task,omitempty"` // a command result's task (then seq is 0)
	Code       *uint8          `json:"code,omitempty"` // and its result code
	Data       json.RawMessage `json:"data"`
}

// DeadLetterPage is the answer of GET /dlq/:route: the first Limit dead letters, oldest first,
// and the totals.
type DeadLetterPage struct {
	Route       string           `json:"route"`
	Letters     int              `json:"letters"`  // dead letters in the list
	Messages    int              `json:"messages"` // messages in them
	DeadLetters []DeadLetterView `json:"dead_letters"`
}

// DeadLetterResult answers a replay (POST /dlq/:route/replay) or a purge (DELETE /dlq/:route):
// how many dead letters, and messages in them, it moved or deleted.
type DeadLetterResult struct {
	Route    string `json:"route"`
	Letters  int    `json:"letters"`
	Messages int    `json:"messages"`
}

func viewOf(d *store.DeadLetter) DeadLetterView {
	v := DeadLetterView{ID: d.ID, At: time.UnixMilli(d.At).UTC(), Status: d.Status, Error: d.Error, Attempts: d.Attempts,
		Messages: make([]DeadMessageView, len(d.Items))}
	for i, it := range d.Items {
		f := it.Frame
		v.Messages[i] = DeadMessageView{Device: f.Device, Serial: f.Serial, IMEI: f.IMEI, Seq: f.Seq, Index: it.Record,
			ReceivedAt: time.UnixMilli(f.ReceivedAt).UTC(), Data: json.RawMessage(f.Records[it.Record])}
		if f.Result {
			task, code := f.Task, f.Code
			v.Messages[i].Task, v.Messages[i].Code = &task, &code
		}
	}
	return v
}

// listDeadLetters pages the dead letters of route id.
func listDeadLetters(st *store.Store, name string, id uint16, limit int) (*DeadLetterPage, error) {
	page := &DeadLetterPage{Route: name, DeadLetters: []DeadLetterView{}}
	err := st.DeadLetters(id, func(d *store.DeadLetter) bool {
		page.Letters++
		page.Messages += len(d.Items)
		if len(page.DeadLetters) < limit {
			page.DeadLetters = append(page.DeadLetters, viewOf(d))
		}
		return true
	})
	return page, err
}

// defaultDeadLetterLimit is how many dead letters a listing shows unless told.
const defaultDeadLetterLimit = 100

// registerDeadLetters serves the dead-letter endpoints on the admin listener.
func (r *Relay) registerDeadLetters(s *api.Server) {
	ids := map[string]uint16{}
	for _, rt := range r.routes {
		ids[rt.Name] = rt.ID
	}
	reply := func(ctx *fasthttp.RequestCtx, status int, v any) {
		b, _ := json.Marshal(v)
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		ctx.SetBody(append(b, '\n'))
	}
	route := func(ctx *fasthttp.RequestCtx) (string, uint16, bool) {
		name := api.Param(ctx, "route")
		id, ok := ids[name]
		if !ok {
			reply(ctx, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no route %q", name)})
		}
		return name, id, ok
	}
	s.Handle("GET", "/dlq/:route", func(ctx *fasthttp.RequestCtx) {
		name, id, ok := route(ctx)
		if !ok {
			return
		}
		limit := defaultDeadLetterLimit
		if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				reply(ctx, http.StatusBadRequest, map[string]string{"error": "limit must be a number ≥ 0"})
				return
			}
			limit = n
		}
		page, err := listDeadLetters(r.store, name, id, limit)
		if err != nil {
			reply(ctx, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		reply(ctx, http.StatusOK, page)
	})
	s.Handle("DELETE", "/dlq/:route", func(ctx *fasthttp.RequestCtx) {
		name, id, ok := route(ctx)
		if !ok {
			return
		}
		var age time.Duration
		if v := ctx.QueryArgs().Peek("older_than"); len(v) > 0 {
			d, err := time.ParseDuration(string(v))
			if err != nil || d < 0 {
				reply(ctx, http.StatusBadRequest, map[string]string{"error": "older_than must be a duration such as 24h"})
				return
			}
			age = d
		}
		letters, msgs, err := purge(r.store, id, age)
		if err != nil {
			reply(ctx, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		r.log.Info("dead letters purged", "route", name, "letters", letters, "messages", msgs)
		reply(ctx, http.StatusOK, DeadLetterResult{Route: name, Letters: letters, Messages: msgs})
	})
	s.Handle("POST", "/dlq/:route/replay", func(ctx *fasthttp.RequestCtx) {
		name, _, ok := route(ctx)
		if !ok {
			return
		}
		letters, msgs, err := r.sys.Replay(name)
		if err != nil {
			reply(ctx, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		r.log.Info("dead letters replayed", "route", name, "letters", letters, "messages", msgs)
		reply(ctx, http.StatusOK, DeadLetterResult{Route: name, Letters: letters, Messages: msgs})
	})
}

// DeadLetterList lists the dead letters of a route (at most limit of them): from the running
// relay's admin listener if it answers, else from the data directory.
func DeadLetterList(cfg *config.Config, route string, limit int) (*DeadLetterPage, error) {
	page := &DeadLetterPage{}
	err := adminOrDir(cfg, route, "GET", "?limit="+strconv.Itoa(limit), page, func(st *store.Store, id uint16) (err error) {
		page, err = listDeadLetters(st, route, id, limit)
		return err
	})
	return page, err
}

// DeadLetterReplay moves a route's dead letters to its replay list: through the running relay,
// which delivers them at once, or in the data directory, and then the relay delivers them when
// it starts.
func DeadLetterReplay(cfg *config.Config, route string) (*DeadLetterResult, error) {
	res := &DeadLetterResult{Route: route}
	err := adminOrDir(cfg, route, "POST", "/replay", res, func(st *store.Store, id uint16) (err error) {
		res.Letters, res.Messages, err = st.Replay(id)
		return err
	})
	return res, err
}

// DeadLetterPurge deletes a route's dead letters older than age (all of them for 0): through
// the running relay, or in the data directory.
func DeadLetterPurge(cfg *config.Config, route string, age time.Duration) (*DeadLetterResult, error) {
	res := &DeadLetterResult{Route: route}
	err := adminOrDir(cfg, route, "DELETE", "?older_than="+age.String(), res, func(st *store.Store, id uint16) (err error) {
		res.Letters, res.Messages, err = purge(st, id, age)
		return err
	})
	return res, err
}

// adminOrDir asks the running relay (method on /dlq/<route><rest>, its answer decoded into
// out) or, when none answers on the admin listener, runs inDir on the data directory.
func adminOrDir(cfg *config.Config, route, method, rest string, out any, inDir func(st *store.Store, id uint16) error) error {
	err := viaAdmin(cfg, method, "/dlq/"+url.PathEscape(route)+rest, out)
	if !errors.Is(err, errNoAdmin) {
		return err
	}
	return offline(cfg, route, inDir)
}

func purge(st *store.Store, id uint16, age time.Duration) (letters, records int, err error) {
	var before time.Time
	if age > 0 {
		before = time.Now().Add(-age)
	}
	return st.Purge(id, before)
}

// errNoAdmin means no relay answered on the admin listener.
var errNoAdmin = errors.New("relay not running")

func viaAdmin(cfg *config.Config, method, path string, out any) error {
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
	req, err := http.NewRequest(method, "http://"+net.JoinHostPort(host, port)+path, nil)
	if err != nil {
		return err
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
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("relay admin at %s: %s", cfg.Admin.Listen, e.Error)
		}
		return fmt.Errorf("relay admin at %s: status %d", cfg.Admin.Listen, resp.StatusCode)
	}
	return json.Unmarshal(body, out)
}

// offline opens the data directory (which fails while a relay holds it) and runs fn with the
// route's ID in it.
func offline(cfg *config.Config, route string, fn func(st *store.Store, id uint16) error) error {
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return fmt.Errorf("no relay answered on the admin listener (%s), and the data directory: %w", cfg.Admin.Listen, err)
	}
	st, err := store.Open(store.Options{Dir: cfg.DataDir, Logger: slog.New(slog.DiscardHandler)})
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
