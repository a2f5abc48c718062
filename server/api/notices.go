package api

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The notice stream (wire/push) tells our agents at once that their
// entries or the bundle changed; the agent then syncs with SPIRE's RPCs.
//
// It is built to cost almost nothing per idle agent. A subscriber is a
// handler goroutine (gRPC's, one per stream, parked on a channel), a
// small record and one runtime timer, the deadline that ends the stream
// when its agent's SVID expires (about 0.75 KiB, and no CPU until it
// fires); there are no per-agent queues or tickers. One feed
// goroutine, running only while anyone is subscribed, turns changes into
// waves: it is told of every entry or bundle change made through this
// server, and looks once a second for changes made elsewhere (another
// server sharing the datastore, the CA publishing an authority). A wave
// closes one shared channel; each woken handler asks whether the change
// concerns its agent by comparing two numbers: the digest of the agent's
// authorized entries in the current snapshot (memoized per snapshot, and
// reused by the sync it triggers) with the digest of what its last sync
// was served, and likewise the bundle's version and, for an agent whose
// entries federate with other trust domains, the digests of those
// domains' bundles (notices_federated.go). Most waves wake a handler for
// a comparison and nothing else.
//
// Notices coalesce: one is sent per distinct state, not per change, and
// an agent that receives maxUnsyncedNotices without syncing is not
// reading them; its stream is ended instead of filling its buffers.

const (
	// noticeDebounce gathers the changes of a burst of API calls (a
	// script creating entries one call at a time) into one wave.
	noticeDebounce = 10 * time.Millisecond
	// noticeCheckEvery is how often the feed looks for changes this
	// server was not told of.
	noticeCheckEvery = time.Second
	// maxUnsyncedNotices bounds the notices sent to an agent between two
	// of its syncs.
	maxUnsyncedNotices = 16
	// noticeNodeRecheck is how long a stream trusts its look at the
	// agent's node (nodeTTL's default).
	noticeNodeRecheck = nodeTTL
)

// notices is the server side of the notice streams.
type notices struct {
	api *API

	mu   sync.Mutex
	subs map[string]*subscriber // by agent ID: one stream per agent
	// wave is closed, and replaced, at every wave.
	wave chan struct{}
	// stopFeed stops the feed; nil while it does not run.
	stopFeed context.CancelFunc
	// feedDone is closed when the running feed returns.
	feedDone chan struct{}
	closed   bool

	// kick tells the feed that something changed; never blocks.
	kick chan struct{}
	// federated is the feed's last look at the federated bundles,
	// published before the wave that follows it.
	federated atomic.Pointer[federatedVersions]
}

// subscriber is one agent's stream: what it was last served, which the
// sync RPCs record and its handler reads.
type subscriber struct {
	cancel context.CancelCauseFunc
	// entries is the digest of the entries the agent's last sync was
	// served; bundle the version of the bundle its last GetBundle got.
	entries atomic.Uint64
	bundle  atomic.Uint64
	// gotEntries and gotBundle are set by the first of each: an agent
	// part way through its first sync (entries served, bundle not yet)
	// must not be told that the bundle it is about to fetch changed.
	gotEntries, gotBundle atomic.Bool
	// syncs counts the agent's sync calls, so the handler can tell
	// whether the agent acts on its notices.
	syncs atomic.Uint64

	// fed is the digest of each federated bundle the agent was served,
	// by trust domain; nil until it fetches one.
	fedMu sync.Mutex
	fed   map[string]uint64
}

func newNotices(a *API) *notices {
	return &notices{api: a, subs: map[string]*subscriber{}, wave: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// changed tells the feed that entries or the bundle may have changed.
func (n *notices) changed() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// add registers sub as id's stream, and starts the feed for the first.
func (n *notices) add(id string, sub *subscriber) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return status.Error(codes.Unavailable, "server is shutting down")
	case n.subs[id] != nil:
		return status.Errorf(codes.ResourceExhausted, "agent %q already has a notice stream", id)
	}
	n.subs[id] = sub
	if n.stopFeed == nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		n.stopFeed, n.feedDone = cancel, done
		go func() {
			defer close(done)
			n.feed(ctx)
		}()
	}
	return nil
}

// remove unregisters sub, and stops the feed after the last.
func (n *notices) remove(id string, sub *subscriber) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs[id] != sub {
		return
	}
	delete(n.subs, id)
	if len(n.subs) == 0 && n.stopFeed != nil {
		n.stopFeed()
		n.stopFeed = nil
	}
}

