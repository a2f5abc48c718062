package manager

import (
	"errors"
	"fmt"
	"time"
)

// Ready reports whether the agent can vouch for its workloads: nil once
// it holds an agent SVID (attested now, or stored by an earlier run),
// while that SVID has not expired, and while the server has not been
// unreachable for longer than the SVID has left to live. The last rule
// turns an outage into "not ready" before the SVID runs out, at the point
// where the outage has outlasted what the agent can still ride out: an
// SVID with 40 minutes left survives a 10-minute outage, but after 25
// minutes without the server, the 15 that remain are unlikely to be
// enough. The health endpoint and the Workload API's gRPC health service
// answer from it.
func (m *Manager) Ready() error {
	now := m.clock()
	m.mu.Lock()
	svid, last := m.agentSVID, m.lastContact
	m.mu.Unlock()
	if svid == nil {
		return errors.New("agent is not attested yet")
	}
	notAfter := svid.Certificates[0].NotAfter
	if !now.Before(notAfter) {
		return fmt.Errorf("agent SVID expired at %s", notAfter.UTC().Format(time.RFC3339))
	}
	if out, left := now.Sub(last), notAfter.Sub(now); out > left {
		return fmt.Errorf("server unreachable for %s, longer than the %s the agent SVID has left", out.Round(time.Second), left.Round(time.Second))
	}
	return nil
}
