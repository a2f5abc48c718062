package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// Federation is the server block's federation block (SPIRE's).
type Federation struct {
	// BundleEndpoint is nil when the server serves no bundle endpoint.
	BundleEndpoint *BundleEndpoint
	// FederatesWith are the relationships of the file, in file order.
	FederatesWith []FederatesWith
}

// Bundle endpoint profiles.
const (
	ProfileHTTPSSPIFFE = "https_spiffe"
	ProfileHTTPSWeb    = "https_web"
)

// Defaults of the bundle endpoint.
const (
	DefaultBundleEndpointAddress = "0.0.0.0"
	// DefaultBundleEndpointPort is ours: SPIRE leaves an absent port 0
	// (any free port), which no foreign server could be told.
	DefaultBundleEndpointPort        = 443
	DefaultBundleEndpointRefreshHint = 5 * time.Minute
	DefaultFileSyncInterval          = time.Hour
)

// BundleEndpoint is federation.bundle_endpoint.
type BundleEndpoint struct {
	Address     string // an IP address
	Port        int
	RefreshHint time.Duration
	// Profile is https_spiffe (the server's SVID) or https_web (ACME or
	// ServingCertFile, exactly one set).
	Profile         string
	ACME            *ACME
	ServingCertFile *ServingCertFile
}

// ACME is the https_web profile's acme block.
type ACME struct {
	DirectoryURL string // "" for Let's Encrypt
	DomainName   string
	Email        string
	ToSAccepted  bool
}

// ServingCertFile is the https_web profile's serving_cert_file block.
type ServingCertFile struct {
	CertFilePath     string
	KeyFilePath      string
	FileSyncInterval time.Duration
}

// FederatesWith is one federates_with "<trust domain>" block.
type FederatesWith struct {
	TrustDomain       spiffeid.TrustDomain
	BundleEndpointURL string
	// EndpointSPIFFEID is set for https_spiffe, zero for https_web.
	EndpointSPIFFEID spiffeid.ID
}

func parseFederation(s *hclconf.Section) Federation {
	var f Federation
	b := s.Block("federation")
	if b == nil {
		return f
	}
	if be := b.Block("bundle_endpoint"); be != nil {
		f.BundleEndpoint = parseBundleEndpoint(be)
	}
	if fw := b.Block("federates_with"); fw != nil {
		for _, label := range fw.Labels() {
			if r, ok := parseFederatesWith(fw, label); ok {
				f.FederatesWith = append(f.FederatesWith, r)
			}
		}
		fw.Finish()
	}
	b.Finish()
	return f
}

func parseBundleEndpoint(s *hclconf.Section) *BundleEndpoint {
	be := &BundleEndpoint{Address: DefaultBundleEndpointAddress, Port: DefaultBundleEndpointPort, RefreshHint: DefaultBundleEndpointRefreshHint}
	s.Parse("address", func(v string) error {
		if net.ParseIP(v) == nil {
			return fmt.Errorf("%q is not an IP address (write address = \"0.0.0.0\" to listen on every interface)", v)
		}
		be.Address = v
		return nil
	})
	s.Port("port", &be.Port)
	d := s.Diagnostics()
	if s.Duration("refresh_hint", &be.RefreshHint) {
		switch line := s.LineOf("refresh_hint"); {
		case be.RefreshHint >= 24*time.Hour:
			d.Warnf(line, s.Key("refresh_hint"), "Bundle endpoint refresh hint set to a high value. To cover the case of unscheduled trust bundle updates, it's recommended to have a smaller value, e.g. 5m")
		case be.RefreshHint < time.Minute:
			d.Warnf(line, s.Key("refresh_hint"), "Bundle endpoint refresh hint set too low. SPIRE will not refresh more often than 1 minute")
		}
	}
	hasACME, hasProfile := s.Has("acme"), s.Has("profile")
	switch {
	case hasACME && hasProfile:
		s.Errorf("acme", "either bundle endpoint 'acme' or 'profile' can be set, but not both")
	case hasACME:
		d.Warnf(s.LineOf("acme"), s.Key("acme"), "ACME configuration within the bundle_endpoint is deprecated. Please use ACME configuration as part of the https_web profile instead.")
		be.Profile = ProfileHTTPSWeb
		be.ACME = parseACME(s.Block("acme"))
	case hasProfile:
		parseEndpointProfile(s, be)
	default:
		d.Warnf(s.Line(), s.Path(), "Bundle endpoint is configured but has no profile set, using https_spiffe as default; please configure a profile explicitly. This will be fatal in a future release.")
		be.Profile = ProfileHTTPSSPIFFE
	}
	s.Finish()
	return be
}

