package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// Algorithm is the type and size of a key generated in the token.
type Algorithm int

// Algorithms a token can generate.
const (
	ECP256 Algorithm = iota
	ECP384
	RSA2048
	RSA4096
)

// String names the algorithm as SPIRE's configuration does.
func (a Algorithm) String() string {
	switch a {
	case ECP256:
		return "ec-p256"
	case ECP384:
		return "ec-p384"
	case RSA2048:
		return "rsa-2048"
	case RSA4096:
		return "rsa-4096"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// entry is a cached key of one crypto11 context generation.
type entry struct {
	signer crypto11.Signer
	pub    crypto.PublicKey
}

// Token is a logged-in connection to one PKCS#11 token. Its methods are
// safe for concurrent use.
type Token struct {
	cfg Config
	log *slog.Logger
	// sem admits at most as many concurrent token operations as the
	// session pool holds, so a burst waits here (bounded by
	// SessionWaitTimeout) instead of failing in the pool.
	sem chan struct{}
	// genMu serialises key creation and deletion so a label never names two
	// keys.
	genMu sync.Mutex

	mu         sync.RWMutex
	ctx        *crypto11.Context // nil while unavailable
	keys       map[string]*entry // by full label, for the current ctx
	known      map[string]crypto.PublicKey
	gen        uint64 // bumped on every new ctx
	lastErr    error  // why the token is unavailable
	recovering bool
	closed     bool

	done chan struct{}
	wg   sync.WaitGroup
}

// Open configures crypto11 for the token, logs in once, finds the keys
// under cfg.KeyLabelPrefix and starts the health probe. A wrong PIN fails
// with ErrWrongPIN and is not retried.
func Open(cfg Config) (*Token, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Token{
		cfg:   cfg,
		log:   cfg.Log,
		sem:   make(chan struct{}, cfg.MaxSessions-1),
		known: make(map[string]crypto.PublicKey),
		done:  make(chan struct{}),
	}
	c, err := t.configure()
	if err != nil {
		return nil, err
	}
	keys, err := t.findKeys(c)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	t.ctx, t.keys, t.gen = c, keys, 1
	for label, e := range keys {
		t.known[label] = e.pub
	}
	t.register()
	t.log.Info("hsm: token opened", "config", cfg, "keys", len(keys))
	if cfg.HealthInterval > 0 {
		t.wg.Add(1)
		go t.probeLoop()
	}
	return t, nil
}

// configure opens a crypto11 context and turns its errors into ones that
// say what to fix.
func (t *Token) configure() (*crypto11.Context, error) {
	cfg := t.cfg
	if err := fileExists(cfg.ModulePath); err != nil {
		return nil, fmt.Errorf("hsm: module_path: PKCS#11 module %s cannot be loaded: %w (install the module, e.g. Debian package softhsm2 for /usr/lib/softhsm/libsofthsm2.so, or fix module_path)", cfg.ModulePath, err)
	}
	c, err := crypto11.Configure(&crypto11.Config{
		Path:            cfg.ModulePath,
		TokenLabel:      cfg.TokenLabel,
		TokenSerial:     cfg.TokenSerial,
		SlotNumber:      cfg.SlotID,
		Pin:             string(cfg.PIN),
		MaxSessions:     cfg.MaxSessions,
		PoolWaitTimeout: cfg.SessionWaitTimeout,
	})
	if err == nil {
		return c, nil
	}
	switch {
	case pinError(err):
		code, _ := p11Code(err)
		return nil, fmt.Errorf("%w: log in to %s refused (%s); not retried, since repeated failures lock the token: fix pin, pin_file or pin_env", ErrWrongPIN, cfg.tokenName(), code)
	case strings.Contains(err.Error(), "could not find PKCS#11 token"):
		return nil, fmt.Errorf("%w: no %s in module %s (tokens present: %s); fix token_label, token_serial or slot_id, or initialise the token (softhsm2-util --init-token)", ErrUnavailable, cfg.tokenName(), cfg.ModulePath, listTokens(cfg.ModulePath))
	case strings.Contains(err.Error(), "failed to open module"), strings.Contains(err.Error(), "failed to initialize module"):
		return nil, fmt.Errorf("hsm: module_path: %s is not a usable PKCS#11 module: %v", cfg.ModulePath, err)
	}
	return nil, fmt.Errorf("%w: open %s: %v", ErrUnavailable, cfg.tokenName(), err)
}

// findKeys loads every key pair whose label has the prefix.
func (t *Token) findKeys(c *crypto11.Context) (map[string]*entry, error) {
	signers, err := c.FindAllKeyPairs()
	if err != nil {
		return nil, fmt.Errorf("%w: list keys in %s: %v", ErrUnavailable, t.cfg.tokenName(), err)
	}
	keys := make(map[string]*entry)
	for _, s := range signers {
		a, err := c.GetAttribute(s, crypto11.CkaLabel)
		if err != nil {
			return nil, fmt.Errorf("%w: read key label in %s: %v", ErrUnavailable, t.cfg.tokenName(), err)
		}
		if a == nil {
			continue
		}
		label := string(a.Value)
		if !strings.HasPrefix(label, t.cfg.KeyLabelPrefix) {
			continue
		}
		if _, dup := keys[label]; dup {
			return nil, fmt.Errorf("hsm: %s holds two keys labelled %q; delete the one the server did not create (e.g. pkcs11-tool --delete-object)", t.cfg.tokenName(), label)
		}
		keys[label] = &entry{signer: s, pub: s.Public()}
	}
	return keys, nil
}

// current returns the live context and its generation, or why there is
// none.
func (t *Token) current() (*crypto11.Context, uint64, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return nil, 0, ErrClosed
	}
	if t.ctx == nil {
		return nil, 0, t.unavailableLocked()
	}
	return t.ctx, t.gen, nil
}

func (t *Token) unavailableLocked() error {
	if t.lastErr != nil {
		if errors.Is(t.lastErr, ErrUnavailable) || errors.Is(t.lastErr, ErrWrongPIN) || errors.Is(t.lastErr, ErrKeyChanged) {
			return fmt.Errorf("%w (%s: %v)", ErrUnavailable, t.cfg.tokenName(), t.lastErr)
		}
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, t.cfg.tokenName(), t.lastErr)
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, t.cfg.tokenName())
}

