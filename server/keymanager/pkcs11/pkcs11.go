// Package pkcs11 is the KeyManager "pkcs11": the CA's keys live in a
// PKCS#11 token (see package hsm) and every X.509-SVID and JWT-SVID is
// signed inside it. It adapts hsm.Token to keymanager.KeyManager and
// decodes its plugin_data.
package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"crypto"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// PluginName is the name of the plugin in the configuration.
const PluginName = "pkcs11"

// PluginData is the plugin_data block. Either URI or ModulePath with one
// token selector and one PIN source locates the token.
type PluginData struct {
	URI                string `hcl:"uri"`
	ModulePath         string `hcl:"module_path"`
	TokenLabel         string `hcl:"token_label"`
	TokenSerial        string `hcl:"token_serial"`
	SlotID             *int   `hcl:"slot_id"`
	PIN                string `hcl:"pin"`
	PINFile            string `hcl:"pin_file"`
	PINEnv             string `hcl:"pin_env"`
	KeyLabelPrefix     string `hcl:"key_label_prefix"`
	MaxSessions        int    `hcl:"max_sessions"`
	SessionWaitTimeout string `hcl:"session_wait_timeout"`
}

// ConfigFromPlugin decodes p's plugin_data into an hsm.Config, reporting
// mistakes at the file and line of the offending key. object, the one key
// a URI may name, is returned for the UpstreamAuthority.
func ConfigFromPlugin(p hclconf.Plugin) (cfg hsm.Config, object string, err error) {
	var d PluginData
	if err := p.DecodeData(&d); err != nil {
		return cfg, "", err
	}
	return BuildConfig(p, d)
}

// BuildConfig turns decoded plugin_data into an hsm.Config, for plugins
// (the UpstreamAuthority) that decode these keys next to their own.
func BuildConfig(p hclconf.Plugin, d PluginData) (cfg hsm.Config, object string, err error) {
	if d.URI != "" {
		if d.ModulePath != "" || d.TokenLabel != "" || d.TokenSerial != "" || d.SlotID != nil || d.PIN != "" || d.PINFile != "" || d.PINEnv != "" {
			return cfg, "", p.Errorf("uri", "give either uri or module_path/token_*/slot_id/pin*, not both")
		}
		u, err := hsm.ParseURI(d.URI)
		if err != nil {
			return cfg, "", p.Errorf("uri", "%v", err)
		}
		cfg, object = u.Config, u.Object
	} else {
		pin, err := hsm.ReadPIN(d.PIN, d.PINFile, d.PINEnv)
		if err != nil {
			return cfg, "", p.Errorf("pin", "%v", err)
		}
		cfg = hsm.Config{ModulePath: d.ModulePath, TokenLabel: d.TokenLabel, TokenSerial: d.TokenSerial, SlotID: d.SlotID, PIN: pin}
	}
	if cfg.ModulePath == "" {
		return cfg, "", p.Errorf("module_path", "is required (e.g. /usr/lib/softhsm/libsofthsm2.so), or give uri with module-path")
	}
	if d.MaxSessions < 2 {
		return cfg, "", p.Errorf("max_sessions", "must be set to at least 2 (crypto11's default would try to open 1023 sessions)")
	}
	cfg.MaxSessions = d.MaxSessions
	cfg.KeyLabelPrefix = d.KeyLabelPrefix
	if d.SessionWaitTimeout != "" {
		if cfg.SessionWaitTimeout, err = p.ParseDuration("session_wait_timeout", d.SessionWaitTimeout); err != nil {
			return cfg, "", err
		}
	}
	return cfg, object, nil
}

// FromPlugin builds the key manager from its configuration block.
func FromPlugin(p hclconf.Plugin, log *slog.Logger) (*KeyManager, error) {
	cfg, object, err := ConfigFromPlugin(p)
	if err != nil {
		return nil, err
	}
	if object != "" {
		return nil, p.Errorf("uri", "object=%q names one key, but the key manager holds several: drop it and use key_label_prefix", object)
	}
	cfg.Log = log
	km, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Label(), err)
	}
	return km, nil
}

