package server

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strconv"

	"github.com/spiffe-hw/spire-hw/server/federation"
)

// federationParts are the federation block's running pieces: the
// refresher always (relationships may come from the API at any time), the
// bundle endpoint and its certificate source when configured.
type federationParts struct {
	manager  *federation.Manager
	endpoint *federation.Endpoint
	// certs renews the https_web certificate (serving_cert_file or ACME).
	certs interface{ Run(context.Context) error }
}

func (s *Server) newFederation() (*federationParts, error) {
	sc := s.cfg.Server
	var static []federation.Relationship
	for _, fw := range sc.Federation.FederatesWith {
		static = append(static, federation.Relationship{TrustDomain: fw.TrustDomain, EndpointURL: fw.BundleEndpointURL, EndpointSPIFFEID: fw.EndpointSPIFFEID})
	}
	f := &federationParts{manager: federation.NewManager(federation.Config{
		TrustDomain: sc.TrustDomain,
		DataStore:   s.ds,
		Static:      static,
		Metrics:     s.sinks,
		Log:         s.log.With("subsystem", "bundle_client"),
	})}
	be := sc.Federation.BundleEndpoint
	if be == nil {
		return f, nil
	}
	log := s.log.With("subsystem", "bundle_endpoint")
	cfg := federation.EndpointConfig{
		Address:     net.JoinHostPort(be.Address, strconv.Itoa(be.Port)),
		TrustDomain: sc.TrustDomain,
		DataStore:   s.ds,
		RefreshHint: be.RefreshHint,
		Log:         log,
	}
	switch {
	case be.ServingCertFile != nil:
		cf, err := federation.NewCertFile(be.ServingCertFile.CertFilePath, be.ServingCertFile.KeyFilePath, be.ServingCertFile.FileSyncInterval, log)
		if err != nil {
			return nil, err
		}
		cfg.GetCertificate, f.certs = cf.GetCertificate, cf
	case be.ACME != nil:
		a, err := federation.NewACME(federation.ACMEConfig{
			DirectoryURL: be.ACME.DirectoryURL,
			DomainName:   be.ACME.DomainName,
			Email:        be.ACME.Email,
			ToSAccepted:  be.ACME.ToSAccepted,
			CacheDir:     filepath.Join(sc.DataDir, "bundle-acme"),
		}, log)
		if err != nil {
			return nil, err
		}
		cfg.GetCertificate, cfg.NextProtos, f.certs = a.GetCertificate, a.NextProtos(), a
	default: // https_spiffe: the server's own SVID, as it rotates
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.svid.certificate() }
	}
	var err error
	if f.endpoint, err = federation.NewEndpoint(cfg); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, f.endpoint)
	return f, nil
}

// run serves the federation parts until ctx ends.
func (f *federationParts) run(ctx context.Context, goFn func(func() error)) {
	goFn(func() error { return f.manager.Run(ctx) })
	if f.endpoint != nil {
		goFn(func() error { return f.endpoint.Serve(ctx) })
	}
	if f.certs != nil {
		goFn(func() error { return f.certs.Run(ctx) })
	}
}

// BundleEndpointAddr is the bound bundle endpoint address, or nil without
// one.
func (s *Server) BundleEndpointAddr() net.Addr {
	if s.federation == nil || s.federation.endpoint == nil {
		return nil
	}
	return s.federation.endpoint.Addr()
}