// acquire takes a slot in front of the session pool.
func (t *Token) acquire(ctx context.Context) error {
	select {
	case t.sem <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(t.cfg.SessionWaitTimeout)
	defer timer.Stop()
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-timer.C:
		return fmt.Errorf("%w: no PKCS#11 session free within %s (max_sessions %d); raise max_sessions or session_wait_timeout", ErrUnavailable, t.cfg.SessionWaitTimeout, t.cfg.MaxSessions)
	case <-ctx.Done():
		return ctx.Err()
	case <-t.done:
		return ErrClosed
	}
}

func (t *Token) release() { <-t.sem }

// fail records a token failure seen on generation gen and starts the
// recovery, unless a newer context already replaced that one.
func (t *Token) fail(gen uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || gen != t.gen || t.ctx == nil {
		return
	}
	t.log.Error("hsm: token unavailable; recovering", "token", t.cfg.tokenName(), "error", err)
	t.lastErr = err
	old := t.ctx
	t.ctx, t.keys = nil, nil
	t.startRecoveryLocked(old)
}

func (t *Token) startRecoveryLocked(old *crypto11.Context) {
	if t.recovering {
		return
	}
	t.recovering = true
	t.wg.Add(1)
	go t.recover(old)
}

// recover closes the broken context and configures again with backoff
// until the token is back with the same keys. A wrong PIN stops it.
func (t *Token) recover(old *crypto11.Context) {
	defer t.wg.Done()
	if old != nil {
		// Close waits for in-flight operations, which fail fast on a
		// broken token. Closing every context lets the module finalise,
		// so the next Configure sees the token afresh.
		_ = old.Close()
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		unlock := t.lockReopen()
		err := t.reopen()
		unlock()
		if err == nil {
			t.log.Info("hsm: token recovered", "token", t.cfg.tokenName(), "attempts", attempt)
			return
		}
		t.mu.Lock()
		t.lastErr = err
		if errors.Is(err, ErrWrongPIN) {
			t.recovering = false
			t.mu.Unlock()
			t.log.Error("hsm: token recovery stopped: the PIN is refused; restart with the right PIN", "token", t.cfg.tokenName())
			return
		}
		t.mu.Unlock()
		if t.resetModule() {
			continue
		}
		t.log.Warn("hsm: token still unavailable", "token", t.cfg.tokenName(), "attempt", attempt, "error", err)
		select {
		case <-t.done:
			t.mu.Lock()
			t.recovering = false
			t.mu.Unlock()
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// reopen configures a new context, finds the keys and checks that every
// key known before is there with the same public key.
func (t *Token) reopen() error {
	c, err := t.configure()
	if err != nil {
		return err
	}
	keys, err := t.findKeys(c)
	if err == nil {
		err = t.checkKnown(keys)
	}
	if err == nil {
		err = probe(keys)
	}
	if err != nil {
		_ = c.Close()
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return nil
	}
	t.ctx, t.keys, t.lastErr, t.recovering = c, keys, nil, false
	t.gen++
	return nil
}

func (t *Token) checkKnown(keys map[string]*entry) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for label, pub := range t.known {
		e, ok := keys[label]
		if !ok {
			return fmt.Errorf("%w: key %q is missing from %s", ErrUnavailable, label, t.cfg.tokenName())
		}
		if !publicEqual(e.pub, pub) {
			return fmt.Errorf("%w: key %q in %s is not the key it was", ErrKeyChanged, label, t.cfg.tokenName())
		}
	}
	return nil
}

// probe signs a fixed digest with one key: listing objects succeeds on a
// SoftHSM token whose storage is gone, using a key does not.
func probe(keys map[string]*entry) error {
	labels := make([]string, 0, len(keys))
	for l := range keys {
		labels = append(labels, l)
	}
	if len(labels) == 0 {
		return nil
	}
	sort.Strings(labels)
	e := keys[labels[0]]
	digest := sha256.Sum256([]byte("hsm health probe"))
	if _, err := e.signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		return fmt.Errorf("%w: probe signature with %q: %v", ErrUnavailable, labels[0], err)
	}
	return nil
}

// Healthy reports whether the token was usable at the last operation or
// probe. It does no I/O.
func (t *Token) Healthy() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return !t.closed && t.ctx != nil
}