// KeyManager keeps the CA's keys in a token, labelled KeyLabelPrefix + id.
type KeyManager struct {
	tok *hsm.Token
}

var _ keymanager.KeyManager = (*KeyManager)(nil)

// New opens the token and finds the keys already in it.
func New(cfg hsm.Config) (*KeyManager, error) {
	tok, err := hsm.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %w", wrap(err))
	}
	return &KeyManager{tok: tok}, nil
}

// GenerateKey creates a key inside the token under id, replacing the key
// that had it.
func (m *KeyManager) GenerateKey(ctx context.Context, id string, t keymanager.KeyType) (keymanager.Key, error) {
	if err := keymanager.CheckID(id); err != nil {
		return nil, fmt.Errorf("pkcs11: generate key: %w", err)
	}
	alg, err := algorithm(t)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: generate key %q: %w", id, err)
	}
	k, err := m.tok.GenerateKey(ctx, id, alg)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %w", wrap(err))
	}
	return &key{k: k, id: id, typ: t}, nil
}

// GetKey returns the key with the given id.
func (m *KeyManager) GetKey(_ context.Context, id string) (keymanager.Key, error) {
	k, err := m.tok.Key(id)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, fmt.Errorf("pkcs11: %w: %w", keymanager.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %w", wrap(err))
	}
	return newKey(k)
}

// GetKeys returns every key under the label prefix.
func (m *KeyManager) GetKeys(context.Context) ([]keymanager.Key, error) {
	ks, err := m.tok.Keys()
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %w", wrap(err))
	}
	out := make([]keymanager.Key, 0, len(ks))
	for _, k := range ks {
		kk, err := newKey(k)
		if err != nil {
			return nil, err
		}
		out = append(out, kk)
	}
	return out, nil
}

// Healthy reports, without I/O, whether the token is usable.
func (m *KeyManager) Healthy() bool { return m.tok.Healthy() }

// Ready probes the token; the server's readiness check calls it.
func (m *KeyManager) Ready(ctx context.Context) error {
	if err := m.tok.Ready(ctx); err != nil {
		return fmt.Errorf("pkcs11: %w", wrap(err))
	}
	return nil
}

// Close logs out of the token. It is idempotent.
func (m *KeyManager) Close() error { return m.tok.Close() }

// Token is the underlying token, for callers that also need EnsureKey.
func (m *KeyManager) Token() *hsm.Token { return m.tok }

func newKey(k *hsm.Key) (*key, error) {
	t, err := keymanager.KeyTypeOf(k.Public())
	if err != nil {
		return nil, fmt.Errorf("pkcs11: key %q: %w", k.Label(), err)
	}
	return &key{k: k, id: k.Label(), typ: t}, nil
}

type key struct {
	k   *hsm.Key
	id  string
	typ keymanager.KeyType
}

func (k *key) ID() string               { return k.id }
func (k *key) Type() keymanager.KeyType { return k.typ }
func (k *key) Public() crypto.PublicKey { return k.k.Public() }

func (k *key) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := k.k.Sign(r, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %w", wrap(err))
	}
	return sig, nil
}

func algorithm(t keymanager.KeyType) (hsm.Algorithm, error) {
	switch t {
	case keymanager.ECP256:
		return hsm.ECP256, nil
	case keymanager.ECP384:
		return hsm.ECP384, nil
	case keymanager.RSA2048:
		return hsm.RSA2048, nil
	case keymanager.RSA4096:
		return hsm.RSA4096, nil
	}
	return 0, fmt.Errorf("unsupported key type %s", t)
}

// unavailableError gives hsm.ErrUnavailable the gRPC code Unavailable, so
// an API handler that passes the status through tells agents to retry.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// GRPCStatus makes status.FromError / status.Code see Unavailable.
func (e *unavailableError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.err.Error())
}

func wrap(err error) error {
	if errors.Is(err, hsm.ErrUnavailable) {
		return &unavailableError{err: err}
	}
	return err
}
