package hsm

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ThalesGroup/crypto11"
)

// Key is a key pair in the token. It stays valid across a recovery of the
// token: it is found again by label, and its public key checked.
type Key struct {
	t     *Token
	label string // full label, prefix included
	pub   crypto.PublicKey
	alg   Algorithm
}

var _ crypto.Signer = (*Key)(nil)

// Label is the key's label in the token without the configured prefix.
func (k *Key) Label() string { return strings.TrimPrefix(k.label, k.t.cfg.KeyLabelPrefix) }

// Algorithm is the key's type and size.
func (k *Key) Algorithm() Algorithm { return k.alg }

// Public returns the public half, read once from the token.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign signs digest inside the token (ECDSA signatures are ASN.1 DER, RSA
// PKCS #1 v1.5 or PSS by opts). It waits at most SessionWaitTimeout for a
// session. A failure of the token returns an error wrapping ErrUnavailable
// at once and starts the recovery; while it runs, Sign fails fast.
func (k *Key) Sign(rnd io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), rnd, digest, opts)
}

// SignContext is Sign with a context bounding the wait for a session.
func (k *Key) SignContext(ctx context.Context, rnd io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	t := k.t
	if err := t.acquire(ctx); err != nil {
		return nil, fmt.Errorf("hsm: sign with %q: %w", k.label, err)
	}
	defer t.release()
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return nil, fmt.Errorf("hsm: sign with %q: %w", k.label, ErrClosed)
	}
	if t.ctx == nil {
		err := t.unavailableLocked()
		t.mu.RUnlock()
		return nil, fmt.Errorf("hsm: sign with %q: %w", k.label, err)
	}
	e, gen := t.keys[k.label], t.gen
	t.mu.RUnlock()
	if e == nil {
		return nil, fmt.Errorf("hsm: sign with %q: %w in %s", k.label, ErrKeyNotFound, t.cfg.tokenName())
	}
	if !publicEqual(e.pub, k.pub) {
		return nil, fmt.Errorf("hsm: sign with %q: the label now names another key (replaced by GenerateKey)", k.label)
	}
	sig, err := e.signer.Sign(rnd, digest, opts)
	if err != nil {
		if requestError(err) {
			return nil, fmt.Errorf("hsm: sign with %q: %w", k.label, err)
		}
		t.fail(gen, err)
		return nil, fmt.Errorf("hsm: sign with %q: %w: %v", k.label, ErrUnavailable, err)
	}
	return sig, nil
}

// Key returns the cached key with the given label (prefix excluded), or an
// error wrapping ErrKeyNotFound.
func (t *Token) Key(label string) (*Key, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return nil, ErrClosed
	}
	full := t.cfg.KeyLabelPrefix + label
	e, ok := t.keys[full]
	if !ok {
		if pub, ok := t.known[full]; ok && t.ctx == nil {
			// Known from before the token went away: hand it out, it
			// will sign again once the token is back.
			return t.newKey(full, pub)
		}
		if t.ctx == nil {
			return nil, t.unavailableLocked()
		}
		return nil, fmt.Errorf("%w: no key labelled %q in %s (check key_label_prefix %q, or let the server generate it)", ErrKeyNotFound, full, t.cfg.tokenName(), t.cfg.KeyLabelPrefix)
	}
	return t.newKey(full, e.pub)
}

func (t *Token) newKey(full string, pub crypto.PublicKey) (*Key, error) {
	alg, err := algorithmOf(pub)
	if err != nil {
		return nil, fmt.Errorf("hsm: key %q: %w", full, err)
	}
	return &Key{t: t, label: full, pub: pub, alg: alg}, nil
}

