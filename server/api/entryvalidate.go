package api

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

var (
	entryIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~\-]{1,255}$`)
	dnsLabel       = regexp.MustCompile(`^(\*|[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)$`)
)

const (
	maxSelectors = 64
	maxDNSNames  = 64
	maxHintLen   = 1024
	maxSelLen    = 1024
)

// validateEntry checks an entry from the wire and returns a normalised copy
// (trust-domain names lower-cased, federates-with without scheme). Only the
// fields that mask selects are checked; a nil mask selects all.
func (a *API) validateEntry(in *types.Entry, mask *types.EntryMask) (*types.Entry, error) {
	if in == nil {
		return nil, fmt.Errorf("missing entry")
	}
	all := mask == nil
	e := proto.Clone(in).(*types.Entry)
	if e.Id != "" && !entryIDPattern.MatchString(e.Id) {
		return nil, fmt.Errorf("invalid entry ID %q: use 1-255 characters of A-Z a-z 0-9 . _ ~ -", e.Id)
	}
	if all || mask.SpiffeId {
		id, err := a.workloadIDFromProto("invalid spiffe ID", e.SpiffeId)
		if err != nil {
			return nil, err
		}
		e.SpiffeId = idToProto(id)
	}
	if all || mask.ParentId {
		id, err := a.idFromProto("invalid parent ID", e.ParentId)
		if err != nil {
			return nil, err
		}
		e.ParentId = idToProto(id)
	}
	if all || mask.Selectors {
		if len(e.Selectors) == 0 {
			return nil, fmt.Errorf("invalid selectors: at least one selector is required")
		}
		if len(e.Selectors) > maxSelectors {
			return nil, fmt.Errorf("invalid selectors: %d selectors, at most %d allowed", len(e.Selectors), maxSelectors)
		}
		for _, s := range e.Selectors {
			if err := validateSelector(s); err != nil {
				return nil, err
			}
		}
	}
	if (all || mask.X509SvidTtl) && e.X509SvidTtl < 0 {
		return nil, fmt.Errorf("invalid x509_svid_ttl %d: must not be negative", e.X509SvidTtl)
	}
	if (all || mask.JwtSvidTtl) && e.JwtSvidTtl < 0 {
		return nil, fmt.Errorf("invalid jwt_svid_ttl %d: must not be negative", e.JwtSvidTtl)
	}
	if all || mask.DnsNames {
		if len(e.DnsNames) > maxDNSNames {
			return nil, fmt.Errorf("invalid dns_names: %d names, at most %d allowed", len(e.DnsNames), maxDNSNames)
		}
		for _, n := range e.DnsNames {
			if err := validateDNSName(n); err != nil {
				return nil, err
			}
		}
	}
	if all || mask.FederatesWith {
		for i, f := range e.FederatesWith {
			td, err := spiffeid.TrustDomainFromString(f)
			if err != nil {
				return nil, fmt.Errorf("invalid federates_with %q: %v", f, err)
			}
			if td == a.cfg.TrustDomain {
				return nil, fmt.Errorf("invalid federates_with %q: an entry cannot federate with its own trust domain", f)
			}
			e.FederatesWith[i] = td.Name()
		}
	}
	if (all || mask.Hint) && len(e.Hint) > maxHintLen {
		return nil, fmt.Errorf("invalid hint: longer than %d bytes", maxHintLen)
	}
	if (all || mask.ExpiresAt) && e.ExpiresAt < 0 {
		return nil, fmt.Errorf("invalid expires_at %d: must not be negative", e.ExpiresAt)
	}
	return e, nil
}

func validateSelector(s *types.Selector) error {
	switch {
	case s == nil:
		return fmt.Errorf("invalid selector: missing")
	case s.Type == "":
		return fmt.Errorf("invalid selector %q: missing selector type", ":"+s.Value)
	case strings.Contains(s.Type, ":"):
		return fmt.Errorf("invalid selector type %q: must not contain ':'", s.Type)
	case s.Value == "":
		return fmt.Errorf("invalid selector %q: missing selector value", s.Type+":")
	case len(s.Type)+len(s.Value) > maxSelLen:
		return fmt.Errorf("invalid selector %q: longer than %d bytes", s.Type, maxSelLen)
	}
	return nil
}

func validateDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("invalid DNS name %q: must be 1-253 characters", n)
	}
	for i, label := range strings.Split(n, ".") {
		if label == "*" && i != 0 {
			return fmt.Errorf("invalid DNS name %q: wildcard only allowed as the first label", n)
		}
		if !dnsLabel.MatchString(label) {
			return fmt.Errorf("invalid DNS name %q: label %q is not a valid hostname label", n, label)
		}
	}
	return nil
}

// applyEntryMask returns e with only the fields of mask set (ID always).
func applyEntryMask(e *types.Entry, mask *types.EntryMask) *types.Entry {
	if mask == nil {
		return e
	}
	out := &types.Entry{Id: e.Id}
	if mask.SpiffeId {
		out.SpiffeId = e.SpiffeId
	}
	if mask.ParentId {
		out.ParentId = e.ParentId
	}
	if mask.Selectors {
		out.Selectors = e.Selectors
	}
	if mask.X509SvidTtl {
		out.X509SvidTtl = e.X509SvidTtl
	}
	if mask.JwtSvidTtl {
		out.JwtSvidTtl = e.JwtSvidTtl
	}
	if mask.FederatesWith {
		out.FederatesWith = e.FederatesWith
	}
	if mask.Admin {
		out.Admin = e.Admin
	}
	if mask.Downstream {
		out.Downstream = e.Downstream
	}
	if mask.ExpiresAt {
		out.ExpiresAt = e.ExpiresAt
	}
	if mask.DnsNames {
		out.DnsNames = e.DnsNames
	}
	if mask.RevisionNumber {
		out.RevisionNumber = e.RevisionNumber
	}
	if mask.StoreSvid {
		out.StoreSvid = e.StoreSvid
	}
	if mask.Hint {
		out.Hint = e.Hint
	}
	if mask.CreatedAt {
		out.CreatedAt = e.CreatedAt
	}
	return out
}
