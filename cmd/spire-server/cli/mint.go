package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// ttlToSeconds rounds a duration up to whole seconds, as SPIRE does, and
// clamps it to the request field's range.
func ttlToSeconds(ttl time.Duration) int32 {
	if ttl <= 0 {
		return 0
	}
	s := (ttl + time.Second - 1) / time.Second
	return int32(min(int64(s), maxInt32))
}

// x509MintCommand is "x509 mint": the key is made here and never leaves the
// machine; the server only signs a CSR.
type x509MintCommand struct {
	spiffeID string
	ttl      time.Duration
	dnsNames stringsFlag
	write    string
	out      outputFormat
}

func (*x509MintCommand) synopsis() string { return "Mints an X509-SVID" }

func (c *x509MintCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.spiffeID, "spiffeID", "", "SPIFFE ID of the X509-SVID")
	fs.DurationVar(&c.ttl, "ttl", 0, "TTL of the X509-SVID")
	fs.Var(&c.dnsNames, "dns", "DNS name that will be included in SVID. Can be used more than once.")
	fs.StringVar(&c.write, "write", "", "Directory to write output to instead of stdout")
	addOutputFlag(fs, &c.out)
}

// buildRequest makes the CSR for key carrying the SPIFFE ID and DNS names.
func (c *x509MintCommand) buildRequest(key crypto.Signer) (*svidv1.MintX509SVIDRequest, error) {
	if c.spiffeID == "" {
		return nil, errors.New("spiffeID must be specified (set -spiffeID)")
	}
	id, err := idToProto(c.spiffeID)
	if err != nil {
		return nil, fmt.Errorf("invalid -spiffeID %q: %w", c.spiffeID, err)
	}
	if c.ttl < 0 {
		return nil, errors.New("a positive TTL is required (set -ttl)")
	}
	u := &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: id.Path}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs:     []*url.URL{u},
		DNSNames: c.dnsNames,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("unable to generate CSR: %w", err)
	}
	return &svidv1.MintX509SVIDRequest{Csr: csr, Ttl: ttlToSeconds(c.ttl)}, nil
}

func (c *x509MintCommand) run(ctx context.Context, e *env, cl *clients) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("unable to generate key: %w", err)
	}
	req, err := c.buildRequest(key)
	if err != nil {
		return err
	}
	resp, err := cl.svid().MintX509SVID(ctx, req)
	if err != nil {
		return fmt.Errorf("unable to mint SVID: %w", err)
	}
	if len(resp.GetSvid().GetCertChain()) == 0 {
		return errors.New("server response missing SVID chain")
	}
	b, err := cl.bundle().GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return fmt.Errorf("unable to get bundle: %w", err)
	}
	if len(b.X509Authorities) == 0 {
		return errors.New("server response missing X509 Authorities")
	}
	if eol := time.Unix(resp.Svid.ExpiresAt, 0); time.Until(eol) < c.ttl {
		e.errPrintf("X509-SVID lifetime was capped shorter than specified ttl; expires %q\n", eol.UTC().Format(time.RFC3339))
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("unable to marshal key: %w", err)
	}
	res := newX509MintResult(keyDER, resp.Svid, b)
	if c.write == "" {
		return printX509Mint(e, c.out, res)
	}
	return writeX509Mint(e, c.write, res)
}

// x509MintResult is the JSON shape of "x509 mint -output json" (DER values
// base64 encoded, as encoding/json does for byte slices).
type x509MintResult struct {
	X509SVID   [][]byte `json:"x509_svid"`
	PrivateKey []byte   `json:"private_key"`
	RootCAs    [][]byte `json:"root_cas"`
}

func newX509MintResult(keyDER []byte, svid *types.X509SVID, b *types.Bundle) *x509MintResult {
	res := &x509MintResult{X509SVID: svid.GetCertChain(), PrivateKey: keyDER}
	for _, a := range b.GetX509Authorities() {
		res.RootCAs = append(res.RootCAs, a.GetAsn1())
	}
	return res
}