// Keys returns every key under the prefix, sorted by label.
func (t *Token) Keys() ([]*Key, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return nil, ErrClosed
	}
	labels := make([]string, 0, len(t.known))
	for l := range t.known {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	out := make([]*Key, 0, len(labels))
	for _, l := range labels {
		k, err := t.newKey(l, t.known[l])
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// EnsureKey returns the key labelled label, generating it in the token
// only when no key has that label: an existing key is reused, never
// duplicated. An existing key of another algorithm is an error.
func (t *Token) EnsureKey(ctx context.Context, label string, alg Algorithm) (*Key, error) {
	t.genMu.Lock()
	defer t.genMu.Unlock()
	k, err := t.Key(label)
	switch {
	case err == nil:
		if k.alg != alg {
			return nil, fmt.Errorf("hsm: key %q in %s is %s, not %s; delete it or configure its type", k.label, t.cfg.tokenName(), k.alg, alg)
		}
		return k, nil
	case errors.Is(err, ErrKeyNotFound):
		return t.generateLocked(ctx, label, alg)
	default:
		return nil, err
	}
}

// GenerateKey creates a new key pair inside the token (sensitive, not
// extractable) under label, deleting any key that had the label first so
// that a label never names two keys. Keys handed out earlier for the label
// stop signing.
func (t *Token) GenerateKey(ctx context.Context, label string, alg Algorithm) (*Key, error) {
	t.genMu.Lock()
	defer t.genMu.Unlock()
	return t.generateLocked(ctx, label, alg)
}

func (t *Token) generateLocked(ctx context.Context, label string, alg Algorithm) (*Key, error) {
	if label == "" {
		return nil, errors.New("hsm: generate key: empty label")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: generate key %q: %w", label, err)
	}
	full := t.cfg.KeyLabelPrefix + label
	c, gen, err := t.current()
	if err != nil {
		return nil, fmt.Errorf("hsm: generate key %q: %w", full, err)
	}
	if err := t.acquire(ctx); err != nil {
		return nil, fmt.Errorf("hsm: generate key %q: %w", full, err)
	}
	defer t.release()
	// Delete whatever has the label, including keys of an earlier run
	// that are not in the cache.
	old, err := c.FindKeyPairs(nil, []byte(full))
	if err != nil {
		t.fail(gen, err)
		return nil, fmt.Errorf("hsm: generate key %q: find old key: %w: %v", full, ErrUnavailable, err)
	}
	for _, o := range old {
		if err := o.Delete(); err != nil {
			t.fail(gen, err)
			return nil, fmt.Errorf("hsm: generate key %q: delete old key: %w: %v", full, ErrUnavailable, err)
		}
	}
	t.mu.Lock()
	delete(t.known, full)
	if t.gen == gen && t.keys != nil {
		delete(t.keys, full)
	}
	t.mu.Unlock()

	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("hsm: generate key %q: %w", full, err)
	}
	var s crypto11.Signer
	switch alg {
	case ECP256:
		s, err = c.GenerateECDSAKeyPairWithLabel(id, []byte(full), elliptic.P256())
	case ECP384:
		s, err = c.GenerateECDSAKeyPairWithLabel(id, []byte(full), elliptic.P384())
	case RSA2048:
		s, err = c.GenerateRSAKeyPairWithLabel(id, []byte(full), 2048)
	case RSA4096:
		s, err = c.GenerateRSAKeyPairWithLabel(id, []byte(full), 4096)
	default:
		return nil, fmt.Errorf("hsm: generate key %q: unsupported algorithm %s", full, alg)
	}
	if err != nil {
		t.fail(gen, err)
		return nil, fmt.Errorf("hsm: generate key %q in %s: %w: %v", full, t.cfg.tokenName(), ErrUnavailable, err)
	}
	e := &entry{signer: s, pub: s.Public()}
	t.mu.Lock()
	t.known[full] = e.pub
	if t.gen == gen && t.keys != nil {
		t.keys[full] = e
	}
	t.mu.Unlock()
	t.log.Info("hsm: generated key", "label", full, "algorithm", alg.String())
	return t.newKey(full, e.pub)
}

// DeleteKey removes the key pair labelled label from the token.
func (t *Token) DeleteKey(ctx context.Context, label string) error {
	t.genMu.Lock()
	defer t.genMu.Unlock()
	full := t.cfg.KeyLabelPrefix + label
	c, gen, err := t.current()
	if err != nil {
		return fmt.Errorf("hsm: delete key %q: %w", full, err)
	}
	if err := t.acquire(ctx); err != nil {
		return fmt.Errorf("hsm: delete key %q: %w", full, err)
	}
	defer t.release()
	old, err := c.FindKeyPairs(nil, []byte(full))
	if err != nil {
		t.fail(gen, err)
		return fmt.Errorf("hsm: delete key %q: %w: %v", full, ErrUnavailable, err)
	}
	for _, o := range old {
		if err := o.Delete(); err != nil {
			return fmt.Errorf("hsm: delete key %q: %w", full, err)
		}
	}
	t.mu.Lock()
	delete(t.known, full)
	if t.gen == gen && t.keys != nil {
		delete(t.keys, full)
	}
	t.mu.Unlock()
	return nil
}