// Ready probes the token now (one signature with a cached key) and returns
// nil when it is usable, or an error wrapping ErrUnavailable. A failed
// probe starts the recovery.
func (t *Token) Ready(ctx context.Context) error {
	_, gen, err := t.current()
	if err != nil {
		return err
	}
	if err := t.acquire(ctx); err != nil {
		return err
	}
	t.mu.RLock()
	keys := t.keys
	t.mu.RUnlock()
	err = probe(keys)
	t.release()
	if err != nil {
		t.fail(gen, err)
		return err
	}
	return nil
}

func (t *Token) probeLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			if t.Healthy() {
				ctx, cancel := context.WithTimeout(context.Background(), t.cfg.HealthInterval)
				_ = t.Ready(ctx)
				cancel()
			}
		}
	}
}

// Close logs out and releases the token. It is idempotent; keys handed out
// fail with ErrClosed afterwards.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	c := t.ctx
	t.ctx, t.keys = nil, nil
	close(t.done)
	t.mu.Unlock()
	t.unregister()
	t.wg.Wait()
	if c != nil {
		if err := c.Close(); err != nil {
			return fmt.Errorf("hsm: close: %w", err)
		}
	}
	return nil
}

// listTokens names the tokens a module offers, for the "token not found"
// error. It loads the module a second time only for that message.
func listTokens(modulePath string) string {
	p := pkcs11.New(modulePath)
	if p == nil {
		return "unknown"
	}
	defer p.Destroy()
	finalize := true
	if err := p.Initialize(); err != nil {
		if code, ok := p11Code(err); !ok || code != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			return "unknown"
		}
		// Another context in this process holds the module: leave it
		// initialised for them.
		finalize = false
	}
	if finalize {
		defer func() { _ = p.Finalize() }()
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return "unknown"
	}
	var names []string
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		names = append(names, fmt.Sprintf("%q (serial %s, slot %d)", ti.Label, ti.SerialNumber, s))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// algorithmOf returns the algorithm of a public key from the token.
func algorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECP256, nil
		case elliptic.P384():
			return ECP384, nil
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 4096:
			return RSA4096, nil
		}
	}
	return 0, fmt.Errorf("hsm: unsupported key %T", pub)
}
