package cli

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// SPIRE's names of the bundle endpoint profiles, on flags and in -data.
const (
	profileHTTPSWeb    = "https_web"
	profileHTTPSSPIFFE = "https_spiffe"
)

// federationDataFile is the -data format of SPIRE's "federation
// create/update": {"federationRelationships": [ {...}, ... ]}. As with
// SPIRE's decoder, keys match case-insensitively and unknown keys are
// ignored.
type federationDataFile struct {
	FederationRelationships []*federationConfig `json:"federationRelationships"`
}

// federationConfig is one relationship as the flags or a -data item give
// it. A bundle comes from a file with the flags (-trustDomainBundlePath)
// and inline with -data (trustDomainBundle: a PEM string, or a SPIFFE
// bundle object).
type federationConfig struct {
	TrustDomain             string          `json:"trustDomain,omitempty"`
	BundleEndpointURL       string          `json:"bundleEndpointURL,omitempty"`
	BundleEndpointProfile   string          `json:"bundleEndpointProfile,omitempty"`
	EndpointSPIFFEID        string          `json:"endpointSPIFFEID,omitempty"`
	TrustDomainBundle       json.RawMessage `json:"trustDomainBundle,omitempty"`
	TrustDomainBundleFormat string          `json:"trustDomainBundleFormat,omitempty"`
	trustDomainBundlePath   string
}

// isEmpty reports whether no relationship flag was set (the bundle format
// at its default), which -data requires.
func (c *federationConfig) isEmpty() bool {
	return c.TrustDomain == "" && c.BundleEndpointURL == "" && c.BundleEndpointProfile == "" && c.EndpointSPIFFEID == "" &&
		c.trustDomainBundlePath == "" && c.TrustDomainBundleFormat == formatPEM
}

func (c *federationConfig) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.TrustDomain, "trustDomain", "", "Name of the trust domain to federate with (e.g., example.org)")
	fs.StringVar(&c.BundleEndpointURL, "bundleEndpointURL", "", "URL of the SPIFFE bundle endpoint that provides the trust bundle (must use the HTTPS protocol)")
	fs.StringVar(&c.BundleEndpointProfile, "bundleEndpointProfile", "", fmt.Sprintf("Endpoint profile type (either %q or %q)", profileHTTPSWeb, profileHTTPSSPIFFE))
	fs.StringVar(&c.EndpointSPIFFEID, "endpointSpiffeID", "", "SPIFFE ID of the SPIFFE bundle endpoint server. Only used for 'spiffe' profile.")
	fs.StringVar(&c.trustDomainBundlePath, "trustDomainBundlePath", "", "Path to the trust domain bundle data (optional).")
	fs.StringVar(&c.TrustDomainBundleFormat, "trustDomainBundleFormat", formatPEM, fmt.Sprintf("The format of the bundle data (optional). Either %q or %q.", formatPEM, formatSPIFFE))
}

// toProto checks a relationship as SPIRE's CLI does before sending it.
// The bundle is read for the trust domain of the endpoint's SPIFFE ID
// under https_spiffe (SPIRE's rule: the server then refuses it unless
// that is the relationship's own trust domain).
func (c *federationConfig) toProto() (*types.FederationRelationship, error) {
	if c.TrustDomain == "" {
		return nil, errors.New("trust domain is required")
	}
	if c.BundleEndpointURL == "" {
		return nil, errors.New("bundle endpoint URL is required")
	}
	fr := &types.FederationRelationship{TrustDomain: c.TrustDomain, BundleEndpointUrl: c.BundleEndpointURL}
	bundleTD := c.TrustDomain
	switch c.BundleEndpointProfile {
	case profileHTTPSWeb:
		fr.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
	case profileHTTPSSPIFFE:
		if c.EndpointSPIFFEID == "" {
			return nil, errors.New("endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set")
		}
		id, err := spiffeid.FromString(c.EndpointSPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("cannot parse bundle endpoint SPIFFE ID: %w", err)
		}
		bundleTD = id.TrustDomain().Name()
		fr.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: c.EndpointSPIFFEID}}
	default:
		return nil, fmt.Errorf("unknown bundle endpoint profile type: %q", c.BundleEndpointProfile)
	}
	switch {
	case c.trustDomainBundlePath != "":
		data, err := readFileLimited(c.trustDomainBundlePath, maxBundleDataSize)
		if err != nil {
			return nil, fmt.Errorf("cannot read bundle file: %w", err)
		}
		b, err := parseRelationshipBundle(data, c.TrustDomainBundleFormat, bundleTD)
		if err != nil {
			return nil, fmt.Errorf("cannot parse bundle file: %w", err)
		}
		fr.TrustDomainBundle = b
	case c.TrustDomainBundle != nil:
		b, err := c.inlineBundle(bundleTD)
		if err != nil {
			return nil, fmt.Errorf("cannot parse bundle raw message: %w", err)
		}
		fr.TrustDomainBundle = b
	}
	return fr, nil
}

// inlineBundle reads -data's trustDomainBundle: a JSON string of PEM, or
// the SPIFFE bundle document itself.
func (c *federationConfig) inlineBundle(td string) (*types.Bundle, error) {
	switch c.TrustDomainBundleFormat {
	case formatPEM:
		var s string
		if err := json.Unmarshal(c.TrustDomainBundle, &s); err != nil {
			return nil, fmt.Errorf("failed to unmarshal json: %w", err)
		}
		return parseRelationshipBundle([]byte(s), formatPEM, td)
	case formatSPIFFE:
		return parseRelationshipBundle(c.TrustDomainBundle, formatSPIFFE, td)
	}
	return nil, fmt.Errorf("bundle format %q is unsupported", c.TrustDomainBundleFormat)
}

// parseRelationshipBundle is SPIRE's util.ParseBundle: "pem" is a run of
// CERTIFICATE blocks (any other block is refused) and any other format a
// SPIFFE bundle document.
func parseRelationshipBundle(data []byte, format, td string) (*types.Bundle, error) {
	if format != formatPEM {
		trustDomain, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			return nil, err
		}
		return parseBundleData(data, formatSPIFFE, trustDomain)
	}
	b := &types.Bundle{TrustDomain: td}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unable to parse bundle data: expected block type %q; got %q", "CERTIFICATE", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("unable to parse bundle data: %w", err)
		}
		b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: cert.Raw})
	}
	if len(b.X509Authorities) == 0 {
		return nil, errors.New("unable to parse bundle data: no PEM blocks")
	}
	return b, nil
}

// ParseFederationJSON parses the -data file of "federation create" and
// "federation update" into relationships, checking each as the flags are
// checked; the error names the first bad item by index.
func ParseFederationJSON(data []byte) ([]*types.FederationRelationship, error) {
	var f federationDataFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("failed to parse JSON: %w", err)
	}
	out := []*types.FederationRelationship{}
	for i, c := range f.FederationRelationships {
		if c == nil {
			c = &federationConfig{}
		}
		fr, err := c.toProto()
		if err != nil {
			return nil, fmt.Errorf("could not parse item %d: %w", i, err)
		}
		out = append(out, fr)
	}
	return out, nil
}
