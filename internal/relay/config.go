package relay

import (
	"log/slog"
	"os"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// LoadConfig loads path (or the embedded defaults when path is empty) and builds the logger the
// config asks for.
func LoadConfig(path string) (*config.Config, *slog.Logger, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return nil, nil, err
		}
	}
	return cfg, NewLogger(cfg.Log), nil
}

// NewLogger builds the process logger from the log section.
func NewLogger(l config.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.SlogLevel()}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
