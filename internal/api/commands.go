package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
)

// Tasks is what the commands endpoints need of the relay's tasks (tasks.Manager).
type Tasks interface {
	Create(ctx context.Context, device string, payload []byte, ttl time.Duration) (tasks.Task, error)
	Get(device string, id uint64) (tasks.Task, bool)
	List(device string, after uint64, limit int) ([]tasks.Task, bool)
}

// HandleCommands adds the commands of a device: POST /api/v1/devices/{id}/commands
// (commands:create) queues a task, GET .../commands and GET .../commands/{task} (commands:read)
// show them. The device must be one of the registry's (or the config file's fleet) that the
// key sees: an account's key commands its account's devices only. Must be called before Start.
func (s *Server) HandleCommands(c *control.Control, t Tasks) {
	h := commandHandlers{s: s, c: c, t: t}
	s.HandleAPI("POST /api/v1/devices/{id}/commands", "commands:create", h.create)
	s.HandleAPI("GET /api/v1/devices/{id}/commands", "commands:read", h.list)
	s.HandleAPI("GET /api/v1/devices/{id}/commands/{task}", "commands:read", h.get)
}

type commandHandlers struct {
	s *Server
	c *control.Control
	t Tasks
}

// commandInput is the body of POST .../commands.
type commandInput struct {
	Payload json.RawMessage `json:"payload"`
	TTL     string          `json:"ttl"`
}

// device finds the path's device as the caller may see it; false: 404 answered.
func (h commandHandlers) device(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	v, ok := h.c.Device(id)
	if !ok || !access.From(r.Context()).Sees(v.Account) {
		writeNotFound(w, "device", id)
		return "", false
	}
	return v.ID, true
}

func (h commandHandlers) create(w http.ResponseWriter, r *http.Request) {
	dev, ok := h.device(w, r)
	if !ok {
		return
	}
	var in commandInput
	if !DecodeJSON(w, r, &in) {
		return
	}
	var errs []FieldError
	if len(in.Payload) == 0 || in.Payload[0] != '{' {
		errs = append(errs, FieldError{Pointer: "/payload", Detail: "want a JSON object"})
	}
	var ttl time.Duration
	if in.TTL != "" {
		d, err := time.ParseDuration(in.TTL)
		if err != nil || d <= 0 {
			errs = append(errs, FieldError{Pointer: "/ttl", Detail: "want a positive duration such as 30s, 15m or 24h"})
		}
		ttl = d
	}
	if len(errs) > 0 {
		invalid(w, errs...)
		return
	}
	t, err := h.t.Create(r.Context(), dev, in.Payload, ttl)
	switch {
	case errors.Is(err, tasks.ErrInvalid):
		ptr := "/ttl"
		if strings.HasPrefix(err.Error(), "payload") {
			ptr = "/payload"
		}
		invalid(w, FieldError{Pointer: ptr, Detail: err.Error()})
		return
	case err != nil:
		h.s.log.Error("create task", "device", dev, "err", err)
		WriteProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "the task could not be stored"})
		return
	}
	id := strconv.FormatUint(t.ID, 10)
	w.Header().Set("Location", "/api/v1/devices/"+dev+"/commands/"+id)
	h.s.Audit(r, "create", "commands", dev+"/"+id)
	WriteJSON(w, http.StatusCreated, t)
}

func (h commandHandlers) list(w http.ResponseWriter, r *http.Request) {
	limit, ok := Limit(w, r)
	if !ok {
		return
	}
	c, ok := Cursor(w, r)
	if !ok {
		return
	}
	var after uint64
	if c != "" {
		var err error
		if after, err = strconv.ParseUint(c, 10, 64); err != nil {
			WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "cursor is not one this API gave"})
			return
		}
	}
	dev, ok := h.device(w, r)
	if !ok {
		return
	}
	page, more := h.t.List(dev, after, limit)
	var next string
	if more && len(page) > 0 {
		next = EncodeCursor(strconv.FormatUint(page[len(page)-1].ID, 10))
	}
	WriteJSON(w, http.StatusOK, List[tasks.Task]{Data: page, NextCursor: next})
}

func (h commandHandlers) get(w http.ResponseWriter, r *http.Request) {
	dev, ok := h.device(w, r)
	if !ok {
		return
	}
	ts := r.PathValue("task")
	id, err := strconv.ParseUint(ts, 10, 64)
	t, found := h.t.Get(dev, id)
	if err != nil || !found {
		WriteProblem(w, Problem{Status: http.StatusNotFound, Detail: fmt.Sprintf("no task %q of device %s", ts, strings.ToUpper(dev))})
		return
	}
	WriteJSON(w, http.StatusOK, t)
}
