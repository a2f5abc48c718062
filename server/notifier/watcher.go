package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/bundlepublisher"
)

const (
	// pollInterval is how often Run looks at the bundle. Bundle changes are
	// rare (CA rotation, federation refresh), and one indexed read a second
	// is cheap; Changed makes the CA's own changes immediate.
	pollInterval = time.Second
	// callTimeout bounds each plugin call, so one hung plugin cannot stall
	// the others' updates or start-up forever.
	callTimeout = 30 * time.Second
	// retryInterval spaces retries of a delivery that failed, so a broken
	// plugin is not called (and logged) every second.
	retryInterval = 30 * time.Second
)

// BundleSource is where the Watcher reads the bundle;
// datastore.DataStore satisfies it.
type BundleSource interface {
	FetchBundle(ctx context.Context, trustDomain string) (*types.Bundle, error)
}

// Watcher hands the trust domain's bundle to notifiers and bundle
// publishers: once at start-up (Start), then whenever it changes (Run).
type Watcher struct {
	src     BundleSource
	td      spiffeid.TrustDomain
	log     *slog.Logger
	changed chan struct{}
	now     func() time.Time

	notifiers []Notifier
	// sinks are the update deliveries, one per notifier and publisher,
	// each with its own record of what it last received. Only Start and
	// Run touch them, one at a time.
	sinks []*sink

	fetchFailing bool // the last fetch failed; log the next failure only once
}

type sink struct {
	kind, name string
	deliver    func(context.Context, *types.Bundle) error

	last    *types.Bundle // last bundle delivered successfully
	failed  *types.Bundle // last bundle whose delivery failed
	retryAt time.Time
}

// NewWatcher returns a Watcher for td's bundle in src. log nil discards.
func NewWatcher(src BundleSource, td spiffeid.TrustDomain, notifiers []Notifier, publishers []bundlepublisher.Publisher, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{src: src, td: td, log: log, changed: make(chan struct{}, 1), now: time.Now, notifiers: notifiers}
	for _, n := range notifiers {
		w.sinks = append(w.sinks, &sink{kind: "notifier", name: n.Name(), deliver: n.NotifyBundleUpdated})
	}
	for _, p := range publishers {
		w.sinks = append(w.sinks, &sink{kind: "bundle_publisher", name: p.Name(), deliver: p.PublishBundle})
	}
	return w
}

// Start fetches the bundle and hands it to every notifier
// (NotifyBundleLoaded) and publisher (PublishBundle). A notifier's failure
// is returned, naming it, and should abort start-up, as in SPIRE; a
// publisher's is logged and retried by Run. Call Start before Run, not
// concurrently with it.
func (w *Watcher) Start(ctx context.Context) error {
	if len(w.sinks) == 0 {
		return nil
	}
	b, err := w.src.FetchBundle(ctx, w.td.Name())
	if err != nil {
		return fmt.Errorf("notifier: fetch bundle of %q: %w", w.td.Name(), err)
	}
	if b == nil {
		return fmt.Errorf("notifier: trust domain bundle of %q is missing", w.td.Name())
	}
	errs := make([]error, len(w.notifiers))
	var wg sync.WaitGroup
	for i, n := range w.notifiers {
		// The notifier's first sink is its update delivery; it has
		// received this bundle once NotifyBundleLoaded succeeds.
		s := w.sinks[i]
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			if err := n.NotifyBundleLoaded(cctx, b); err != nil {
				w.log.Error("Notifier failed to handle event", "notifier", n.Name(), "event", "bundle loaded", "error", err)
				errs[i] = fmt.Errorf("notifier: notifier %q failed to handle bundle loaded: %w", n.Name(), err)
				return
			}
			s.last = b
		})
	}
	for _, s := range w.sinks[len(w.notifiers):] {
		wg.Go(func() { w.deliver(ctx, s, b) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Run checks the bundle every second, and at once after Changed, until ctx
// ends; it returns nil then. Each notifier (NotifyBundleUpdated) and
// publisher (PublishBundle) receives every bundle that differs from the
// last one it received; failures are logged with the plugin's name and
// retried.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.changed:
		}
	}
}

// Changed asks Run to check the bundle now; the CA calls it after changing
// the bundle. It never blocks: pending requests collapse into one.
func (w *Watcher) Changed() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *Watcher) check(ctx context.Context) {
	if len(w.sinks) == 0 {
		return
	}
	b, err := w.src.FetchBundle(ctx, w.td.Name())
	if err == nil && b == nil {
		err = errors.New("trust domain bundle is missing")
	}
	if err != nil {
		if !w.fetchFailing && ctx.Err() == nil {
			w.log.Warn("notifier: failed to fetch the bundle; will keep trying", "trust_domain", w.td.Name(), "error", err)
		}
		w.fetchFailing = true
		return
	}
	w.fetchFailing = false
	now := w.now()
	var wg sync.WaitGroup
	for _, s := range w.sinks {
		if proto.Equal(b, s.last) {
			continue
		}
		if s.failed != nil && proto.Equal(b, s.failed) && now.Before(s.retryAt) {
			continue
		}
		wg.Go(func() { w.deliver(ctx, s, b) })
	}
	wg.Wait()
}

// deliver hands b to one sink and records the outcome.
func (w *Watcher) deliver(ctx context.Context, s *sink, b *types.Bundle) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := s.deliver(cctx, b); err != nil {
		if ctx.Err() == nil {
			w.log.Warn("notifier: plugin failed to handle bundle update; will retry", s.kind, s.name, "error", err)
		}
		s.failed, s.retryAt = b, w.now().Add(retryInterval)
		return
	}
	s.last, s.failed = b, nil
}
