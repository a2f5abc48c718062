package manager

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/client"
	"github.com/spiffe-hw/spire-hw/internal/backoff"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Our server pushes change notices (wire/push): the agent keeps one
// stream open and syncs as soon as a notice arrives, so that an entry
// created after attestation reaches its workload in a fraction of a
// second instead of at the next poll. The poll stays, at SyncInterval,
// as the safety net; against a server without the service (SPIRE's) it
// is all there is.

const (
	// noticeDebounce gathers the notices of a burst (entries created in
	// many calls) into one sync.
	noticeDebounce = 50 * time.Millisecond
	// noticeRetryUnsupported is how long an agent whose server does not
	// offer notices waits before asking again (the server may be
	// upgraded under it).
	noticeRetryUnsupported = 10 * time.Minute
)

// noticed tells the run loop to sync now; never blocks, and notices that
// arrive before it syncs are one.
func (m *Manager) noticed() {
	select {
	case m.notices <- struct{}{}:
	default:
	}
}

// watchNotices keeps the notice stream open until ctx ends.
func (m *Manager) watchNotices(ctx context.Context) {
	failures := 0
	pushing, unsupported := false, false
	for {
		opened := false
		err := m.client.WatchChanges(ctx, func(c push.Change) {
			if !opened {
				opened = true
				if !pushing {
					m.log.Info("Server pushes change notices; syncing on each, and polling every sync interval", "sync_interval", m.cfg.SyncInterval)
				}
				pushing, unsupported = true, false
			}
			m.noticed()
		})
		if ctx.Err() != nil {
			return
		}
		if opened {
			failures = 0
		}
		var wait time.Duration
		switch code := status.Code(err); {
		case errors.Is(err, client.ErrConnectionRetired):
			// A renewed SVID: follow it at once.
			continue
		case code == codes.Unimplemented:
			if !unsupported {
				m.log.Info("Server does not offer change notices; polling every sync interval", "sync_interval", m.cfg.SyncInterval)
			}
			pushing, unsupported = false, true
			wait = noticeRetryUnsupported
		default:
			if code == codes.PermissionDenied || code == codes.Unauthenticated {
				// Banned, deleted or expired: the run loop finds out
				// which at once and acts on it (re-attest or stop).
				m.noticed()
			}
			failures++
			wait = backoff.Delay(failures, m.jitter())
			m.log.Debug("Notice stream ended; reopening", "error", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// waitOrNotice waits d, or less if a notice arrives; then, for a
// notice, noticeDebounce more, gathering what follows it. It returns
// false when ctx ends, and whether a notice ended the wait.
func (m *Manager) waitOrNotice(ctx context.Context, d time.Duration) (ok, noticed bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			return false, false
		case <-t.C:
			return true, false
		case <-m.svidsWanted:
			// A workload waits for SVIDs beyond the cache limit: mint
			// them without a sync, then go on waiting for this one.
			m.beginRound()
			minted := m.mintWanted(ctx)
			m.endRound()
			// Saved once the round is over: the workload waiting for
			// these SVIDs has them in memory now, and the write (every
			// SVID held, thousands with a large cache, and a sync to
			// disk) would hold it up for no gain; a crash before the
			// write only means minting them again.
			if minted {
				if err := m.persist(); err != nil {
					m.log.Error("Could not save the SVID cache", "error", err)
				}
			}
		case <-m.notices:
			waiting = false
		}
	}
	t.Reset(noticeDebounce)
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
	}
	// Notices of the burst are covered by the coming sync.
	select {
	case <-m.notices:
	default:
	}
	return true, true
}

// nextPoll returns when the poll due at due falls after a sync that a
// notice brought forward at now: at its own time, so that the agents one
// change reached (every agent, for a bundle change) do not poll in step
// from then on, unless that is within half an interval, when the sync
// just made stands for it and the one after is due.
func nextPoll(due, now time.Time, interval time.Duration) time.Time {
	for due.Sub(now) < interval/2 {
		due = due.Add(interval)
	}
	return due
}