// evict ends id's stream with err (its node was banned or deleted).
func (n *notices) evict(id string, err error) {
	n.mu.Lock()
	sub := n.subs[id]
	n.mu.Unlock()
	if sub != nil {
		sub.cancel(err)
	}
}

// stop ends every stream and refuses new ones.
func (n *notices) stop() {
	n.mu.Lock()
	n.closed = true
	subs := make([]*subscriber, 0, len(n.subs))
	for _, s := range n.subs {
		subs = append(subs, s)
	}
	done := n.feedDone
	n.mu.Unlock()
	for _, s := range subs {
		s.cancel(status.Error(codes.Unavailable, "server is shutting down"))
	}
	if done != nil {
		<-done
	}
}

func (n *notices) lookup(id string) *subscriber {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.subs[id]
}

// servedEntries records that id's sync was served entries of digest.
func (n *notices) servedEntries(id string, digest uint64) {
	if sub := n.lookup(id); sub != nil {
		sub.entries.Store(digest)
		sub.gotEntries.Store(true)
		sub.syncs.Add(1)
	}
}

// servedBundle records that id was served the bundle of version ver.
func (n *notices) servedBundle(id string, ver uint64) {
	if sub := n.lookup(id); sub != nil {
		sub.bundle.Store(ver)
		sub.gotBundle.Store(true)
		sub.syncs.Add(1)
	}
}

// currentWave returns the channel the next wave closes.
func (n *notices) currentWave() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.wave
}

func (n *notices) broadcast() {
	n.mu.Lock()
	close(n.wave)
	n.wave = make(chan struct{})
	n.mu.Unlock()
}

// feed turns changes into waves until ctx ends. The first look after a
// start always makes a wave, which costs each handler one comparison.
func (n *notices) feed(ctx context.Context) {
	t := time.NewTicker(noticeCheckEvery)
	defer t.Stop()
	var snap *entrySnapshot
	var ver uint64
	var fed federatedVersions
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
			d := time.NewTimer(noticeDebounce)
			select {
			case <-ctx.Done():
				d.Stop()
				return
			case <-d.C:
			}
		}
		s, err := n.api.entries.snapshot(ctx)
		if err != nil {
			n.api.cfg.Log.Debug("Notice feed could not read the entries", "error", err)
			continue
		}
		_, v, err := n.api.bundle.getVersion(ctx)
		if err != nil {
			n.api.cfg.Log.Debug("Notice feed could not read the bundle", "error", err)
			continue
		}
		f, err := n.readFederated(ctx)
		if err != nil {
			// Entries and the own bundle still go out; the federated
			// bundles are looked at again next time.
			n.api.cfg.Log.Debug("Notice feed could not read the federated bundles", "error", err)
			f = fed
		}
		if s != snap || v != ver || !sameFederated(f, fed) {
			snap, ver, fed = s, v, f
			n.federated.Store(&f)
			n.broadcast()
		}
	}
}

// pushDigest names a set of entries and their revisions; never 0, which
// means "not served yet".
func (s *entrySnapshot) pushDigest(entries []int32) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, i := range entries {
		_, _ = io.WriteString(h, s.id(i))
		r := uint64(s.ents[i].revision)
		for k := range buf {
			buf[k] = byte(r >> (8 * k))
		}
		_, _ = h.Write(buf[:])
	}
	return h.Sum64() | 1
}

// NoticeService implements wire/push for our agents.
type NoticeService struct{ api *API }

