// Package credentialcomposer defines what the CA asks of a credential
// composer: a plugin that amends the attributes of the CA certificates and
// SVIDs the server signs (subject, DNS SANs, policy identifiers, extra
// extensions, JWT claims), as SPIRE's CredentialComposer plugins do.
//
// The CA calls every configured composer in configuration order, each one
// getting the previous one's output, and then checks the signed result
// against the SPIFFE rules, so a composer can add to a credential but never
// change who it is for or what it may be used for. server/credentialcomposer/external
// adapts plugins written against the SPIRE plugin SDK to this interface.
package credentialcomposer

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Composer amends the attributes of one kind of credential at a time. Each
// method gets the attributes the server would use and returns the ones to
// use instead; returning the input unchanged means "no change".
type Composer interface {
	// Name is the composer's name in the configuration, for logs.
	Name() string
	// ComposeServerX509CA composes the server's own X.509 CA certificate
	// (self-signed, or the CSR sent to the upstream authority).
	ComposeServerX509CA(ctx context.Context, attrs X509CAAttributes) (X509CAAttributes, error)
	// ComposeServerX509SVID composes the server's own X.509-SVID.
	ComposeServerX509SVID(ctx context.Context, attrs X509SVIDAttributes) (X509SVIDAttributes, error)
	// ComposeAgentX509SVID composes the X.509-SVID of the agent id, for its
	// public key pub.
	ComposeAgentX509SVID(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, attrs X509SVIDAttributes) (X509SVIDAttributes, error)
	// ComposeWorkloadX509SVID composes the X.509-SVID of the workload id,
	// for its public key pub.
	ComposeWorkloadX509SVID(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, attrs X509SVIDAttributes) (X509SVIDAttributes, error)
	// ComposeWorkloadJWTSVID composes the claims of a JWT-SVID for the
	// workload id. The claims are JSON values (as encoding/json decodes
	// them, though numbers may also be int64); sub, aud and exp come in
	// set and must come out valid for id.
	ComposeWorkloadJWTSVID(ctx context.Context, id spiffeid.ID, claims map[string]any) (map[string]any, error)
}

// X509CAAttributes are what a composer may change in a CA certificate.
type X509CAAttributes struct {
	Subject pkix.Name
	// Policies are the certificate policy identifiers.
	Policies []x509.OID
	// ExtraExtensions are added to the certificate; one with the OID of an
	// extension the CA writes replaces it (and the CA then refuses the
	// certificate if it no longer is a valid SPIFFE CA).
	ExtraExtensions []pkix.Extension
}

// X509SVIDAttributes are what a composer may change in an X.509-SVID.
type X509SVIDAttributes struct {
	Subject  pkix.Name
	DNSNames []string
	// ExtraExtensions are added to the certificate, as for a CA.
	ExtraExtensions []pkix.Extension
}
