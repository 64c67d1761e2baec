package deviceimport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/config"
)

// Result is the relay's answer to an import: how many rows it wrote and every row it did not.
type Result struct {
	Upserted int         `json:"upserted"`
	Rejected []Rejection `json:"rejected"`
}

// Rejection is a row the relay did not write: its line, its identity when read, and why.
type Rejection struct {
	Line  int    `json:"line"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error"`
}

// FormatOf is the format a file's name suggests: csv for .csv, else ndjson.
func FormatOf(path string) Format {
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		return CSV
	}
	return NDJSON
}

// clientTimeout bounds one import request (the relay allows itself 10 minutes).
const clientTimeout = 11 * time.Minute

// Send streams the file at path to the running relay's POST /api/v1/devices:import, on the
// admin listener cfg names, with key as its Bearer token (none given: the relay's own
// bootstrap key, admin.bootstrap_key or <data_dir>/admin.key, when readable), and returns its
// answer. The file is not read whole into memory.
func Send(ctx context.Context, cfg *config.Config, key, path string, o Options) (*Result, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	base, err := adminURL(cfg)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	q := url.Values{"format": {string(o.Format)}}
	if o.KeyField != "" {
		q.Set("key_field", o.KeyField)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/devices:import?"+q.Encode(), f)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	req.ContentLength = fi.Size()
	req.Host = "localhost" // the admin server refuses Host names it does not know (DNS rebinding)
	req.Header.Set("Content-Type", "application/x-ndjson")
	if o.Format == CSV {
		req.Header.Set("Content-Type", "text/csv")
	}
	if key == "" {
		key = access.LocalKey(cfg.DataDir, cfg.Admin.BootstrapKey)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: clientTimeout}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("relay admin at %s: %w", cfg.Admin.Listen, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("relay admin at %s: %w", cfg.Admin.Listen, err)
	}
	if resp.StatusCode != http.StatusOK {
		var p struct{ Detail string }
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return nil, fmt.Errorf("relay admin at %s: %s: %s", cfg.Admin.Listen, resp.Status, p.Detail)
		}
		return nil, fmt.Errorf("relay admin at %s: %s", cfg.Admin.Listen, resp.Status)
	}
	var res Result
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("relay admin at %s: the answer: %w", cfg.Admin.Listen, err)
	}
	return &res, nil
}

// adminURL is the base URL of the admin listener cfg names, dialled on loopback when it
// listens on every address.
func adminURL(cfg *config.Config) (string, error) {
	if cfg.Admin.Listen == "" {
		return "", errors.New("import: the config has no admin listener (admin.listen)")
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		return "", fmt.Errorf("import: admin.listen %q: %w", cfg.Admin.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}
