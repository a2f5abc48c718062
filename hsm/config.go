package hsm

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Defaults for the optional Config fields.
const (
	DefaultSessionWaitTimeout = 5 * time.Second
	DefaultHealthInterval     = 5 * time.Second
)

// PIN is a token PIN. It prints, formats and logs as "[redacted]" so that
// no configuration dump or log line carries it.
type PIN string

// String hides the PIN.
func (PIN) String() string { return "[redacted]" }

// GoString hides the PIN from %#v.
func (PIN) GoString() string { return `hsm.PIN("[redacted]")` }

// LogValue hides the PIN from log/slog.
func (PIN) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText hides the PIN from encoders.
func (PIN) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// ReadPIN returns the PIN from exactly one of its three sources: the value
// itself, a file (trailing newline ignored) or an environment variable.
// Errors name the setting (pin, pin_file, pin_env) but never the PIN.
func ReadPIN(pin, pinFile, pinEnv string) (PIN, error) {
	n := 0
	for _, s := range []string{pin, pinFile, pinEnv} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return "", errors.New("hsm: no PIN: set one of pin, pin_file or pin_env")
	case n > 1:
		return "", errors.New("hsm: set only one of pin, pin_file and pin_env")
	case pin != "":
		return PIN(pin), nil
	case pinFile != "":
		b, err := os.ReadFile(pinFile)
		if err != nil {
			return "", fmt.Errorf("hsm: pin_file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", fmt.Errorf("hsm: pin_file %s is empty", pinFile)
		}
		return PIN(p), nil
	default:
		p, ok := os.LookupEnv(pinEnv)
		if !ok || p == "" {
			return "", fmt.Errorf("hsm: pin_env: environment variable %s is not set", pinEnv)
		}
		return PIN(p), nil
	}
}

// Config says which token to open and how.
type Config struct {
	// ModulePath is the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so.
	ModulePath string
	// Exactly one of TokenLabel, TokenSerial and SlotID selects the token.
	TokenLabel  string
	TokenSerial string
	SlotID      *int
	PIN         PIN
	// KeyLabelPrefix is put in front of every key label, so several
	// servers (or tests) can share a token without seeing each other's keys.
	KeyLabelPrefix string
	// MaxSessions bounds the PKCS#11 sessions opened (one is kept for the
	// login); it must be at least 2. It is required because crypto11's
	// default tries to open 1023 sessions.
	MaxSessions int
	// SessionWaitTimeout bounds how long a signer queues for a session
	// before failing with ErrUnavailable. Zero means
	// DefaultSessionWaitTimeout.
	SessionWaitTimeout time.Duration
	// HealthInterval is how often an idle token is probed, so Healthy turns
	// false even when nothing signs. Zero means DefaultHealthInterval;
	// negative disables the probe.
	HealthInterval time.Duration
	// Log receives state changes (never the PIN). Nil discards.
	Log *slog.Logger
}

// LogValue describes the configuration for logs without the PIN.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("module_path", c.ModulePath)}
	switch {
	case c.TokenLabel != "":
		attrs = append(attrs, slog.String("token_label", c.TokenLabel))
	case c.TokenSerial != "":
		attrs = append(attrs, slog.String("token_serial", c.TokenSerial))
	case c.SlotID != nil:
		attrs = append(attrs, slog.Int("slot_id", *c.SlotID))
	}
	attrs = append(attrs, slog.String("key_label_prefix", c.KeyLabelPrefix), slog.Int("max_sessions", c.MaxSessions))
	return slog.GroupValue(attrs...)
}

// tokenName names the token for error messages.
func (c Config) tokenName() string {
	switch {
	case c.TokenLabel != "":
		return fmt.Sprintf("token %q", c.TokenLabel)
	case c.TokenSerial != "":
		return fmt.Sprintf("token with serial %q", c.TokenSerial)
	case c.SlotID != nil:
		return fmt.Sprintf("token in slot %d", *c.SlotID)
	}
	return "token"
}

// validate checks what crypto11 would reject less clearly, and fills
// defaults.
func (c *Config) validate() error {
	if c.ModulePath == "" {
		return errors.New("hsm: module_path is required (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)")
	}
	n := 0
	if c.TokenLabel != "" {
		n++
	}
	if c.TokenSerial != "" {
		n++
	}
	if c.SlotID != nil {
		n++
	}
	if n != 1 {
		return fmt.Errorf("hsm: set exactly one of token_label, token_serial and slot_id (%d set)", n)
	}
	if c.PIN == "" {
		return errors.New("hsm: no PIN: set one of pin, pin_file or pin_env")
	}
	if c.MaxSessions < 2 {
		return fmt.Errorf("hsm: max_sessions must be set to at least 2 (got %d); one session holds the login, the rest sign", c.MaxSessions)
	}
	if c.SessionWaitTimeout < 0 {
		return errors.New("hsm: session_wait_timeout must not be negative")
	}
	if c.SessionWaitTimeout == 0 {
		c.SessionWaitTimeout = DefaultSessionWaitTimeout
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}
