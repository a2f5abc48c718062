package sds

import (
	"context"
	"log/slog"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// SPIRE's defaults for the sds block's names.
const (
	DefaultSVIDName       = "default"
	DefaultBundleName     = "ROOTCA"
	DefaultAllBundlesName = "ALL"
)

// Settings are the agent's sds block. Empty names take SPIRE's defaults.
type Settings struct {
	// DefaultSVIDName names the caller's first X.509-SVID.
	DefaultSVIDName string
	// DefaultBundleName names the validation context of the agent's own
	// trust domain.
	DefaultBundleName string
	// DefaultAllBundlesName names the validation context holding every
	// trust domain the caller may trust (SPIFFE validator only).
	DefaultAllBundlesName string
	// DisableSPIFFECertValidation sends plain trusted CAs instead of
	// Envoy's SPIFFE validator config; an Envoy may override it with the
	// node metadata key disable_spiffe_cert_validation.
	DisableSPIFFECertValidation bool
}

// withDefaults fills in SPIRE's default names, as SPIRE does for names
// left out or empty.
func (s Settings) withDefaults() Settings {
	if s.DefaultSVIDName == "" {
		s.DefaultSVIDName = DefaultSVIDName
	}
	if s.DefaultBundleName == "" {
		s.DefaultBundleName = DefaultBundleName
	}
	if s.DefaultAllBundlesName == "" {
		s.DefaultAllBundlesName = DefaultAllBundlesName
	}
	return s
}

// AttestFunc identifies the caller of ctx and returns its selectors and a
// logger naming it; its error is the gRPC status to answer with.
type AttestFunc func(ctx context.Context, method string) ([]*types.Selector, *slog.Logger, error)

// Manager is what SDS needs of the agent's manager (a subset of the
// Workload API's).
type Manager interface {
	// SubscribeToCacheChanges streams what workloads with these selectors
	// may see, the current state first.
	SubscribeToCacheChanges(ctx context.Context, selectors []*types.Selector) (cache.Subscription, error)
	// FetchWorkloadUpdate returns the current state for these selectors.
	FetchWorkloadUpdate(selectors []*types.Selector) *cache.WorkloadUpdate
}

// Config is what a Handler needs.
type Config struct {
	Settings Settings
	Attest   AttestFunc
	Manager  Manager
}
