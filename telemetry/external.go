package telemetry

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
)

// Bounds on a metric from outside the daemon (an external plugin through
// the Metrics host service), so that one cannot make names or label sets
// without limit.
const (
	maxExternalKeyParts = 16
	maxExternalKeyLen   = 256
	maxExternalLabels   = 16
	maxExternalValueLen = 256
)

// reservedLabels break a sink if a plugin sets them: Prometheus refuses a
// summary labelled quantile (client_golang panics) and a histogram
// labelled le, and host and trust_domain are the daemon's own labels, so a
// second one is a duplicate.
var reservedLabels = map[string]bool{"quantile": true, "le": true, "host": true, "trust_domain": true}

// CheckExternal reports why a metric from outside the daemon would break
// a sink, or nil: an empty or oversized key, a key part with a character
// no sink can name (Prometheus names are [a-zA-Z0-9_:], and the sinks turn
// ' ', '.', '=', '-' and '/' into '_' as SPIRE's do), too many or reserved
// labels, two labels that sanitize to one name, or a value that is not a
// finite number. The daemon's own metrics need no check: their keys are
// constants.
func CheckExternal(key []string, val float64, labels []Label) error {
	if len(key) == 0 {
		return errors.New("empty key")
	}
	if len(key) > maxExternalKeyParts {
		return fmt.Errorf("key of %d parts, at most %d", len(key), maxExternalKeyParts)
	}
	n := 0
	for _, p := range key {
		n += len(p) + 1
		if p == "" {
			return errors.New("empty key part")
		}
		for _, r := range p {
			if !validKeyRune(r) {
				return fmt.Errorf("key part %q: character %q is not in a metric name", p, r)
			}
		}
	}
	if n > maxExternalKeyLen {
		return fmt.Errorf("key of %d bytes, at most %d", n, maxExternalKeyLen)
	}
	if math.IsNaN(val) || math.IsInf(val, 0) {
		return fmt.Errorf("value %v is not a finite number", val)
	}
	if len(labels) > maxExternalLabels {
		return fmt.Errorf("%d labels, at most %d", len(labels), maxExternalLabels)
	}
	seen := make(map[string]bool, len(labels))
	for _, l := range labels {
		name := sanitize(l.Name)
		switch {
		case name == "" || name == "_":
			return fmt.Errorf("label name %q", l.Name)
		case unicode.IsDigit(rune(name[0])) || strings.HasPrefix(name, "__"):
			return fmt.Errorf("label name %q is not a valid Prometheus label", l.Name)
		case reservedLabels[name]:
			return fmt.Errorf("label name %q is reserved", l.Name)
		case seen[name]:
			return fmt.Errorf("label name %q given twice", name)
		case len(l.Value) > maxExternalValueLen:
			return fmt.Errorf("label %q: value of %d bytes, at most %d", name, len(l.Value), maxExternalValueLen)
		}
		seen[name] = true
	}
	return nil
}

func validKeyRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("_:. =-/", r)
}

// EmitKey emits a key-value pair, which only the statsd family of sinks
// and InMem keep (Prometheus has no type for it, and go-metrics' sink
// drops it, as in SPIRE).
func (m *Metrics) EmitKey(key []string, val float32) {
	if m == nil {
		return
	}
	for _, s := range m.perSink {
		s.EmitKey(key, val)
	}
}
