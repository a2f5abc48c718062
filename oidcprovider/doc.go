// Package oidcprovider is the OIDC discovery provider: a small HTTP(S)
// service that publishes a trust domain's JWT authorities as an OpenID
// Connect discovery document (/.well-known/openid-configuration) and a JWKS
// (/keys), so that relying parties that speak OIDC (cloud IAM federation,
// go-oidc, Vault...) can verify JWT-SVIDs without any SPIFFE library.
//
// It is compatible with SPIRE v1.13.3's support/oidc-discovery-provider:
// same HCL keys and defaults, same document and key set, same checks of the
// Host header against the configured domains. The keys come from one
// source, polled: the server's admin socket (server_api, bundle/v1
// GetBundle), an agent's Workload API (workload_api, FetchJWTBundles) or a
// SPIFFE bundle file (file).
//
// Every listener has limits (connections in total and per source address,
// header size and read, write and idle timeouts), because the provider is
// meant to face the internet.
package oidcprovider
