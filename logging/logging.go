// Package logging builds the slog logger that the server and the agent use
// from SPIRE's log_level, log_format and log_file settings.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// New returns a logger writing to file (stderr when empty) in format "text"
// or "json" at level. The closer releases the file; it is a no-op for stderr.
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
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		closer.Close()
		return nil, nil, fmt.Errorf("logging: unknown log_format %q (use text or json)", format)
	}
	return slog.New(h), closer, nil
}
