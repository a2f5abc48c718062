// Package sds serves Envoy's Secret Discovery Service (SDS v3,
// envoy.service.secret.v3.SecretDiscoveryService) on the agent's Workload
// API socket, with SPIRE's resource names and semantics: a TLS certificate
// per SPIFFE ID (and the first one as "default"), a validation context per
// trust domain (and the agent's own as "ROOTCA"), and every trust domain
// at once as "ALL" through Envoy's SPIFFE certificate validator.
//
// Callers are attested exactly as Workload API callers are (the Attest
// function is the Workload API handler's), without its security header,
// which Envoy does not send and SPIRE does not ask of SDS calls.
package sds
