// Package softhsm creates SoftHSM2 tokens in a directory of their own (with
// their own SOFTHSM2_CONF) for tests, the demo and benchmarks, and can take
// a token away and give it back to simulate an HSM that disappears at run
// time.
//
// SoftHSM reads SOFTHSM2_CONF when the module is initialised, and a process
// shares one initialised module, so a process uses one Sim: tests call
// Start, which creates it once and sets the environment variable.
package softhsm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// modulePaths are where Debian and other distributions install the module.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// ModulePath returns the SoftHSM2 PKCS#11 module's path, or an error
// saying what to install.
func ModulePath() (string, error) {
	if p := os.Getenv("SOFTHSM2_MODULE"); p != "" {
		return p, nil
	}
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("softhsm: libsofthsm2.so not found (apt-get install softhsm2, or set SOFTHSM2_MODULE)")
}

// Available reports why SoftHSM2 cannot be used here, or nil.
func Available() error {
	if _, err := ModulePath(); err != nil {
		return err
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return errors.New("softhsm: softhsm2-util not found (apt-get install softhsm2)")
	}
	return nil
}

// Sim is a SoftHSM2 configuration in a directory: Dir/softhsm2.conf and
// the tokens under Dir/tokens.
type Sim struct {
	Dir        string
	Conf       string // the file SOFTHSM2_CONF must name
	ModulePath string

	mu sync.Mutex // serialises token creation, which diffs Dir/tokens
}

// New writes a SoftHSM2 configuration in dir (created if needed). It does
// not set SOFTHSM2_CONF; see Env and Start.
func New(dir string) (*Sim, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	mod, _ := ModulePath()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	tokens := filepath.Join(abs, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := filepath.Join(abs, "softhsm2.conf")
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	return &Sim{Dir: abs, Conf: conf, ModulePath: mod}, nil
}

// Env is the environment entry that points SoftHSM at this Sim.
func (s *Sim) Env() string { return "SOFTHSM2_CONF=" + s.Conf }

// Token is an initialised SoftHSM2 token.
type Token struct {
	Label      string
	PIN        string
	SOPIN      string
	ModulePath string
	// PINFile holds PIN (mode 0600), for configurations that take pin_file.
	PINFile string
	// Dir is the token's storage directory; moving it away removes the
	// token from SoftHSM's view.
	Dir string
	// Serial is the token's serial number.
	Serial string

	removed string
}

// InitToken initialises a new token. An empty pin gets a random one.
func (s *Sim) InitToken(label, pin string) (*Token, error) {
	if pin == "" {
		pin = randomPIN()
	}
	so := randomPIN()
	s.mu.Lock()
	defer s.mu.Unlock()
	tokens := filepath.Join(s.Dir, "tokens")
	before, err := dirSet(tokens)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so)
	cmd.Env = append(os.Environ(), s.Env())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("softhsm: init token %q: %v: %s", label, err, bytes.TrimSpace(redact(out, pin, so)))
	}
	after, err := dirSet(tokens)
	if err != nil {
		return nil, err
	}
	var dir string
	for name := range after {
		if !before[name] {
			dir = filepath.Join(tokens, name)
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("softhsm: init token %q: no new token directory in %s", label, tokens)
	}
	pinFile := filepath.Join(s.Dir, label+".pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	serial, err := s.serial(label)
	if err != nil {
		return nil, err
	}
	return &Token{Label: label, PIN: pin, SOPIN: so, ModulePath: s.ModulePath, PINFile: pinFile, Dir: dir, Serial: serial}, nil
}

// serial reads the token's serial number from softhsm2-util --show-slots.
func (s *Sim) serial(label string) (string, error) {
	cmd := exec.Command("softhsm2-util", "--show-slots")
	cmd.Env = append(os.Environ(), s.Env())
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("softhsm: show slots: %w", err)
	}
	var serial string
	for _, line := range bytes.Split(out, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if v, ok := bytes.CutPrefix(line, []byte("Serial number:")); ok {
			serial = string(bytes.TrimSpace(v))
		}
		if v, ok := bytes.CutPrefix(line, []byte("Label:")); ok && string(bytes.TrimSpace(v)) == label {
			return serial, nil
		}
	}
	return "", fmt.Errorf("softhsm: token %q not in softhsm2-util --show-slots", label)
}

// Remove moves the token's directory away, as if the HSM were unplugged.
func (t *Token) Remove() error {
	if t.removed != "" {
		return errors.New("softhsm: token already removed")
	}
	// Outside the token directory: SoftHSM finds tokens in every
	// subdirectory of it, whatever their names.
	away := filepath.Join(filepath.Dir(filepath.Dir(t.Dir)), "removed-"+filepath.Base(t.Dir))
	if err := os.Rename(t.Dir, away); err != nil {
		return fmt.Errorf("softhsm: remove token: %w", err)
	}
	t.removed = away
	return nil
}

// Restore puts a removed token back.
func (t *Token) Restore() error {
	if t.removed == "" {
		return errors.New("softhsm: token not removed")
	}
	if err := os.Rename(t.removed, t.Dir); err != nil {
		return fmt.Errorf("softhsm: restore token: %w", err)
	}
	t.removed = ""
	return nil
}

func dirSet(dir string) (map[string]bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	set := make(map[string]bool, len(ents))
	for _, e := range ents {
		set[e.Name()] = true
	}
	return set, nil
}

func randomPIN() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(out []byte, secrets ...string) []byte {
	for _, s := range secrets {
		out = bytes.ReplaceAll(out, []byte(s), []byte("[redacted]"))
	}
	return out
}
