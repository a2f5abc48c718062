// Package cloud runs local stand-ins for the cloud metadata services that
// the aws_iid, azure_msi and gcp_iit node attestors talk to: an AWS-style
// IMDS and EC2/IAM query API, an Azure-style IMDS with OIDC discovery, JWKS,
// a client-credentials token endpoint and ARM, and a GCP-style metadata
// server with its certs endpoint, a service-account token endpoint and the
// Compute API.
//
// No test can reach a cloud, so each simulator does the real cryptography
// with keys it generates: AWS documents carry genuine PKCS#7 signatures
// from a test region certificate, Azure and GCP tokens are RS256 JWTs whose
// keys are served the way the clouds serve theirs. The attestors take every
// endpoint URL and trust anchor from configuration, so they run unchanged
// against a simulator and against the real clouds.
//
// Every simulator listens on 127.0.0.1 with plain HTTP, as the real
// link-local metadata services do.
package cloud
