package sds

import "github.com/spiffe-hw/spire-hw/agent/cache"

// For the socket tests (package sds_test).
type Fixture = fixture

var (
	NewFixture          = newFixture
	DecodeSecrets       = decodeSecrets
	SecretNames         = secretNames
	CheckTLSCertificate = checkTLSCertificate
	TrustedCA           = trustedCA
	SPIFFEValidator     = spiffeValidator
	SecretTypeURL       = secretTypeURL
	MaxResourceNames    = maxResourceNames
)

// PEMOf is the PEM chain SDS sends for id.
func PEMOf(id cache.Identity) []byte { return pemChain(id.SVID.Certificates()) }
