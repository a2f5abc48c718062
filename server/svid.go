package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// svidRotator keeps the server's own X.509-SVID (spiffe://<td>/spire/server),
// which agents verify when they connect, and renews it at half-life.
type svidRotator struct {
	id  spiffeid.ID
	ca  *ca.Manager
	log *slog.Logger
	// metrics gets SPIRE's svid.rotate call counter (nil drops it).
	metrics *telemetry.Metrics

	mu   sync.RWMutex
	cert *tls.Certificate
}

func newSVIDRotator(ctx context.Context, td spiffeid.TrustDomain, m *ca.Manager, metrics *telemetry.Metrics, log *slog.Logger) (*svidRotator, error) {
	r := &svidRotator{id: spiffeid.RequireFromPath(td, "/spire/server"), ca: m, metrics: metrics, log: log}
	if err := r.rotate(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *svidRotator) rotate(ctx context.Context) (err error) {
	defer r.metrics.StartCall("svid", "rotate").Done(&err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("server: generate SVID key: %w", err)
	}
	chain, err := r.ca.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: r.id, PublicKey: key.Public(), Kind: ca.KindServer})
	if err != nil {
		return fmt.Errorf("server: sign server SVID: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	r.mu.Lock()
	r.cert = cert
	r.mu.Unlock()
	r.log.Debug("Server SVID rotated", "spiffe_id", r.id.String(), "expires_at", chain[0].NotAfter)
	return nil
}

func (r *svidRotator) certificate() (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

func (r *svidRotator) chain() []*x509.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*x509.Certificate, 0, len(r.cert.Certificate))
	for _, der := range r.cert.Certificate {
		if c, err := x509.ParseCertificate(der); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// run renews at half of the SVID's lifetime, and at once when an X.509
// authority is tainted, and retries failures every few
// seconds while the current SVID is still valid.
func (r *svidRotator) run(ctx context.Context) error {
	for {
		r.mu.RLock()
		leaf := r.cert.Leaf
		r.mu.RUnlock()
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		wait := max(time.Until(half), time.Second)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		case <-r.ca.X509AuthorityTainted():
			// The active CA is never the tainted one, so a new SVID no
			// longer chains to it; agents do the same with theirs.
			r.log.Info("X.509 authority tainted; rotating the server SVID")
		}
		if err := r.rotate(ctx); err != nil {
			r.log.Error("Failed to rotate server SVID", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
		}
	}
}
