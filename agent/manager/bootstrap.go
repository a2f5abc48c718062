package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// Rebootstrap modes, as SPIRE's rebootstrap_mode.
const (
	// RebootstrapNever leaves an agent that no longer trusts its server
	// to the operator.
	RebootstrapNever = "never"
	// RebootstrapAuto rebootstraps when the attestation method can
	// re-attest, and turns rebootstrapping off (with a warning) when not.
	RebootstrapAuto = "auto"
	// RebootstrapAlways rebootstraps, and stops the agent when the
	// attestation method cannot re-attest.
	RebootstrapAlways = "always"
)

// DefaultRebootstrapDelay is SPIRE's rebootstrap_delay.
const DefaultRebootstrapDelay = 10 * time.Minute

// ErrRebootstrapUnsupported means rebootstrap_mode "always" was asked for
// but the node's attestation cannot be repeated (a join token), so the
// agent could never bootstrap again by itself.
var ErrRebootstrapUnsupported = errors.New("manager: rebootstrap_mode is \"always\" but the NodeAttestor plugin or the server does not allow the agent to re-attest")

// BootstrapFunc returns the trust bundle that verifies the server on first
// contact: from trust_bundle_path, or downloaded from trust_bundle_url.
// rebootstrap says the agent is bootstrapping again because its bundle no
// longer verifies the server.
type BootstrapFunc func(ctx context.Context, rebootstrap bool) ([]*x509.Certificate, error)

// unknownAuthority is how crypto/x509 says a chain does not lead to a
// trusted root; a TLS handshake failure reaches the manager only as gRPC
// status text, so the text is what can be matched (SPIRE matches it too).
const unknownAuthority = "x509: certificate signed by unknown authority"

func isUnknownAuthority(err error) bool {
	return err != nil && strings.Contains(err.Error(), unknownAuthority)
}

// ensureBootstrapBundle gives the client the bootstrap bundle before the
// first attestation, when the agent has no bundle yet and one comes from
// BootstrapBundle (trust_bundle_url is read only when needed, as in SPIRE:
// an agent that stored its bundle starts without the URL).
func (m *Manager) ensureBootstrapBundle(ctx context.Context) error {
	if m.cfg.BootstrapBundle == nil || m.hasBundle() {
		return nil
	}
	return m.installBootstrapBundle(ctx, false)
}

func (m *Manager) installBootstrapBundle(ctx context.Context, rebootstrap bool) error {
	certs, err := m.cfg.BootstrapBundle(ctx, rebootstrap)
	if err != nil {
		return fmt.Errorf("manager: bootstrap trust bundle: %w", err)
	}
	if len(certs) == 0 {
		return errors.New("manager: bootstrap trust bundle: no certificates found in trust bundle")
	}
	m.setClientBundle(x509bundle.FromX509Authorities(m.cfg.TrustDomain, certs))
	return nil
}

// setClientBundle is the one way the client's bundle is set, so that the
// manager knows whether the agent has anything to verify the server with.
func (m *Manager) setClientBundle(b *x509bundle.Bundle) {
	m.client.SetBundle(b)
	m.mu.Lock()
	m.bundleSet = true
	m.mu.Unlock()
}

func (m *Manager) hasBundle() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bundleSet
}

// checkRebootstrapSupport applies rebootstrap_mode to what the attestation
// allows, as SPIRE does once it knows: "always" with an agent that cannot
// re-attest stops it, "auto" turns rebootstrapping off.
func (m *Manager) checkRebootstrapSupport() error {
	if m.rebootstrap == RebootstrapNever || m.AgentSVID() == nil || m.canReattest() {
		return nil
	}
	if m.rebootstrap == RebootstrapAlways {
		return ErrRebootstrapUnsupported
	}
	m.log.Warn("Rebootstrap was requested but the NodeAttestor plugin or the server does not allow the agent to re-attest; disabling rebootstrap")
	m.rebootstrap = RebootstrapNever
	return nil
}

// maybeRebootstrap handles a call that failed because the agent's bundle
// does not verify the server (its CA was replaced without overlap, say).
// After RebootstrapDelay of seeing only such servers, the agent drops its
// SVID and bundle and bootstraps again from the bootstrap bundle, then
// attests. A successful call in between starts the delay over.
func (m *Manager) maybeRebootstrap(ctx context.Context, err error) error {
	if m.rebootstrap == RebootstrapNever || !isUnknownAuthority(err) {
		return err
	}
	now := m.clock()
	if m.untrustedSince.IsZero() {
		m.untrustedSince = now
	}
	if left := m.cfg.RebootstrapDelay - now.Sub(m.untrustedSince); left > 0 {
		m.log.Info("Trust bundle and server do not agree; ignoring for now", "time_left", left, "error", err)
		return err
	}
	m.log.Warn("Trust bundle and server do not agree; rebootstrapping", "untrusted_since", m.untrustedSince, "error", err)
	if berr := m.installBootstrapBundle(ctx, true); berr != nil {
		return berr
	}
	m.mu.Lock()
	m.agentSVID = nil
	m.mu.Unlock()
	m.untrustedSince = time.Time{}
	// The next step finds no SVID and attests against the new bundle.
	return nil
}
