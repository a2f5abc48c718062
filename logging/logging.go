// Package logging builds the slog logger that the server and the agent use
// from SPIRE's log_level, log_format and log_file settings. Its level can
// change while the daemon runs (SPIRE's logger API: `logger set|reset`).
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Level is a daemon's log level: the one it was launched with and the one
// in force now, which the logger API sets and resets without a restart.
type Level struct {
	launch slog.Level
	v      slog.LevelVar
}

// NewLevel returns a Level launched at, and currently at, launch.
func NewLevel(launch slog.Level) *Level {
	l := &Level{launch: launch}
	l.v.Set(launch)
	return l
}

// Level implements slog.Leveler: the level in force now.
func (l *Level) Level() slog.Level { return l.v.Level() }

// Set changes the level in force; every logger derived from the daemon's
// logger follows at once.
func (l *Level) Set(level slog.Level) { l.v.Set(level) }

// Launch is the level from the configuration.
func (l *Level) Launch() slog.Level { return l.launch }

// Reset returns to the launch level.
func (l *Level) Reset() { l.v.Set(l.launch) }

// New returns a logger writing to file (stderr when empty) in format "text"
// or "json" at level, which LevelOf recovers from it and any logger derived
// from it. The closer releases the file; it is a no-op for stderr.
func New(level slog.Level, format, file string) (*slog.Logger, io.Closer, error) {
	var w io.Writer = os.Stderr
	var closer io.Closer = io.NopCloser(nil)
	if file != "" {
		f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("logging: open log_file: %w", err)
		}
		w, closer = f, f
	}
	l, err := NewWriter(w, NewLevel(level), format)
	if err != nil {
		closer.Close()
		return nil, nil, err
	}
	return l, closer, nil
}

// NewWriter is New writing to w at a Level the caller holds.
func NewWriter(w io.Writer, level *Level, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("logging: unknown log_format %q (use text or json)", format)
	}
	return slog.New(&leveled{Handler: h, level: level}), nil
}

// LevelOf returns the live Level of a logger made by New or NewWriter (or
// derived from one with With or WithGroup), or nil for any other logger.
func LevelOf(l *slog.Logger) *Level {
	if l == nil {
		return nil
	}
	if h, ok := l.Handler().(*leveled); ok {
		return h.level
	}
	return nil
}

// leveled carries the Level along with the handler that obeys it, so that
// the daemon can find it from its logger.
type leveled struct {
	slog.Handler
	level *Level
}

func (h *leveled) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &leveled{Handler: h.Handler.WithAttrs(attrs), level: h.level}
}

func (h *leveled) WithGroup(name string) slog.Handler {
	return &leveled{Handler: h.Handler.WithGroup(name), level: h.level}
}
