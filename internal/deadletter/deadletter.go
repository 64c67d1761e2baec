// Package deadletter owns the dead letters' surface for people: the admin API's endpoints that
// list, replay and purge a route's dead letters while the relay runs
// (GET /api/v1/routes/{name}/dead-letters, POST .../dead-letters/replay,
// DELETE .../dead-letters, behind the deadLetters rights), the JSON they answer with, and the
// commands behind `fleetrelay dlq`, which ask the running relay through those endpoints with a
// key or, when none answers, work on the data directory themselves (the store is one
// process's).
//
// The dead letters themselves are the store's (store.DeadLetter); the handlers reach them
// through the small Lists, Replayer and Routes interfaces, which the store, the actor system
// and the relay implement.
package deadletter

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
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

// Page is the answer of GET /api/v1/routes/{name}/dead-letters: a page of dead letters, oldest
// first (at most limit of them after the cursor), the cursor of the next page when more follow,
// and the totals of the whole list.
type Page struct {
	Route       string   `json:"route"`
	Letters     int      `json:"letters"`  // dead letters in the list
	Messages    int      `json:"messages"` // messages in them
	DeadLetters []Letter `json:"data"`
	NextCursor  string   `json:"next_cursor,omitempty"`
}

// Result answers a replay (POST .../dead-letters/replay) or a purge (DELETE .../dead-letters):
// how many dead letters, and messages in them, it moved or deleted.
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

// Routes finds a route by name for the endpoints: its ID in the store and the account it
// belongs to ("" for none). The relay implements it; it is called from the admin server's
// goroutines.
type Routes interface {
	DeadLetterRoute(name string) (id uint16, account string, ok bool)
}

// RoutesFunc adapts a function to Routes.
type RoutesFunc func(name string) (id uint16, account string, ok bool)

// DeadLetterRoute implements Routes.
func (f RoutesFunc) DeadLetterRoute(name string) (uint16, string, bool) { return f(name) }

// DefaultLimit is how many dead letters a listing shows unless told; MaxLimit the most a page
// holds.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

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

// list pages the dead letters of route id, named name: at most limit of them with an ID after
// after; the totals count them all.
func list(l Lists, name string, id uint16, after uint64, limit int) (*Page, error) {
	page := &Page{Route: name, DeadLetters: []Letter{}}
	more := false
	err := l.DeadLetters(id, func(d *store.DeadLetter) bool {
		page.Letters++
		page.Messages += len(d.Items)
		if d.ID > after {
			if len(page.DeadLetters) < limit {
				page.DeadLetters = append(page.DeadLetters, letterOf(d))
			} else {
				more = true
			}
		}
		return true
	})
	if more && len(page.DeadLetters) > 0 {
		page.NextCursor = api.EncodeCursor(strconv.FormatUint(page.DeadLetters[len(page.DeadLetters)-1].ID, 10))
	}
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

// Register serves the dead-letter endpoints on s for the routes that routes finds:
//
//	GET    /api/v1/routes/{name}/dead-letters         (deadLetters:read; ?limit=0..1000, ?cursor=)
//	POST   /api/v1/routes/{name}/dead-letters/replay  (deadLetters:update)
//	DELETE /api/v1/routes/{name}/dead-letters         (deadLetters:delete; ?older_than=duration)
//
// They answer a Page or a Result; errors are problems: 404 for an unknown route (or one of
// another account than the key's), 400 for a bad query, 500 when the store fails. Replays and
// purges are audited.
func Register(s *api.Server, lists Lists, rp Replayer, routes Routes, log *slog.Logger) {
	log = log.With("component", "deadletter")
	route := func(w http.ResponseWriter, r *http.Request) (string, uint16, bool) {
		name := r.PathValue("name")
		id, account, ok := routes.DeadLetterRoute(name)
		if !ok || !access.From(r.Context()).Sees(account) {
			api.WriteProblem(w, api.Problem{Status: http.StatusNotFound, Detail: "no route " + strconv.Quote(name)})
			return name, 0, false
		}
		return name, id, true
	}
	failed := func(w http.ResponseWriter, err error) {
		api.WriteProblem(w, api.Problem{Status: http.StatusInternalServerError, Detail: err.Error()})
	}
	s.HandleAPI("GET /api/v1/routes/{name}/dead-letters", "deadLetters:read", func(w http.ResponseWriter, r *http.Request) {
		name, id, ok := route(w, r)
		if !ok {
			return
		}
		limit := DefaultLimit
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > MaxLimit {
				api.WriteProblem(w, api.Problem{Status: http.StatusBadRequest, Detail: "limit must be a number from 0 to 1000",
					Errors: []api.FieldError{{Pointer: "/limit", Detail: "want 0..1000"}}})
				return
			}
			limit = n
		}
		var after uint64
		if c, ok := api.Cursor(w, r); !ok {
			return
		} else if c != "" {
			n, err := strconv.ParseUint(c, 10, 64)
			if err != nil {
				api.WriteProblem(w, api.Problem{Status: http.StatusBadRequest, Detail: "cursor is not one this API gave"})
				return
			}
			after = n
		}
		page, err := list(lists, name, id, after, limit)
		if err != nil {
			failed(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, page)
	})
	s.HandleAPI("DELETE /api/v1/routes/{name}/dead-letters", "deadLetters:delete", func(w http.ResponseWriter, r *http.Request) {
		name, id, ok := route(w, r)
		if !ok {
			return
		}
		var age time.Duration
		if v := r.URL.Query().Get("older_than"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				api.WriteProblem(w, api.Problem{Status: http.StatusBadRequest, Detail: "older_than must be a duration such as 24h",
					Errors: []api.FieldError{{Pointer: "/older_than", Detail: "want a duration ≥ 0"}}})
				return
			}
			age = d
		}
		letters, msgs, err := purge(lists, id, age)
		if err != nil {
			failed(w, err)
			return
		}
		s.Audit(r, "delete", "deadLetters", name)
		log.Info("dead letters purged", "route", name, "letters", letters, "messages", msgs)
		api.WriteJSON(w, http.StatusOK, Result{Route: name, Letters: letters, Messages: msgs})
	})
	s.HandleAPI("POST /api/v1/routes/{name}/dead-letters/replay", "deadLetters:update", func(w http.ResponseWriter, r *http.Request) {
		name, _, ok := route(w, r)
		if !ok {
			return
		}
		letters, msgs, err := rp.Replay(name)
		if err != nil {
			failed(w, err)
			return
		}
		s.Audit(r, "replay", "deadLetters", name)
		log.Info("dead letters replayed", "route", name, "letters", letters, "messages", msgs)
		api.WriteJSON(w, http.StatusOK, Result{Route: name, Letters: letters, Messages: msgs})
	})
}
