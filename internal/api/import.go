package api

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/deviceimport"
)

// Limits of one import request: the body (100,000 devices of NDJSON with every field fit in
// well under it) and the time to read it and write its devices (the server's own timeouts are
// for small requests).
const (
	importMaxBody  = 64 << 20
	importDeadline = 10 * time.Minute
)

// ImportResult is the answer of POST /api/v1/devices:import: how many rows were written and
// every row that was not, in input order.
type ImportResult struct {
	Upserted int                 `json:"upserted"`
	Rejected []control.Rejection `json:"rejected"`
}

// HandleImport adds POST /api/v1/devices:import (rights devices:create and devices:update): a
// body of NDJSON (application/x-ndjson), CSV (text/csv) or, with ?format=azure, an Azure IoT
// Hub device-identity export (JSON lines, application/x-ndjson or application/json; the key
// goes to the field ?key_field= names, custom1 by default), read as a stream and written
// through c in chunks of one store transaction. Must be called before Start.
func (s *Server) HandleImport(c *control.Control) {
	const pattern = "POST /api/v1/devices:import"
	if s.bodyLimits == nil {
		s.bodyLimits = map[string]int64{}
	}
	s.bodyLimits[pattern] = importMaxBody
	s.handleAPI(pattern, "devices:create", []string{"application/x-ndjson", "text/csv", "application/json"},
		func(w http.ResponseWriter, r *http.Request) { importDevices(s, c, w, r) })
}

func importDevices(s *Server, c *control.Control, w http.ResponseWriter, r *http.Request) {
	p := access.From(r.Context())
	if !p.Can("devices", "update") {
		WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "an import needs the rights devices:create and devices:update"})
		return
	}
	if r.ContentLength > importMaxBody {
		WriteProblem(w, Problem{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("the body is larger than %d bytes", importMaxBody)})
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")) // handleAPI checked it
	q := r.URL.Query()
	o := deviceimport.Options{Format: deviceimport.Format(q.Get("format")), KeyField: q.Get("key_field")}
	switch {
	case o.Format == "" && mt == "text/csv":
		o.Format = deviceimport.CSV
	case o.Format == "":
		o.Format = deviceimport.NDJSON
	}
	if err := o.Check(); err != nil {
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: err.Error()})
		return
	}
	if (o.Format == deviceimport.CSV) != (mt == "text/csv") {
		WriteProblem(w, Problem{Status: http.StatusUnsupportedMediaType, Detail: "format " + string(o.Format) + " does not come as " + mt})
		return
	}
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(importDeadline)
	_ = rc.SetReadDeadline(deadline) // the server's own are for small requests
	_ = rc.SetWriteDeadline(deadline)

	start := time.Now()
	im := c.NewImport(p.Account)
	err := deviceimport.Read(r.Body, o, func(row deviceimport.Row) error {
		if row.Err != nil {
			im.Reject(row.Line, row.Device.ID, row.Err)
			return nil
		}
		return im.AddNaming(r.Context(), row.Line, row.Device, row.Token, row.Named)
	})
	if err == nil {
		var upserted int
		var rejected []control.Rejection
		upserted, rejected, err = im.Finish(r.Context())
		if err == nil {
			s.Audit(r, "import", "devices", strconv.Itoa(upserted)+" devices")
			s.log.Info("devices imported", "upserted", upserted, "rejected", len(rejected), "format", o.Format,
				"took", time.Since(start).Round(time.Millisecond))
			if rejected == nil {
				rejected = []control.Rejection{}
			}
			WriteJSON(w, http.StatusOK, ImportResult{Upserted: upserted, Rejected: rejected})
			return
		}
	}
	// The rows written before the problem stay written, each whole, and are notified.
	im.Notify()
	done := im.Upserted()
	if done > 0 {
		s.Audit(r, "import", "devices", strconv.Itoa(done)+" devices")
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		WriteProblem(w, Problem{Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the body is larger than %d bytes (%d devices before that point were written)", tooLarge.Limit, done)})
	case errors.Is(err, deviceimport.ErrInput):
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: err.Error()})
	default:
		s.log.Error("import", "upserted", done, "err", err)
		WriteProblem(w, Problem{Status: http.StatusInternalServerError,
			Detail: fmt.Sprintf("the import stopped: %v (%d devices before that point were written)", err, done)})
	}
}
