// Package deadletter owns the dead letters' surface for people: the admin API's endpoints that
// list, replay and purge a route's dead letters while the relay runs (GET /dlq/:route,
// POST /dlq/:route/replay, DELETE /dlq/:route), the JSON they answer with, and the offline
// commands behind `fleetrelay dlq`, which ask the running relay through those endpoints or, when
// none answers, work on the data directory themselves (the store is one process's).
//
// The dead letters themselves are the store's (store.DeadLetter); the handlers reach them
// through the small Lists and Replayer interfaces, which the store and the actor system
// implement.
package deadletter

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Letter is one dead letter as the admin API and `fleetrelay dlq list` show it.
type Letter struct {
	ID       uint64    `json:"id"`
	At       time.Time `json:"at"`
	Status   int       `json:"status"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	Messages []Message `json:"messages"`
}

// Message is one message of a dead letter.
type Message struct {
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

// Page is the answer of GET /dlq/:route: the first Limit dead letters, oldest first, and the
// totals.
type Page struct {
	Route       string   `json:"route"`
	Letters     int      `json:"letters"`  // dead letters in the list
	Messages    int      `json:"messages"` // messages in them
	DeadLetters []Letter `json:"dead_letters"`
}

// Result answers a replay (POST /dlq/:route/replay) or a purge (DELETE /dlq/:route): how many
// dead letters, and messages in them, it moved or deleted.
type Result struct {
	Route    string `json:"route"`
	Letters  int    `json:"letters"`
	Messages int    `json:"messages"`
}

// Lists is what the endpoints need of the dead-letter lists, by route ID: *store.Store
// implements it. Both methods are called from the admin server's goroutines.
type Lists interface {
	// DeadLetters calls fn for each dead letter of route, oldest first, until fn returns false.
	DeadLetters(route uint16, fn func(*store.DeadLetter) bool) error
	// Purge deletes the dead letters of route written before the given time (all of them for
	// the zero time).
	Purge(route uint16, before time.Time) (letters, records int, err error)
}

// Replayer moves the dead letters of a route, by name, back to it and has it deliver them
// again: the relay's actor system (actors.System) implements it.
type Replayer interface {
	Replay(route string) (letters, records int, err error)
}

// DefaultLimit is how many dead letters a listing shows unless told.
const DefaultLimit = 100

func letterOf(d *store.DeadLetter) Letter {
	v := Letter{ID: d.ID, At: time.UnixMilli(d.At).UTC(), Status: d.Status, Error: d.Error, Attempts: d.Attempts,
		Messages: make([]Message, len(d.Items))}
	for i, it := range d.Items {
		f := it.Frame
		v.Messages[i] = Message{Device: f.Device, Serial: f.Serial, IMEI: f.IMEI, Seq: f.Seq, Index: it.Record,
			ReceivedAt: time.UnixMilli(f.ReceivedAt).UTC(), Data: json.RawMessage(f.Records[it.Record])}
		if f.Result {
			task, code := f.Task, f.Code
			v.Messages[i].Task, v.Messages[i].Code = &task, &code
		}
	}
	return v
}

// list pages the dead letters of route id, named name.
func list(l Lists, name string, id uint16, limit int) (*Page, error) {
	page := &Page{Route: name, DeadLetters: []Letter{}}
	err := l.DeadLetters(id, func(d *store.DeadLetter) bool {
		page.Letters++
		page.Messages += len(d.Items)
		if len(page.DeadLetters) < limit {
			page.DeadLetters = append(page.DeadLetters, letterOf(d))
		}
		return true
	})
	return page, err
}

// purge deletes the dead letters of route id older than age (all of them for 0).
func purge(l Lists, id uint16, age time.Duration) (letters, records int, err error) {
	var before time.Time
	if age > 0 {
		before = time.Now().Add(-age)
	}
	return l.Purge(id, before)
}

// Register serves the dead-letter endpoints on s for the routes in ids (route name → the
// store's route ID): GET /dlq/:route (?limit=n), DELETE /dlq/:route (?older_than=duration) and
// POST /dlq/:route/replay. Every answer is JSON: a Page, a Result, or {"error": "..."} with
// status 404 for an unknown route, 400 for a bad query and 500 when the store fails.
func Register(s *api.Server, lists Lists, rp Replayer, ids map[string]uint16, log *slog.Logger) {
	log = log.With("component", "deadletter")
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
			reply(ctx, http.StatusNotFound, map[string]string{"error": "no route " + strconv.Quote(name)})
		}
		return name, id, ok
	}
	s.Handle("GET", "/dlq/:route", func(ctx *fasthttp.RequestCtx) {
		name, id, ok := route(ctx)
		if !ok {
			return
		}
		limit := DefaultLimit
		if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				reply(ctx, http.StatusBadRequest, map[string]string{"error": "limit must be a number ≥ 0"})
				return
			}
			limit = n
		}
		page, err := list(lists, name, id, limit)
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
		letters, msgs, err := purge(lists, id, age)
		if err != nil {
			reply(ctx, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		log.Info("dead letters purged", "route", name, "letters", letters, "messages", msgs)
		reply(ctx, http.StatusOK, Result{Route: name, Letters: letters, Messages: msgs})
	})
	s.Handle("POST", "/dlq/:route/replay", func(ctx *fasthttp.RequestCtx) {
		name, _, ok := route(ctx)
		if !ok {
			return
		}
		letters, msgs, err := rp.Replay(name)
		if err != nil {
			reply(ctx, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		log.Info("dead letters replayed", "route", name, "letters", letters, "messages", msgs)
		reply(ctx, http.StatusOK, Result{Route: name, Letters: letters, Messages: msgs})
	})
}
