// Package pkcs11 is the UpstreamAuthority "pkcs11": a long-lived root key
// (and its self-signed certificate) lives in a PKCS#11 token and signs the
// server's short-lived intermediate CA, whose key stays in the server's
// KeyManager (usually "memory"). The token then signs a few times a day,
// while SVIDs are signed in process at full speed.
package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 key identifier method, not a security use
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	kmpkcs11 "github.com/spiffe-hw/spire-hw/server/keymanager/pkcs11"
)

// Defaults for the root.
const (
	DefaultKeyLabel = "upstream-root"
	DefaultRootTTL  = 5 * 365 * 24 * time.Hour
)

const backdate = 10 * time.Second

// Config configures the Authority.
type Config struct {
	HSM hsm.Config
	// KeyLabel labels the root key and its certificate in the token.
	KeyLabel string
	// CreateRoot lets New generate the root key (in the token) and its
	// certificate when the label is free; otherwise a missing key is an
	// error.
	CreateRoot bool
	// RootTTL is the lifetime of a root certificate New creates.
	RootTTL time.Duration
	// RootSubject is the subject of a root New creates; empty means
	// O=SPIFFE, CN=<key label>.
	RootSubject pkix.Name
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives renewal events; nil discards them.
	Log *slog.Logger
}

// Authority signs intermediate CAs with the root key in the token.
type Authority struct {
	tok *hsm.Token
	key *hsm.Key
	cfg Config
	now func() time.Time

	mu   sync.Mutex
	root *x509.Certificate
	// prev is the root certificate renewal replaced, published next to
	// the new one until it expires.
	prev *x509.Certificate
	// warned is set once the operator was told an imported root nears
	// its end.
	warned bool
}

var _ upstream.Authority = (*Authority)(nil)

// PluginData is the plugin_data block: the KeyManager "pkcs11" keys plus
// the root's.
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
	KeyLabel           string `hcl:"key_label"`
	CreateRoot         bool   `hcl:"create_root"`
	RootTTL            string `hcl:"root_ttl"`
}

// FromPlugin builds the Authority from its configuration block: the
// KeyManager "pkcs11" keys (uri or module_path, token_*, pin*,
// max_sessions, ...) plus key_label, create_root and root_ttl. A uri's
// object names the root key.
func FromPlugin(p hclconf.Plugin, log *slog.Logger) (*Authority, error) {
	var own PluginData
	if err := p.DecodeData(&own); err != nil {
		return nil, err
	}
	cfg, object, err := kmpkcs11.BuildConfig(p, kmpkcs11.PluginData{
		URI: own.URI, ModulePath: own.ModulePath, TokenLabel: own.TokenLabel, TokenSerial: own.TokenSerial,
		SlotID: own.SlotID, PIN: own.PIN, PINFile: own.PINFile, PINEnv: own.PINEnv,
		KeyLabelPrefix: own.KeyLabelPrefix, MaxSessions: own.MaxSessions, SessionWaitTimeout: own.SessionWaitTimeout,
	})
	if err != nil {
		return nil, err
	}
	c := Config{HSM: cfg, KeyLabel: own.KeyLabel, CreateRoot: own.CreateRoot, Log: log}
	c.HSM.Log = log
	if object != "" {
		if own.KeyLabel != "" && own.KeyLabel != object {
			return nil, p.Errorf("key_label", "conflicts with the uri's object=%q", object)
		}
		c.KeyLabel = object
	}
	if own.RootTTL != "" {
		if c.RootTTL, err = p.ParseDuration("root_ttl", own.RootTTL); err != nil {
			return nil, err
		}
	}
	a, err := New(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Label(), err)
	}
	return a, nil
}