// Subscribe implements push.Server: it sends push.Open, then a notice
// whenever the calling agent's entries or the bundle differ from what the
// agent was last served, until the agent goes away, its SVID expires or
// stops being the node's, it is banned or deleted, or the server stops.
func (s *NoticeService) Subscribe(stream grpc.ServerStream) error {
	c, err := callerAgent(stream.Context())
	if err != nil {
		return err
	}
	id := c.ID.String()
	n := s.api.notices
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	// An expired SVID authenticates no new call; it must not keep this
	// one either.
	ctx, cancelExpiry := context.WithDeadlineCause(ctx, c.Cert.NotAfter, status.Error(codes.Unauthenticated, "agent SVID expired"))
	defer cancelExpiry()
	sub := &subscriber{cancel: cancel}
	if err := n.add(id, sub); err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			s.api.sec.refused("push", id, "Notice stream refused: one per agent", "agent_id", id, "caller_addr", peerAddr(ctx))
		}
		return err
	}
	defer n.remove(id, sub)

	wave := n.currentWave()
	if err := stream.SendMsg(push.Notice(push.Open)); err != nil {
		return err
	}
	var notifiedEntries, notifiedBundle, notifiedFederated uint64
	// The trust domains the agent's entries federate with, worked out
	// again only when its entries change (keyed by their digest, which a
	// changed federates_with moves, so no entry is kept alive here).
	var fedTDs []string
	var fedOf uint64
	own := s.api.cfg.TrustDomain
	var nc nodeCheck
	unsynced, syncsAtSend := 0, sub.syncs.Load()
	for {
		select {
		case <-ctx.Done():
			return streamEnd(ctx)
		case <-wave:
		}
		wave = n.currentWave()
		if sub.syncs.Load() == 0 {
			// The agent syncs after Open: until that sync is served,
			// there is nothing it was not going to fetch anyway.
			continue
		}
		snap, m, bundle, err := s.changeFor(ctx, c, &nc)
		if err != nil {
			if ctx.Err() != nil {
				return streamEnd(ctx)
			}
			return err
		}
		var ch push.Change
		if entries := m.digest; sub.gotEntries.Load() && entries != sub.entries.Load() && entries != notifiedEntries {
			notifiedEntries, ch = entries, ch|push.Entries
		}
		if sub.gotBundle.Load() && bundle != sub.bundle.Load() && bundle != notifiedBundle {
			notifiedBundle, ch = bundle, ch|push.Bundle
		}
		if m.digest != fedOf {
			fedOf, fedTDs = m.digest, snap.federatedOf(m.entries, own)
		}
		if len(fedTDs) > 0 {
			var cur federatedVersions
			if p := n.federated.Load(); p != nil {
				cur = *p
			}
			if fold, changed := sub.federatedChange(fedTDs, cur); changed && fold != notifiedFederated {
				notifiedFederated, ch = fold, ch|push.FederatedBundles
			}
		}
		if ch == 0 {
			continue
		}
		if syncs := sub.syncs.Load(); syncs != syncsAtSend {
			unsynced, syncsAtSend = 0, syncs
		}
		if unsynced >= maxUnsyncedNotices {
			s.api.sec.refused("push", id, "Notice stream ended: the agent does not sync after its notices", "agent_id", id, "notices", unsynced)
			return status.Errorf(codes.ResourceExhausted, "%d notices without a sync", unsynced)
		}
		unsynced++
		if err := stream.SendMsg(push.Notice(ch)); err != nil {
			return err
		}
	}
}

// nodeCheck is a stream's last look at its agent's node.
type nodeCheck struct {
	node *datastore.AttestedNode
	at   time.Time
}

// changeFor re-checks the agent's node, which must still hold this SVID
// (at most every noticeNodeRecheck: a ban or deletion through this
// server ends the stream at once, one through another server sharing the
// database within that; with max_attested_node_info_staleness = 0 a wave
// must not cost every subscriber a query), and returns its authorized
// entries (with their digest) and the bundle's version now.
func (s *NoticeService) changeFor(ctx context.Context, c *Caller, nc *nodeCheck) (snap *entrySnapshot, m *authorizedMemo, bundle uint64, err error) {
	id := c.ID.String()
	node, err := nc.node, error(nil)
	if node == nil || time.Since(nc.at) >= noticeNodeRecheck {
		node, err = s.api.nodes.fetch(ctx, id, false)
		nc.node, nc.at = node, time.Now()
	}
	switch serial := c.Cert.SerialNumber.String(); {
	case errors.Is(err, datastore.ErrNotFound):
		return nil, nil, 0, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %q is not attested", id)
	case err != nil:
		return nil, nil, 0, dsError("fetch attested node", err)
	case node.Banned():
		return nil, nil, 0, agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %q is banned", id)
	case serial != node.CertSerial && serial != node.NewCertSerial:
		return nil, nil, 0, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %q presented an SVID that is not active (serial %s)", id, serial)
	}
	snap, err = s.api.entries.snapshot(ctx)
	if err != nil {
		return nil, nil, 0, dsError("entries", err)
	}
	m = snap.authorizedMemoFor(id, s.api.serverID().String(), node.Selectors)
	_, ver, err := s.api.bundle.getVersion(ctx)
	if err != nil {
		return nil, nil, 0, dsError("bundle", err)
	}
	return snap, m, ver, nil
}

// streamEnd is the status a stream ends with once its context is done:
// the cause it was cancelled with, or the caller's own cancellation.
func streamEnd(ctx context.Context) error {
	if _, ok := status.FromError(context.Cause(ctx)); ok && status.Code(context.Cause(ctx)) != codes.Unknown {
		return context.Cause(ctx)
	}
	return status.FromContextError(ctx.Err()).Err()
}