// pems renders the SVID chain, key and root CAs as PEM.
func (r *x509MintResult) pems() (svid, key, bundle []byte) {
	var s, k, b bytes.Buffer
	for _, der := range r.X509SVID {
		_ = pem.Encode(&s, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	_ = pem.Encode(&k, &pem.Block{Type: "PRIVATE KEY", Bytes: r.PrivateKey})
	for _, der := range r.RootCAs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return s.Bytes(), k.Bytes(), b.Bytes()
}

func printX509Mint(e *env, out outputFormat, r *x509MintResult) error {
	if out == outputJSON {
		return printStructJSON(e.stdout, r)
	}
	svid, key, bundle := r.pems()
	e.printf("X509-SVID:\n%s\n", svid)
	e.printf("Private key:\n%s\n", key)
	e.printf("Root CAs:\n%s\n", bundle)
	return nil
}

// writeX509Mint writes svid.pem, key.pem (owner-only) and bundle.pem into
// dir, as SPIRE does.
func writeX509Mint(e *env, dir string, r *x509MintResult) error {
	svid, key, bundle := r.pems()
	svidPath := filepath.Join(dir, "svid.pem")
	keyPath := filepath.Join(dir, "key.pem")
	bundlePath := filepath.Join(dir, "bundle.pem")
	if err := writeFileAtomic(svidPath, svid, 0o644); err != nil {
		return fmt.Errorf("unable to write SVID: %w", err)
	}
	e.printf("X509-SVID written to %s\n", svidPath)
	if err := writeFileAtomic(keyPath, key, 0o600); err != nil {
		return fmt.Errorf("unable to write key: %w", err)
	}
	e.printf("Private key written to %s\n", keyPath)
	if err := writeFileAtomic(bundlePath, bundle, 0o644); err != nil {
		return fmt.Errorf("unable to write bundle: %w", err)
	}
	e.printf("Root CAs written to %s\n", bundlePath)
	return nil
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// never sees half a key and an existing file gets the intended mode.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// jwtMintCommand is "jwt mint".
type jwtMintCommand struct {
	spiffeID string
	ttl      time.Duration
	audience stringsFlag
	write    string
	out      outputFormat
}

func (*jwtMintCommand) synopsis() string { return "Mints a JWT-SVID" }

func (c *jwtMintCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.spiffeID, "spiffeID", "", "SPIFFE ID of the JWT-SVID")
	fs.DurationVar(&c.ttl, "ttl", 0, "TTL of the JWT-SVID")
	fs.Var(&c.audience, "audience", "Audience claim that will be included in the SVID. Can be used more than once.")
	fs.StringVar(&c.write, "write", "", "File to write token to instead of stdout")
	addOutputFlag(fs, &c.out)
}

func (c *jwtMintCommand) buildRequest() (*svidv1.MintJWTSVIDRequest, error) {
	if c.spiffeID == "" {
		return nil, errors.New("spiffeID must be specified (set -spiffeID)")
	}
	if len(c.audience) == 0 {
		return nil, errors.New("at least one audience must be specified (set -audience)")
	}
	if c.ttl < 0 {
		return nil, errors.New("a positive TTL is required (set -ttl)")
	}
	id, err := idToProto(c.spiffeID)
	if err != nil {
		return nil, fmt.Errorf("invalid -spiffeID %q: %w", c.spiffeID, err)
	}
	return &svidv1.MintJWTSVIDRequest{Id: id, Audience: c.audience, Ttl: ttlToSeconds(c.ttl)}, nil
}

func (c *jwtMintCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.svid().MintJWTSVID(ctx, req)
	if err != nil {
		return fmt.Errorf("unable to mint SVID: %w", err)
	}
	token := resp.GetSvid().GetToken()
	if token == "" {
		return errors.New("server response missing token")
	}
	if eol, err := jwtExpiry(token); err != nil {
		e.errPrintf("Unable to determine JWT-SVID lifetime: %v\n", err)
	} else if time.Until(eol) < c.ttl {
		e.errPrintf("JWT-SVID lifetime was capped shorter than specified ttl; expires %q\n", eol.UTC().Format(time.RFC3339))
	}
	if c.write != "" {
		if err := writeFileAtomic(c.write, []byte(token), 0o600); err != nil {
			return fmt.Errorf("unable to write token: %w", err)
		}
		e.printf("JWT-SVID written to %s\n", c.write)
		return nil
	}
	return printJWTMint(e, c.out, resp)
}

func printJWTMint(e *env, out outputFormat, resp *svidv1.MintJWTSVIDResponse) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	e.printf("%s\n", resp.GetSvid().GetToken())
	return nil
}

// jwtExpiry reads the exp claim of a compact JWS without verifying it; it
// only serves the "lifetime was capped" warning.
func jwtExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("compact JWS format must have three parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid JWT payload encoding: %w", err)
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("invalid JWT claims: %w", err)
	}
	if claims.Exp == nil {
		return time.Time{}, errors.New("no expiry claim")
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp < 0 || exp > 1<<40 {
		return time.Time{}, fmt.Errorf("invalid expiry claim %q", claims.Exp.String())
	}
	return time.Unix(int64(exp), 0), nil
}
