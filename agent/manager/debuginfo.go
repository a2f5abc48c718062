package manager

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// What the agent's debug/v1 GetInfo reports, under SPIRE's names.

// CountX509SVIDs is the X509-SVIDs cached for workloads.
func (m *Manager) CountX509SVIDs() int { return len(m.cache.SVIDs()) }

// CountJWTSVIDs is the JWT-SVIDs cached for workloads.
func (m *Manager) CountJWTSVIDs() int { return m.jwts.len() }

// CountSVIDStoreX509SVIDs is the X509-SVIDs held for SVIDStores.
func (m *Manager) CountSVIDStoreX509SVIDs() int { return len(m.stored.svids()) }

// LastSync is when a round with the server (attestation or renewal, and
// the sync of entries and SVIDs) last succeeded; zero before the first.
func (m *Manager) LastSync() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastSync
}

// Bundle is the trust domain's bundle, or nil before the agent has one.
func (m *Manager) Bundle() *spiffebundle.Bundle { return m.cache.Bundle() }
