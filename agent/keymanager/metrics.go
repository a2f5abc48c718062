package keymanager

import (
	"context"
	"crypto"

	"github.com/spiffe-hw/spire-hw/telemetry"
)

// metricsKey is SPIRE's first key part for the agent KeyManager's calls.
const metricsKey = "agent_key_manager"

// WithMetrics returns km counting its calls as SPIRE's agent counts its
// KeyManager's, with call counters (status label, elapsed_time summary)
// under both of SPIRE's sets of names: the ones its telemetry document
// lists (generate_key_pair, fetch_private_key, store_private_key) and the
// ones SPIRE v1.13.3's KeyManager wrapper actually emits (generate_key,
// get_key, get_keys), so that dashboards built on either see the agent
// key's life. SetAgentKey has no counterpart in the second set: SPIRE's
// plugin stores a key when it generates it. With a nil m, km is returned
// as is.
//
// The wrapper keeps AgentKeyFor, the optional lookup of the key matching a
// stored SVID: when km lacks it, the wrapper answers with AgentKey.
func WithMetrics(km KeyManager, m *telemetry.Metrics) KeyManager {
	if m == nil {
		return km
	}
	return metered{km: km, m: m}
}

type metered struct {
	km KeyManager
	m  *telemetry.Metrics
}

func (k metered) GenerateKey(ctx context.Context) (_ crypto.Signer, err error) {
	defer k.m.StartCall(metricsKey, "generate_key_pair").Done(&err)
	defer k.m.StartCall(metricsKey, "generate_key").Done(&err)
	return k.km.GenerateKey(ctx)
}

func (k metered) SetAgentKey(ctx context.Context, key crypto.Signer) (err error) {
	defer k.m.StartCall(metricsKey, "store_private_key").Done(&err)
	return k.km.SetAgentKey(ctx, key)
}

func (k metered) AgentKey(ctx context.Context) (_ crypto.Signer, err error) {
	defer k.m.StartCall(metricsKey, "fetch_private_key").Done(&err)
	defer k.m.StartCall(metricsKey, "get_key").Done(&err)
	return k.km.AgentKey(ctx)
}

// AgentKeyFor counts as get_keys, the call with which SPIRE's agent looks
// for the key of its stored SVID among the plugin's keys.
func (k metered) AgentKeyFor(ctx context.Context, pub crypto.PublicKey) (_ crypto.Signer, err error) {
	defer k.m.StartCall(metricsKey, "fetch_private_key").Done(&err)
	defer k.m.StartCall(metricsKey, "get_keys").Done(&err)
	if f, ok := k.km.(interface {
		AgentKeyFor(context.Context, crypto.PublicKey) (crypto.Signer, error)
	}); ok {
		return f.AgentKeyFor(ctx, pub)
	}
	return k.km.AgentKey(ctx)
}
