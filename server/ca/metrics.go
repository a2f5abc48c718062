package ca

import (
	"time"

	"github.com/spiffe-hw/spire-hw/telemetry"
)

// SPIRE's CA manager and signer metrics (pkg/common/telemetry/server's
// ca_manager.go and server_ca keys). A nil Config.Metrics drops them.

// x509Activated counts an X.509 CA activation and sets the rotation gauges
// (manager.x509_ca.rotate.ttl in seconds and .expiration in Unix seconds,
// labelled trust_domain_id), as SPIRE's manager does on activation.
func (m *Manager) x509Activated(notAfter time.Time) {
	mt := m.cfg.Metrics
	mt.IncrCounter([]string{"ca", "manager", "x509_ca", "activate"}, 1)
	td := telemetry.Label{Name: "trust_domain_id", Value: m.cfg.TrustDomain.Name()}
	mt.SetGauge([]string{"manager", "x509_ca", "rotate", "ttl"}, float32(time.Until(notAfter).Seconds()), td)
	mt.SetGauge([]string{"manager", "x509_ca", "rotate", "expiration"}, float32(notAfter.Unix()), td)
}

// jwtActivated counts a JWT key activation; SPIRE's key for it has no
// leading "ca".
func (m *Manager) jwtActivated() {
	m.cfg.Metrics.IncrCounter([]string{"manager", "jwt_key", "activate"}, 1)
}

// signed counts a credential the CA signed: x509_svid or jwt_svid.
func (m *Manager) signed(what string) {
	m.cfg.Metrics.IncrCounter([]string{"server_ca", "sign", what}, 1)
}
