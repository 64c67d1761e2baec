package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// badgerLogger routes Badger's printf-style logs through slog. Badger's INFO
// messages (table opens, compactions, flushes) are logged at slog's Debug
// level: they are routine and would drown the relay's own logs.
type badgerLogger struct{ l *slog.Logger }

var _ badger.Logger = badgerLogger{}

func (b badgerLogger) logf(level slog.Level, format string, args []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (b badgerLogger) Errorf(format string, args ...any) { b.logf(slog.LevelError, format, args) }

func (b badgerLogger) Warningf(format string, args ...any) { b.logf(slog.LevelWarn, format, args) }

func (b badgerLogger) Infof(format string, args ...any) { b.logf(slog.LevelDebug, format, args) }

func (b badgerLogger) Debugf(format string, args ...any) { b.logf(slog.LevelDebug-4, format, args) }
