package memkeys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"

	agentkmv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
	serverkmv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The package speaks both protos by number: their enums must agree with it.
func TestWireNumbersMatchBothProtos(t *testing.T) {
	for name, p := range map[string]struct{ keyTypes, hashes map[int32]string }{
		"server": {serverkmv1.KeyType_name, serverkmv1.HashAlgorithm_name},
		"agent":  {agentkmv1.KeyType_name, agentkmv1.HashAlgorithm_name},
	} {
		for n, want := range p.keyTypes {
			if got := Type(n).String(); got != want {
				t.Errorf("%s: Type(%d) = %s, want %s", name, n, got, want)
			}
		}
		if got, want := Type(9).String(), serverkmv1.KeyType(9).String(); got != want {
			t.Errorf("unknown type = %s, want %s as the proto says it", got, want)
		}
		if len(p.hashes) != len(hashes)+1 {
			t.Errorf("%s: %d hash algorithms, want %d", name, len(p.hashes)-1, len(hashes))
		}
		for _, h := range hashes {
			if _, ok := p.hashes[int32(h)]; !ok {
				t.Errorf("%s: hash %v (%d) is not in the proto", name, h, h)
			}
		}
	}
}

func salt(n int32) *int32 { return &n }

func TestSignAndVerify(t *testing.T) {
	digest := sha256.Sum256([]byte("to be signed"))
	verifyEC := func(pub crypto.PublicKey, sig []byte) bool {
		return ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig)
	}
	verifyPSS := func(saltLength int) func(crypto.PublicKey, []byte) bool {
		return func(pub crypto.PublicKey, sig []byte) bool {
			return rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: saltLength}) == nil
		}
	}
	tests := []struct {
		name    string
		keyType Type
		pssSalt *int32
		verify  func(pub crypto.PublicKey, sig []byte) bool
	}{
		{name: "EC P-256", keyType: ECP256, verify: verifyEC},
		{name: "EC P-384", keyType: ECP384, verify: verifyEC},
		{name: "RSA 2048 PKCS#1 v1.5", keyType: RSA2048, verify: func(pub crypto.PublicKey, sig []byte) bool {
			return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig) == nil
		}},
		{name: "RSA 2048 PSS salt 32", keyType: RSA2048, pssSalt: salt(32), verify: verifyPSS(32)},
		{name: "RSA 4096 PSS salt equals hash", keyType: RSA4096, pssSalt: salt(rsa.PSSSaltLengthEqualsHash),
			verify: verifyPSS(rsa.PSSSaltLengthEqualsHash)},
	}
	s := New()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := s.Generate(tt.name, tt.keyType)
			if err != nil {
				t.Fatal(err)
			}
			if k.ID != tt.name || k.Type != tt.keyType {
				t.Fatalf("key %s/%s, want %s/%s", k.ID, k.Type, tt.name, tt.keyType)
			}
			sum := sha256.Sum256(k.PKIX)
			if k.Fingerprint != hex.EncodeToString(sum[:]) {
				t.Fatalf("fingerprint %s is not the hex SHA-256 of the PKIX data", k.Fingerprint)
			}
			pub, err := x509.ParsePKIXPublicKey(k.PKIX)
			if err != nil {
				t.Fatalf("parse PKIX: %v", err)
			}
			sig, fp, err := s.Sign(tt.name, digest[:], int32(crypto.SHA256), tt.pssSalt)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if fp != k.Fingerprint {
				t.Fatalf("signature fingerprint %s, want %s", fp, k.Fingerprint)
			}
			if !tt.verify(pub, sig) {
				t.Fatal("signature does not verify")
			}
		})
	}
}

func TestKeysByID(t *testing.T) {
	s := New()
	if _, ok, err := s.Public("missing"); ok || err != nil {
		t.Fatalf("Public(missing) = %v, %v; want none, nil", ok, err)
	}
	first, _ := s.Generate("b", ECP256)
	if _, err := s.Generate("a", ECP384); err != nil {
		t.Fatal(err)
	}
	second, _ := s.Generate("b", ECP256)
	if first.Fingerprint == second.Fingerprint || bytes.Equal(first.PKIX, second.PKIX) {
		t.Fatal("Generate on an existing ID kept the old key")
	}
	got, ok, err := s.Public("b")
	if err != nil || !ok || got.Fingerprint != second.Fingerprint {
		t.Fatalf("Public(b) = %v, %v, %v; want the replacement", got, ok, err)
	}
	// A caller's change to what it got does not reach the store.
	got.PKIX[0] ^= 0xff
	if again, _, _ := s.Public("b"); !bytes.Equal(again.PKIX, second.PKIX) {
		t.Fatal("Public handed out the store's own PKIX bytes")
	}
	all := s.Keys()
	if len(all) != 2 || all[0].ID != "a" || all[1].ID != "b" {
		t.Fatalf("Keys = %v, want a then b", all)
	}
}

func TestRefusals(t *testing.T) {
	s := New()
	if _, err := s.Generate("ec", ECP256); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(nil)
	sha256n := int32(crypto.SHA256)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{name: "generate without id", want: codes.InvalidArgument, call: func() error {
			_, err := s.Generate("", ECP256)
			return err
		}},
		{name: "generate unspecified type", want: codes.InvalidArgument, call: func() error {
			_, err := s.Generate("x", 0)
			return err
		}},
		{name: "public key without id", want: codes.InvalidArgument, call: func() error {
			_, _, err := s.Public("")
			return err
		}},
		{name: "sign without id", want: codes.InvalidArgument, call: func() error {
			_, _, err := s.Sign("", digest[:], sha256n, nil)
			return err
		}},
		{name: "sign unknown key", want: codes.NotFound, call: func() error {
			_, _, err := s.Sign("nope", digest[:], sha256n, nil)
			return err
		}},
		{name: "sign unspecified hash", want: codes.InvalidArgument, call: func() error {
			_, _, err := s.Sign("ec", digest[:], 0, nil)
			return err
		}},
		{name: "sign hash not in the proto", want: codes.InvalidArgument, call: func() error {
			_, _, err := s.Sign("ec", digest[:], int32(crypto.MD5), nil)
			return err
		}},
		{name: "sign wrong digest size", want: codes.InvalidArgument, call: func() error {
			_, _, err := s.Sign("ec", digest[:20], sha256n, nil)
			return err
		}},
		{name: "PSS with an EC key", want: codes.InvalidArgument, call: func() error {
			_, _, err := s.Sign("ec", digest[:], sha256n, salt(0))
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
