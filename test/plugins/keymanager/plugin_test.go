package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"

	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func load(t *testing.T) *keymanagerv1.KeyManagerPluginClient {
	t.Helper()
	km := new(keymanagerv1.KeyManagerPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   keymanagerv1.KeyManagerPluginServer(p),
		PluginClient:   km,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	if _, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
	}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return km
}

func mustGenerate(t *testing.T, km *keymanagerv1.KeyManagerPluginClient, id string, kt keymanagerv1.KeyType) *keymanagerv1.PublicKey {
	t.Helper()
	resp, err := km.GenerateKey(context.Background(), &keymanagerv1.GenerateKeyRequest{KeyId: id, KeyType: kt})
	if err != nil {
		t.Fatalf("GenerateKey(%s, %s): %v", id, kt, err)
	}
	return resp.PublicKey
}

func TestSignAndVerify(t *testing.T) {
	km := load(t)
	digest := sha256.Sum256([]byte("to be signed"))
	tests := []struct {
		name    string
		keyType keymanagerv1.KeyType
		req     *keymanagerv1.SignDataRequest
		verify  func(pub crypto.PublicKey, sig []byte) bool
	}{
		{name: "EC P-256", keyType: keymanagerv1.KeyType_EC_P256,
			req: &keymanagerv1.SignDataRequest{SignerOpts: &keymanagerv1.SignDataRequest_HashAlgorithm{HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256}},
			verify: func(pub crypto.PublicKey, sig []byte) bool {
				return ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig)
			}},
		{name: "RSA 2048 PKCS#1 v1.5", keyType: keymanagerv1.KeyType_RSA_2048,
			req: &keymanagerv1.SignDataRequest{SignerOpts: &keymanagerv1.SignDataRequest_HashAlgorithm{HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256}},
			verify: func(pub crypto.PublicKey, sig []byte) bool {
				return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig) == nil
			}},
		{name: "RSA 2048 PSS salt 32", keyType: keymanagerv1.KeyType_RSA_2048,
			req: &keymanagerv1.SignDataRequest{SignerOpts: &keymanagerv1.SignDataRequest_PssOptions{PssOptions: &keymanagerv1.SignDataRequest_PSSOptions{
				SaltLength: 32, HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256}}},
			verify: func(pub crypto.PublicKey, sig []byte) bool {
				return rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}) == nil
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := mustGenerate(t, km, tt.name, tt.keyType)
			if pk.Id != tt.name || pk.Type != tt.keyType {
				t.Fatalf("public key %s/%s, want %s/%s", pk.Id, pk.Type, tt.name, tt.keyType)
			}
			sum := sha256.Sum256(pk.PkixData)
			if pk.Fingerprint != hex.EncodeToString(sum[:]) {
				t.Fatalf("fingerprint %s is not the SHA-256 of the PKIX data", pk.Fingerprint)
			}
			pub, err := x509.ParsePKIXPublicKey(pk.PkixData)
			if err != nil {
				t.Fatalf("parse PKIX: %v", err)
			}
			tt.req.KeyId, tt.req.Data = tt.name, digest[:]
			resp, err := km.SignData(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("SignData: %v", err)
			}
			if resp.KeyFingerprint != pk.Fingerprint {
				t.Fatalf("signature fingerprint %s, want %s", resp.KeyFingerprint, pk.Fingerprint)
			}
			if !tt.verify(pub, resp.Signature) {
				t.Fatal("signature does not verify")
			}
		})
	}
}

func TestKeysByID(t *testing.T) {
	km := load(t)
	ctx := context.Background()

	// An unknown ID: an empty answer and no error, as SPIRE's key managers.
	resp, err := km.GetPublicKey(ctx, &keymanagerv1.GetPublicKeyRequest{KeyId: "missing"})
	if err != nil || resp.PublicKey != nil {
		t.Fatalf("GetPublicKey(missing) = %v, %v; want empty, nil", resp, err)
	}

	first := mustGenerate(t, km, "b", keymanagerv1.KeyType_EC_P256)
	mustGenerate(t, km, "a", keymanagerv1.KeyType_EC_P384)
	second := mustGenerate(t, km, "b", keymanagerv1.KeyType_EC_P256)
	if first.Fingerprint == second.Fingerprint || bytes.Equal(first.PkixData, second.PkixData) {
		t.Fatal("GenerateKey on an existing ID kept the old key")
	}
	got, err := km.GetPublicKey(ctx, &keymanagerv1.GetPublicKeyRequest{KeyId: "b"})
	if err != nil || got.PublicKey.Fingerprint != second.Fingerprint {
		t.Fatalf("GetPublicKey(b) = %v, %v; want the replacement", got, err)
	}
	all, err := km.GetPublicKeys(ctx, &keymanagerv1.GetPublicKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.PublicKeys) != 2 || all.PublicKeys[0].Id != "a" || all.PublicKeys[1].Id != "b" {
		t.Fatalf("GetPublicKeys = %v, want a then b", all.PublicKeys)
	}
}

func TestRefusals(t *testing.T) {
	km := load(t)
	mustGenerate(t, km, "ec", keymanagerv1.KeyType_EC_P256)
	digest := sha256.Sum256(nil)
	sha256Opt := &keymanagerv1.SignDataRequest_HashAlgorithm{HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{name: "generate without id", want: codes.InvalidArgument, call: func() error {
			_, err := km.GenerateKey(context.Background(), &keymanagerv1.GenerateKeyRequest{KeyType: keymanagerv1.KeyType_EC_P256})
			return err
		}},
		{name: "generate unspecified type", want: codes.InvalidArgument, call: func() error {
			_, err := km.GenerateKey(context.Background(), &keymanagerv1.GenerateKeyRequest{KeyId: "x"})
			return err
		}},
		{name: "sign unknown key", want: codes.NotFound, call: func() error {
			_, err := km.SignData(context.Background(), &keymanagerv1.SignDataRequest{KeyId: "nope", Data: digest[:], SignerOpts: sha256Opt})
			return err
		}},
		{name: "sign with nil PSS options", want: codes.InvalidArgument, call: func() error {
			_, err := km.SignData(context.Background(), &keymanagerv1.SignDataRequest{KeyId: "ec", Data: digest[:],
				SignerOpts: &keymanagerv1.SignDataRequest_PssOptions{}})
			return err
		}},
		{name: "sign without options", want: codes.InvalidArgument, call: func() error {
			_, err := km.SignData(context.Background(), &keymanagerv1.SignDataRequest{KeyId: "ec", Data: digest[:]})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != tt.want {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}
