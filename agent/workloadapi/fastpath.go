package workloadapi

import (
	"context"
	"log/slog"
	"sync"
)

// callLog is base.With(attrs), except that the attributes are handed to
// base's handler (which for text and JSON formats them at once) only when
// the logger first logs something enabled or is derived from: a Workload
// API call logs nothing unless it fails, and the With cost every call a few
// allocations and a formatting pass. What is written is the same.
func callLog(base *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&deferredAttrs{base: base.Handler(), attrs: attrs})
}

type deferredAttrs struct {
	base  slog.Handler
	attrs []slog.Attr
	once  sync.Once
	h     slog.Handler
}

func (d *deferredAttrs) handler() slog.Handler {
	d.once.Do(func() { d.h = d.base.WithAttrs(d.attrs) })
	return d.h
}

func (d *deferredAttrs) Enabled(ctx context.Context, l slog.Level) bool {
	return d.base.Enabled(ctx, l)
}

func (d *deferredAttrs) Handle(ctx context.Context, r slog.Record) error {
	return d.handler().Handle(ctx, r)
}

func (d *deferredAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return d.handler().WithAttrs(attrs)
}

func (d *deferredAttrs) WithGroup(name string) slog.Handler {
	return d.handler().WithGroup(name)
}
