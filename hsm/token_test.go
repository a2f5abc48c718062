package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/sim/softhsm"
)

func config(tok *softhsm.Token) hsm.Config {
	return hsm.Config{
		ModulePath:     tok.ModulePath,
		TokenLabel:     tok.Label,
		PIN:            hsm.PIN(tok.PIN),
		KeyLabelPrefix: "test-",
		MaxSessions:    8,
		HealthInterval: -1,
	}
}

func open(t *testing.T, cfg hsm.Config) *hsm.Token {
	t.Helper()
	tk, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = tk.Close() })
	return tk
}

func signVerify(k crypto.Signer) error {
	d := sha256.Sum256([]byte(fmt.Sprintf("msg %p", k)))
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		return errors.New("signature does not verify")
	}
	return nil
}

func TestKeysFoundAgainAndReused(t *testing.T) {
	tok := softhsm.NewToken(t)
	ctx := context.Background()
	cfg := config(tok)
	tk := open(t, cfg)
	k, err := tk.GenerateKey(ctx, "x509-CA-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := signVerify(k); err != nil {
		t.Fatal(err)
	}
	if err := tk.Close(); err != nil {
		t.Fatal(err)
	}

	// A second process start finds the key by label and reuses it.
	tk = open(t, cfg)
	keys, err := tk.Keys()
	if err != nil || len(keys) != 1 || keys[0].Label() != "x509-CA-A" {
		t.Fatalf("Keys after reopen = %v, %v; want the one key", keys, err)
	}
	if !keys[0].Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("reopened key has another public key")
	}
	again, err := tk.EnsureKey(ctx, "x509-CA-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("EnsureKey generated a new key although the label existed")
	}
	if _, err := tk.EnsureKey(ctx, "x509-CA-A", hsm.ECP384); err == nil {
		t.Fatal("EnsureKey accepted an existing key of another algorithm")
	}
	// Replacing leaves exactly one key under the label.
	repl, err := tk.GenerateKey(ctx, "x509-CA-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if repl.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("GenerateKey did not replace the key")
	}
	if err := signVerify(again); err == nil {
		t.Fatal("a handle to the replaced key still signs")
	}
	if err := tk.Close(); err != nil {
		t.Fatal(err)
	}
	tk = open(t, cfg) // Open refuses duplicate labels, so this also checks none
	if keys, _ := tk.Keys(); len(keys) != 1 || !keys[0].Public().(*ecdsa.PublicKey).Equal(repl.Public()) {
		t.Fatalf("after replace the token holds %d keys under the prefix, want only the new one", len(keys))
	}
	// Another prefix sees none of them.
	cfg.KeyLabelPrefix = "other-"
	if keys, _ := open(t, cfg).Keys(); len(keys) != 0 {
		t.Fatalf("prefix other- sees %d keys", len(keys))
	}
}

