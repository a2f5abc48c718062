package delegatedidentity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Bounds on one request. SPIRE has none; these are far above what a
// delegate sends (Cilium names a workload by one selector, a Kubernetes
// pod has a few dozen labels) and keep one request's matching and logging
// cheap.
const (
	// MaxSelectors is the most selectors one request may carry.
	MaxSelectors = 256
	// MaxSelectorLen bounds a selector's type and value together, as the
	// server bounds an entry's selectors.
	MaxSelectorLen = 1024
	// MaxAudiences is the most audiences one FetchJWTSVIDs may ask for.
	MaxAudiences = 32
	// MaxAudienceLen bounds one audience.
	MaxAudienceLen = 1024
)

// errPIDOrSelectors is SPIRE's message for a request that names its
// workload both ways, or neither.
const errPIDOrSelectors = "must provide either selectors or non-zero PID, but not both"

// target is the workload a request names: by selectors (which the delegate
// vouches for) or by PID (which the agent attests).
type target struct {
	selectors []*types.Selector
	pid       int32
}

// parseTarget checks a request's pid and selectors (network input) as
// SPIRE does, plus this agent's bounds. The selectors returned are copies:
// the request's messages are not kept. The error is a message for an
// InvalidArgument status.
func parseTarget(pid int32, selectors []*types.Selector) (target, error) {
	// The default of an int32 in protobuf is 0, which SPIRE treats as "no
	// PID" rather than a request to attest PID 0.
	if (len(selectors) != 0) == (pid != 0) {
		return target{}, errors.New(errPIDOrSelectors)
	}
	if pid != 0 {
		if pid < 0 {
			return target{}, fmt.Errorf("invalid pid %d: must be positive", pid)
		}
		return target{pid: pid}, nil
	}
	if len(selectors) > MaxSelectors {
		return target{}, fmt.Errorf("too many selectors: %d, at most %d", len(selectors), MaxSelectors)
	}
	out := make([]*types.Selector, 0, len(selectors))
	for _, s := range selectors {
		if err := checkSelector(s); err != nil {
			return target{}, err
		}
		out = append(out, &types.Selector{Type: s.Type, Value: s.Value})
	}
	return target{selectors: out}, nil
}

// checkSelector applies SPIRE's rules (api.SelectorsFromProto) and the
// length bound. Its errors are logged; the caller answers SPIRE's
// "could not parse provided selectors".
func checkSelector(s *types.Selector) error {
	switch {
	case s == nil:
		return errBadSelector{errors.New("missing selector")}
	case s.Type == "":
		return errBadSelector{errors.New("missing selector type")}
	case strings.Contains(s.Type, ":"):
		return errBadSelector{errors.New("selector type contains ':'")}
	case s.Value == "":
		return errBadSelector{errors.New("missing selector value")}
	case len(s.Type)+len(s.Value) > MaxSelectorLen:
		return errBadSelector{fmt.Errorf("selector of type %.64q longer than %d bytes", s.Type, MaxSelectorLen)}
	}
	return nil
}

// errBadSelector marks a selector SPIRE would not parse, which it answers
// with one fixed message whatever the cause.
type errBadSelector struct{ err error }

func (e errBadSelector) Error() string { return e.err.Error() }
func (e errBadSelector) Unwrap() error { return e.err }

// checkAudiences applies FetchJWTSVIDs' rules: SPIRE's "audience must be
// specified" and this agent's bounds.
func checkAudiences(audience []string) error {
	if len(audience) == 0 {
		return errors.New("audience must be specified")
	}
	if len(audience) > MaxAudiences {
		return fmt.Errorf("too many audiences: %d, at most %d", len(audience), MaxAudiences)
	}
	for _, a := range audience {
		if a == "" {
			return errors.New("audience must not be empty")
		}
		if len(a) > MaxAudienceLen {
			return fmt.Errorf("audience longer than %d bytes", MaxAudienceLen)
		}
	}
	return nil
}
