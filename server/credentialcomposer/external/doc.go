// Package external makes a CredentialComposer plugin written against the
// SPIRE plugin SDK (spire.plugin.server.credentialcomposer.v1) a
// credentialcomposer.Composer.
//
// The adapter follows SPIRE v1.13.3's CredentialComposer facade: the same
// conversions between Go's x509/pkix types and the SDK's messages, the same
// refusals of what cannot be converted, and an Unimplemented answer (or one
// without attributes) taken as "no change". Errors are gRPC statuses with
// SPIRE's prefix ("credentialcomposer(<name>): ..."). What the CA then does
// with the composed attributes, and what it refuses, is server/ca's
// business.
package external