// New opens the token, finds the root key and certificate (creating them
// when CreateRoot allows) and checks that they belong together.
func New(cfg Config) (*Authority, error) {
	if cfg.KeyLabel == "" {
		cfg.KeyLabel = DefaultKeyLabel
	}
	if cfg.RootTTL == 0 {
		cfg.RootTTL = DefaultRootTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	tok, err := hsm.Open(cfg.HSM)
	if err != nil {
		return nil, fmt.Errorf("upstream: pkcs11: %w", err)
	}
	a, err := setup(tok, cfg)
	if err != nil {
		_ = tok.Close()
		return nil, err
	}
	return a, nil
}

func setup(tok *hsm.Token, cfg Config) (*Authority, error) {
	ctx := context.Background()
	var key *hsm.Key
	var err error
	if cfg.CreateRoot {
		key, err = tok.EnsureKey(ctx, cfg.KeyLabel, hsm.ECP256)
	} else {
		key, err = tok.Key(cfg.KeyLabel)
		if errors.Is(err, hsm.ErrKeyNotFound) {
			err = fmt.Errorf("%w; generate the root key in the token, or set create_root = true", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("upstream: pkcs11: root key: %w", err)
	}
	root, err := tok.Certificate(cfg.KeyLabel)
	if err != nil {
		return nil, fmt.Errorf("upstream: pkcs11: root certificate: %w", err)
	}
	now := cfg.Now()
	if root != nil {
		if !publicEqual(key.Public(), root.PublicKey) {
			return nil, fmt.Errorf("upstream: pkcs11: the certificate labelled %q is not for the key labelled %q: the token was changed; restore it or delete both", cfg.KeyLabel, cfg.KeyLabel)
		}
		if !now.Before(root.NotAfter) {
			if !cfg.CreateRoot {
				return nil, fmt.Errorf("upstream: pkcs11: root certificate %q expired at %s; set create_root = true to issue a new one", cfg.KeyLabel, root.NotAfter)
			}
			root = nil
		}
	}
	if root == nil {
		if !cfg.CreateRoot {
			return nil, fmt.Errorf("upstream: pkcs11: no certificate labelled %q next to the root key; import one, or set create_root = true", cfg.KeyLabel)
		}
		if root, err = selfSign(key, cfg, now); err != nil {
			return nil, err
		}
		if err := tok.StoreCertificate(ctx, cfg.KeyLabel, root); err != nil {
			return nil, fmt.Errorf("upstream: pkcs11: %w", err)
		}
	}
	return &Authority{tok: tok, key: key, root: root, cfg: cfg, now: cfg.Now}, nil
}

func selfSign(key *hsm.Key, cfg Config, now time.Time) (*x509.Certificate, error) {
	subject := cfg.RootSubject
	if subject.String() == "" {
		subject = pkix.Name{Organization: []string{"SPIFFE"}, CommonName: cfg.KeyLabel}
	}
	serial, ski, err := serialAndKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("upstream: pkcs11: root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(cfg.RootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("upstream: pkcs11: self-sign root: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Root is the root certificate published as the trust anchor (the newest,
// after a renewal).
func (a *Authority) Root() *x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.root
}

// renewWindow is how long before the root's end it is renewed: a sixth of
// its lifetime, and never less than two intermediate lifetimes, so that the
// new root is in every bundle well before an intermediate needs it.
func (a *Authority) renewWindow(ttl time.Duration) time.Duration {
	// Capped at half the root's life, so that a renewed root is not at
	// once due again when intermediates live nearly as long as roots.
	return min(max(a.cfg.RootTTL/6, 2*ttl), a.cfg.RootTTL/2)
}

// currentRoots renews the root when it nears its end and returns the root
// to sign with and the roots to publish. The root key stays: a renewed
// root certificate has the key and subject of the old, so certificates
// signed under either chain to both, and agents holding only the old root
// keep verifying until it expires. A root imported by the operator
// (create_root = false) is replaced only by a later certificate for the
// same key that the operator imports under its label; until then its end
// is logged.
func (a *Authority) currentRoots(ctx context.Context, ttl time.Duration, now time.Time) (*x509.Certificate, []*x509.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.After(a.root.NotAfter.Add(-a.renewWindow(ttl))) {
		if err := a.renew(ctx, now); err != nil {
			// The current root still signs until its end: a token that
			// cannot store the renewal now must not stop CA rotation.
			// The next mint tries again.
			a.cfg.Log.Error("upstream: pkcs11: root renewal failed; signing with the current root", "label", a.cfg.KeyLabel, "not_after", a.root.NotAfter, "error", err)
		}
	}
	roots := []*x509.Certificate{a.root}
	if a.prev != nil && now.Before(a.prev.NotAfter) {
		roots = append(roots, a.prev)
	}
	return a.root, roots, nil
}

// renew replaces a.root with a later certificate for the same key: one it
// issues (create_root), or one the operator imported into the token under
// the root's label. Call with a.mu held.
func (a *Authority) renew(ctx context.Context, now time.Time) error {
	if !a.cfg.CreateRoot {
		imported, err := a.tok.Certificate(a.cfg.KeyLabel)
		if err != nil {
			return err
		}
		if imported != nil && imported.NotAfter.After(a.root.NotAfter) && publicEqual(a.key.Public(), imported.PublicKey) {
			a.cfg.Log.Info("upstream: pkcs11: using the renewed root certificate found in the token",
				"label", a.cfg.KeyLabel, "old_not_after", a.root.NotAfter, "not_after", imported.NotAfter)
			a.prev, a.root, a.warned = a.root, imported, false
			return nil
		}
		if !a.warned {
			a.warned = true
			a.cfg.Log.Warn("upstream: pkcs11: the root certificate nears its end; import a renewed one for the same key under the same label (intermediates are cut short to its end until then)",
				"label", a.cfg.KeyLabel, "not_after", a.root.NotAfter)
		}
		return nil
	}
	renewed, err := renewRoot(a.key, a.root, a.cfg, now)
	if err != nil {
		return err
	}
	if err := a.tok.StoreCertificate(ctx, a.cfg.KeyLabel, renewed); err != nil {
		return fmt.Errorf("upstream: pkcs11: store renewed root: %w", err)
	}
	a.cfg.Log.Info("upstream: pkcs11: root certificate renewed with the same key",
		"label", a.cfg.KeyLabel, "old_not_after", a.root.NotAfter, "not_after", renewed.NotAfter)
	a.prev, a.root = a.root, renewed
	return nil
}

// renewRoot issues a new certificate for the root key, with old's subject.
func renewRoot(key *hsm.Key, old *x509.Certificate, cfg Config, now time.Time) (*x509.Certificate, error) {
	cfg.RootSubject = old.Subject
	return selfSign(key, cfg, now)
}

// MintX509CA signs csrDER as an intermediate CA with the root key in the
// token. The CSR must carry exactly one URI SAN, the trust domain's ID.
func (a *Authority) MintX509CA(ctx context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: %w", err)
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: ttl %s is not positive", ttl)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: CSR signature: %w", err)
	}
	if len(csr.URIs) != 1 {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: CSR has %d URI SANs, want exactly one trust domain ID", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: CSR URI SAN: %w", err)
	}
	if id.Path() != "" {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: CSR URI SAN %q is not a trust domain ID", id)
	}
	now := a.now()
	root, roots, err := a.currentRoots(ctx, ttl, now)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	if !notAfter.After(now) {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: root expired at %s", root.NotAfter)
	}
	serial, ski, err := serialAndKeyID(csr.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		URIs:                  csr.URIs,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
	}
	// CreateCertificate checks the token's signature before returning.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, csr.PublicKey, a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: pkcs11: mint: %w", err)
	}
	return []*x509.Certificate{cert}, roots, nil
}

// Healthy reports, without I/O, whether the token is usable.
func (a *Authority) Healthy() bool { return a.tok.Healthy() }

// Ready probes the token.
func (a *Authority) Ready(ctx context.Context) error { return a.tok.Ready(ctx) }

// Close logs out of the token. It is idempotent.
func (a *Authority) Close() error { return a.tok.Close() }

func serialAndKeyID(pub any) (*big.Int, []byte, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	serial, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, nil, err
	}
	serial.Add(serial, big.NewInt(1)) // never zero
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes) //nolint:gosec // see import
	return serial, sum[:], nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