func parseEndpointProfile(s *hclconf.Section, be *BundleEndpoint) {
	p := s.Block("profile")
	if p == nil {
		return
	}
	labels := p.Labels()
	if len(labels) != 1 {
		s.Errorf("profile", "exactly one bundle endpoint profile is expected (write profile \"https_spiffe\" {} or profile \"https_web\" { ... })")
		p.Finish()
		return
	}
	switch labels[0] {
	case ProfileHTTPSSPIFFE:
		be.Profile = ProfileHTTPSSPIFFE
		if b := p.Block(ProfileHTTPSSPIFFE); b != nil {
			b.Finish()
		}
	case ProfileHTTPSWeb:
		be.Profile = ProfileHTTPSWeb
		web := p.Block(ProfileHTTPSWeb)
		if web == nil {
			break
		}
		hasACME, hasFile := web.Has("acme"), web.Has("serving_cert_file")
		switch {
		case hasACME && hasFile:
			web.Errorf("acme", "set together with serving_cert_file (keep one)")
		case hasACME:
			be.ACME = parseACME(web.Block("acme"))
		case hasFile:
			be.ServingCertFile = parseServingCertFile(web.Block("serving_cert_file"))
		default:
			p.Errorf(ProfileHTTPSWeb, "malformed https_web profile configuration: 'acme' or 'serving_cert_file' is required")
		}
		web.Finish()
	default:
		p.Errorf(labels[0], `unknown bundle endpoint profile configured; current supported profiles are "https_spiffe" and 'https_web"`)
		p.Block(labels[0])
	}
	p.Finish()
}

func parseACME(s *hclconf.Section) *ACME {
	a := &ACME{}
	if s == nil {
		return a
	}
	s.String("directory_url", &a.DirectoryURL)
	if !s.String("domain_name", &a.DomainName) || a.DomainName == "" {
		s.Errorf("domain_name", "missing (set the DNS name the ACME CA issues the bundle endpoint's certificate for)")
	}
	s.String("email", &a.Email)
	s.Bool("tos_accepted", &a.ToSAccepted)
	s.Finish()
	return a
}

func parseServingCertFile(s *hclconf.Section) *ServingCertFile {
	f := &ServingCertFile{FileSyncInterval: DefaultFileSyncInterval}
	if s == nil {
		return f
	}
	if !s.String("cert_file_path", &f.CertFilePath) || f.CertFilePath == "" {
		s.Errorf("cert_file_path", "missing (set the path of the PEM certificate chain)")
	}
	if !s.String("key_file_path", &f.KeyFilePath) || f.KeyFilePath == "" {
		s.Errorf("key_file_path", "missing (set the path of the PEM private key)")
	}
	var d time.Duration
	if s.Duration("file_sync_interval", &d) && d > 0 {
		f.FileSyncInterval = d
	}
	s.Finish()
	return f
}

func parseFederatesWith(fw *hclconf.Section, label string) (FederatesWith, bool) {
	b := fw.Block(label)
	if b == nil {
		return FederatesWith{}, false
	}
	defer b.Finish()
	r := FederatesWith{}
	td, err := spiffeid.TrustDomainFromString(label)
	if err != nil {
		fw.Errorf(label, "invalid trust domain %q: %v", label, err)
		return r, false
	}
	r.TrustDomain = td
	ok := true
	if !b.String("bundle_endpoint_url", &r.BundleEndpointURL) || r.BundleEndpointURL == "" {
		b.Errorf("bundle_endpoint_url", "missing (set the https URL of %s's bundle endpoint)", label)
		ok = false
	} else if u, err := url.Parse(r.BundleEndpointURL); err != nil || u.Scheme != "https" || u.Host == "" {
		b.Errorf("bundle_endpoint_url", "%q is not an https URL (the bundle endpoint must use the HTTPS protocol)", r.BundleEndpointURL)
		ok = false
	}
	if !b.Has("bundle_endpoint_profile") {
		b.Errorf("bundle_endpoint_profile", "federation configuration for trust domain %q: missing bundle endpoint configuration", label)
		return r, false
	}
	p := b.Block("bundle_endpoint_profile")
	if p == nil {
		return r, false
	}
	defer p.Finish()
	labels := p.Labels()
	if len(labels) != 1 {
		b.Errorf("bundle_endpoint_profile", "exactly one bundle endpoint profile is expected (write bundle_endpoint_profile \"https_web\" {} or \"https_spiffe\" { endpoint_spiffe_id = \"...\" })")
		return r, false
	}
	switch labels[0] {
	case ProfileHTTPSWeb:
		if web := p.Block(ProfileHTTPSWeb); web != nil {
			web.Finish()
		}
	case ProfileHTTPSSPIFFE:
		sp := p.Block(ProfileHTTPSSPIFFE)
		if sp == nil {
			return r, false
		}
		defer sp.Finish()
		var raw string
		sp.String("endpoint_spiffe_id", &raw)
		id, err := spiffeid.FromString(raw)
		if err != nil {
			sp.Errorf("endpoint_spiffe_id", "could not get endpoint SPIFFE ID: %v (write the ID of the foreign server's SVID, e.g. \"spiffe://%s/spire/server\")", err, label)
			return r, false
		}
		r.EndpointSPIFFEID = id
	default:
		p.Errorf(labels[0], `no bundle endpoint profile defined; current supported profiles are "https_spiffe" and 'https_web"`)
		p.Block(labels[0])
		return r, false
	}
	return r, ok
}

// validateFederation checks what needs the trust domain, which a flag may
// set.
func (c *Config) validateFederation(d *hclconf.Diagnostics) {
	own := c.Server.TrustDomain
	if i := slices.IndexFunc(c.Server.Federation.FederatesWith, func(r FederatesWith) bool { return r.TrustDomain == own }); i >= 0 {
		d.Errorf(0, "server.federation.federates_with", "%q is this server's own trust domain (a server does not federate with itself; remove the block)", own.Name())
	}
}
