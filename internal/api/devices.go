package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// HandleDevices adds the device resource: GET /api/v1/devices (filters account, tag, group),
// PUT/GET/PATCH/DELETE /api/v1/devices/{id}, applied live by c. IDs are case-insensitive and
// shown upper case; a GET shows the device's live state. Devices of the config file are
// read-only (409). Must be called before Start.
func (s *Server) HandleDevices(c *control.Control) {
	h := deviceHandlers{s: s, c: c}
	s.HandleAPI("GET /api/v1/devices", "devices:read", h.list)
	s.HandleAPI("GET /api/v1/devices/{id}", "devices:read", h.get)
	s.HandleAPI("PUT /api/v1/devices/{id}", "devices:update", h.put)
	s.HandleAPI("PATCH /api/v1/devices/{id}", "devices:update", h.patch)
	s.HandleAPI("DELETE /api/v1/devices/{id}", "devices:delete", h.delete)
}

type deviceHandlers struct {
	s *Server
	c *control.Control
}

func (h deviceHandlers) list(w http.ResponseWriter, r *http.Request) {
	o, ok := listOptions(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	if tag, group := q.Get("tag"), q.Get("group"); (tag != "" || group != "") && o.Match == nil {
		o.Match = func(v any) bool {
			var d *registry.Device
			switch x := v.(type) {
			case *registry.Device:
				d = x
			case registry.Device:
				d = &x
			default:
				return false
			}
			return (tag == "" || slices.Contains(d.Tags, tag)) && (group == "" || slices.Contains(d.Groups, group))
		}
	}
	page, more := h.c.Devices(o)
	var next string
	if more && len(page) > 0 {
		next = EncodeCursor(page[len(page)-1].ID)
	}
	WriteJSON(w, http.StatusOK, List[control.DeviceView]{Data: page, NextCursor: next})
}

func (h deviceHandlers) get(w http.ResponseWriter, r *http.Request) {
	p := access.From(r.Context())
	v, ok := h.c.Device(r.PathValue("id"))
	if !ok || !p.Sees(v.Account) {
		writeNotFound(w, "device", r.PathValue("id"))
		return
	}
	writeResource(w, http.StatusOK, v.Meta.Revision, v)
}

func (h deviceHandlers) put(w http.ResponseWriter, r *http.Request) {
	h.write(w, r, false)
}

func (h deviceHandlers) patch(w http.ResponseWriter, r *http.Request) {
	h.write(w, r, true)
}

func (h deviceHandlers) write(w http.ResponseWriter, r *http.Request, patch bool) {
	p := access.From(r.Context())
	id := r.PathValue("id")
	body, rev, ok := writeInput(w, r)
	if !ok {
		return
	}
	if !patch && !p.Can("devices", "create") {
		if _, exists := h.c.Device(id); !exists {
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "creating a device needs the right devices:create"})
			return
		}
	}
	v, created, err := h.c.WriteDevice(r.Context(), control.DeviceWrite{ID: id, Body: body, Patch: patch, Account: p.Account, Revision: rev})
	if err != nil {
		writeError(w, h.s, err, "device", id)
		return
	}
	h.s.answerWrite(w, r, created, "devices", v.ID, v.Meta.Revision, v)
}

func (h deviceHandlers) delete(w http.ResponseWriter, r *http.Request) {
	p := access.From(r.Context())
	id := r.PathValue("id")
	if err := h.c.DeleteDevice(r.Context(), id, p.Account); err != nil {
		writeError(w, h.s, err, "device", id)
		return
	}
	h.s.Audit(r, "delete", "devices", strings.ToUpper(id))
	w.WriteHeader(http.StatusNoContent)
}