func TestConfigErrors(t *testing.T) {
	tok := softhsm.NewToken(t)
	good := config(tok)
	tests := []struct {
		name string
		edit func(*hsm.Config)
		want []string
		is   error
	}{
		{"missing token", func(c *hsm.Config) { c.TokenLabel = "no-such-token" }, []string{`"no-such-token"`, tok.Label, "token_label"}, hsm.ErrUnavailable},
		{"bad module path", func(c *hsm.Config) { c.ModulePath = "/nonexistent/libpkcs11.so" }, []string{"module_path", "/nonexistent/libpkcs11.so"}, nil},
		{"module not a PKCS#11 library", func(c *hsm.Config) { c.ModulePath = "/etc/hostname" }, []string{"module_path", "/etc/hostname"}, nil},
		{"max_sessions unset", func(c *hsm.Config) { c.MaxSessions = 0 }, []string{"max_sessions"}, nil},
		{"no token selector", func(c *hsm.Config) { c.TokenLabel = "" }, []string{"token_label"}, nil},
		{"two token selectors", func(c *hsm.Config) { c.TokenSerial = tok.Serial }, []string{"exactly one"}, nil},
		{"no PIN", func(c *hsm.Config) { c.PIN = "" }, []string{"pin_file"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			tk, err := hsm.Open(cfg)
			if err == nil {
				_ = tk.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if strings.Contains(err.Error(), tok.PIN) {
				t.Error("error shows the PIN")
			}
		})
	}
	t.Run("select by serial and slot", func(t *testing.T) {
		cfg := good
		cfg.TokenLabel, cfg.TokenSerial = "", tok.Serial
		tk := open(t, cfg)
		if _, err := tk.GenerateKey(context.Background(), "k", hsm.ECP256); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("key not found", func(t *testing.T) {
		tk := open(t, good)
		_, err := tk.Key("x509-CA-B")
		if !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("Key(missing) = %v, want ErrKeyNotFound", err)
		}
		for _, w := range []string{`"test-x509-CA-B"`, tok.Label, "key_label_prefix"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	})
}

func TestPINNeverShown(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := config(tok)
	var logs bytes.Buffer
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	tk := open(t, cfg)
	_ = tk.Close()
	shown := fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.PIN)
	cfg.Log.Info("config", "config", cfg, "pin", cfg.PIN)
	if strings.Contains(shown, tok.PIN) || strings.Contains(logs.String(), tok.PIN) {
		t.Fatalf("PIN shown:\n%s\n%s", shown, logs.String())
	}
	if !strings.Contains(logs.String(), tok.Label) {
		t.Fatalf("logs do not name the token: %s", logs.String())
	}
}

// TestWrongPIN runs Open in a fresh process: in a process already logged
// in to the token, crypto11 takes CKR_USER_ALREADY_LOGGED_IN as success,
// so any PIN would be accepted.
func TestWrongPIN(t *testing.T) {
	if os.Getenv("HSM_WRONG_PIN_CHILD") == "1" {
		return
	}
	tok := softhsm.NewToken(t)
	s := softhsm.Start(t)
	run := func(pin string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWrongPINChild$", "-test.count=1")
		cmd.Env = append(softhsm.ChildEnv(s), "HSM_WRONG_PIN_CHILD=1", "HSM_TOKEN="+tok.Label, "HSM_PIN="+pin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("000000")
	if err == nil {
		t.Fatalf("child with a wrong PIN succeeded:\n%s", out)
	}
	for _, w := range []string{"wrong PIN", "not retried", "pin_file", tok.Label, "attempts=1"} {
		if !strings.Contains(out, w) {
			t.Errorf("wrong-PIN output does not mention %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "000000") {
		t.Errorf("output shows the PIN:\n%s", out)
	}
	// The failure did not lock the token: the right PIN still works.
	if out, err := run(tok.PIN); err != nil {
		t.Fatalf("child with the right PIN failed:\n%s", out)
	}
}

func TestWrongPINChild(t *testing.T) {
	if os.Getenv("HSM_WRONG_PIN_CHILD") != "1" {
		t.Skip("runs only as TestWrongPIN's child process")
	}
	s := softhsm.Start(t)
	attempts := 0
	start := time.Now()
	var err error
	for attempts < 1 { // Open itself must not retry; one call here
		attempts++
		var tk *hsm.Token
		tk, err = hsm.Open(hsm.Config{ModulePath: s.ModulePath, TokenLabel: os.Getenv("HSM_TOKEN"), PIN: hsm.PIN(os.Getenv("HSM_PIN")), MaxSessions: 2})
		if err == nil {
			_ = tk.Close()
		}
	}
	if err != nil {
		if !errors.Is(err, hsm.ErrWrongPIN) {
			t.Fatalf("error does not wrap ErrWrongPIN: %v", err)
		}
		t.Fatalf("attempts=%d in %s: %v", attempts, time.Since(start).Round(time.Millisecond), err)
	}
}

func TestTokenRemovedAndRestored(t *testing.T) {
	tok := softhsm.NewToken(t)
	ctx := context.Background()
	cfg := config(tok)
	cfg.HealthInterval = 200 * time.Millisecond
	cfg.Log = slog.New(slog.NewTextHandler(tlog{t}, nil))
	tk := open(t, cfg)
	k, err := tk.GenerateKey(ctx, "x509-CA-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if !tk.Healthy() || tk.Ready(ctx) != nil {
		t.Fatal("fresh token not ready")
	}
	if err := tok.Remove(); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			_ = tok.Restore()
		}
	}()
	start := time.Now()
	err = signVerify(k)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("sign with the token removed = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("sign took %s to fail", d)
	}
	if tk.Healthy() || tk.Ready(ctx) == nil {
		t.Fatal("token reported ready while removed")
	}
	// Later signers fail at once, without touching the token.
	for range 20 {
		start := time.Now()
		if err := signVerify(k); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("sign while removed = %v", err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("sign while removed took %s", d)
		}
	}
	time.Sleep(500 * time.Millisecond) // let recovery fail a few times
	if tk.Healthy() {
		t.Fatal("token healthy while removed")
	}

	if err := tok.Restore(); err != nil {
		t.Fatal(err)
	}
	restored = true
	deadline := time.Now().Add(15 * time.Second)
	for !tk.Healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("token not healthy 15s after restore: %v", tk.Ready(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := tk.Ready(ctx); err != nil {
		t.Fatalf("Ready after recovery: %v", err)
	}
	// The key handed out before the removal signs again.
	if err := signVerify(k); err != nil {
		t.Fatalf("sign after recovery: %v", err)
	}
}

func TestIdleTokenRemovalTurnsUnready(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := config(tok)
	cfg.HealthInterval = 100 * time.Millisecond
	tk := open(t, cfg)
	if _, err := tk.GenerateKey(context.Background(), "JWT-Signer-A", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	if err := tok.Remove(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tok.Restore() }()
	deadline := time.Now().Add(5 * time.Second)
	for tk.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("idle token still healthy 5s after removal")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentSigners(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := config(tok)
	cfg.MaxSessions = 8
	tk := open(t, cfg)
	k, err := tk.GenerateKey(context.Background(), "x509-CA-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	const signers, each = 32, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range signers {
		wg.Go(func() {
			for range each {
				if err := signVerify(k); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d signatures failed; first: %v", len(errs), signers*each, errs[0])
	}
}

func TestCloseIdempotent(t *testing.T) {
	tok := softhsm.NewToken(t)
	tk, err := hsm.Open(config(tok))
	if err != nil {
		t.Fatal(err)
	}
	k, err := tk.GenerateKey(context.Background(), "k", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := tk.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if err := signVerify(k); !errors.Is(err, hsm.ErrClosed) {
		t.Fatalf("sign after Close = %v, want ErrClosed", err)
	}
	if tk.Healthy() {
		t.Fatal("closed token healthy")
	}
}

// tlog sends log lines to the test log.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestRecoveryWithOtherContextOpen: another token on the same module keeps
// the module initialised, so recovery cannot rely on a fresh C_Initialize.
func TestRecoveryWithOtherContextOpen(t *testing.T) {
	other := softhsm.NewToken(t)
	tok := softhsm.NewToken(t)
	ctx := context.Background()
	ot := open(t, config(other))
	ok, err := ot.GenerateKey(ctx, "root", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	tk := open(t, config(tok))
	k, err := tk.GenerateKey(ctx, "x509-CA-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := signVerify(k); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("sign with the token removed = %v", err)
	}
	// The removed token's recovery may already have reset the module,
	// which suspends the other token until its own recovery logs in again
	// (module.go): it must serve again within a bound, not at this instant.
	if err := signEventually(ok, 15*time.Second); err != nil {
		t.Fatalf("the other token failed: %v", err)
	}
	if err := tok.Restore(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !tk.Healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("token not healthy 15s after restore: %v", tk.Ready(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := signVerify(k); err != nil {
		t.Fatalf("sign after recovery: %v", err)
	}
	if err := signEventually(ok, 15*time.Second); err != nil {
		t.Fatalf("the other token failed after the recovery: %v", err)
	}
}

// signEventually retries signVerify while k's token is unavailable (being
// recovered after a module reset), up to d; any other error ends it.
func signEventually(k crypto.Signer, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := signVerify(k)
		if err == nil || !errors.Is(err, hsm.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
