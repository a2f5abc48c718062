package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/servertest"
)

// TestAuditServiceFields: the bundle and entry calls' audit lines carry
// the request fields SPIRE's services add (trust_domain_id, entry_id, the
// appended authorities by index and SHA-256), on success and on error.
func TestAuditServiceFields(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := s.Admin(t)

	if _, err := bundlev1.NewBundleClient(admin).GetBundle(ctx, &bundlev1.GetBundleRequest{}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", "method=GetBundle", "status=success", "trust_domain_id=example.org")

	_, err := entryv1.NewEntryClient(admin).GetEntry(ctx, &entryv1.GetEntryRequest{Id: "no-such-entry"})
	if err == nil {
		t.Fatal("GetEntry of a missing entry succeeded")
	}
	logs.waitLine(t, "API accessed", "method=GetEntry", "status=error", "entry_id=no-such-entry")

	junk := []byte("not a certificate")
	sum := sha256.Sum256(junk)
	_, err = bundlev1.NewBundleClient(admin).AppendBundle(ctx, &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: junk}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "kid-1", PublicKey: junk, ExpiresAt: 42}},
	})
	if err == nil {
		t.Fatal("AppendBundle of junk succeeded")
	}
	logs.waitLine(t, "API accessed", "method=AppendBundle", "status=error",
		"x509_authorities_asn1_sha256.0="+hex.EncodeToString(sum[:]), "jwt_authority_key_id.0=kid-1",
		"jwt_authority_expires_at.0=42", "jwt_authority_public_key_sha256.0="+hex.EncodeToString(sum[:]))
}
