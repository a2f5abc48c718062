package api

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"maps"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Federated bundles reach an agent through its entries: a sync fetches
// the bundle of every trust domain they federate with (GetFederatedBundle
// per domain). So a changed foreign bundle concerns only the agents whose
// entries name its trust domain, and the notice stream treats it as it
// treats the entries and the own bundle, by comparing numbers:
//
//   - the feed keeps the digest of every federated bundle in the
//     datastore (federatedVersions), read at every look, so that a change
//     by bundle/v1, trustdomain/v1, the federation refresher or another
//     server sharing the database is seen within a second, and one through
//     bundle/v1 at once;
//   - a subscriber records the digest of each federated bundle its agent
//     was served (GetFederatedBundle), which is exactly what the agent
//     holds, whatever the order of its calls;
//   - on a wave, a handler whose agent's entries federate with nothing
//     (most agents) compares nothing; the others compare, for each trust
//     domain their entries name, the two digests.

// federatedVersions maps a foreign trust domain's name to the digest of
// its bundle in the datastore; a domain without a bundle is absent (0).
// Never changed once published: the feed replaces it whole.
type federatedVersions map[string]uint64

// readFederated reads every foreign bundle from the datastore.
func (n *notices) readFederated(ctx context.Context) (federatedVersions, error) {
	own := n.api.cfg.TrustDomain.Name()
	bundles, _, err := n.api.cfg.DataStore.ListBundles(ctx, nil)
	if err != nil {
		return nil, err
	}
	out := make(federatedVersions, len(bundles))
	for _, b := range bundles {
		if b.TrustDomain != own {
			out[b.TrustDomain] = bundleDigest(b)
		}
	}
	return out, nil
}

// bundleDigest names a bundle's content as the agent uses it; never 0,
// which means "no bundle".
func bundleDigest(b *types.Bundle) uint64 {
	h := fnv.New64a()
	var num [8]byte
	field := func(p []byte) {
		binary.LittleEndian.PutUint64(num[:], uint64(len(p)))
		_, _ = h.Write(num[:])
		_, _ = h.Write(p)
	}
	integer := func(v int64) {
		binary.LittleEndian.PutUint64(num[:], uint64(v))
		_, _ = h.Write(num[:])
	}
	flag := func(v bool) {
		if v {
			integer(1)
		} else {
			integer(0)
		}
	}
	field([]byte(b.TrustDomain))
	integer(int64(len(b.X509Authorities)))
	for _, a := range b.X509Authorities {
		field(a.GetAsn1())
		flag(a.GetTainted())
	}
	integer(int64(len(b.JwtAuthorities)))
	for _, k := range b.JwtAuthorities {
		field([]byte(k.GetKeyId()))
		field(k.GetPublicKey())
		integer(k.GetExpiresAt())
		flag(k.GetTainted())
	}
	integer(b.RefreshHint)
	integer(int64(b.SequenceNumber))
	return h.Sum64() | 1
}

// servedFederated records that id was served td's bundle of digest
// (0: the server has none, which the agent then leaves out).
func (n *notices) servedFederated(id, td string, digest uint64) {
	sub := n.lookup(id)
	if sub == nil {
		return
	}
	sub.fedMu.Lock()
	if digest == 0 {
		delete(sub.fed, td)
	} else {
		if sub.fed == nil {
			// Only agents that fetch federated bundles pay for a map;
			// it holds at most one digest per bundle the datastore has,
			// since only a bundle found is recorded.
			sub.fed = map[string]uint64{}
		}
		sub.fed[td] = digest
	}
	sub.fedMu.Unlock()
	sub.syncs.Add(1)
}

// federatedChange compares, for each of tds, the bundle digest now (cur)
// with the one the agent was last served. It returns whether any differs
// and a fold of the current ones, which names the state a notice is about.
func (s *subscriber) federatedChange(tds []string, cur federatedVersions) (fold uint64, changed bool) {
	if len(tds) == 0 {
		return 0, false
	}
	h := fnv.New64a()
	var num [8]byte
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	for _, td := range tds {
		v := cur[td]
		if s.fed[td] != v {
			changed = true
		}
		_, _ = h.Write([]byte(td))
		binary.LittleEndian.PutUint64(num[:], v)
		_, _ = h.Write(num[:])
	}
	return h.Sum64() | 1, changed
}

// sameFederated says whether two looks found the same federated bundles
// (none and an empty look are the same).
func sameFederated(a, b federatedVersions) bool { return maps.Equal(a, b) }
