// Package tpmdevid verifies DevID node attestation, compatible with
// SPIRE's "tpm_devid" plugin (same configuration keys, messages, agent ID
// and selectors), so nodes enrolled with DevIDs for SPIRE attest here
// without re-enrolment.
//
// The server checks the DevID certificate chain against devid_ca_path and
// the EK certificate against endorsement_ca_path, that an attestation key
// of that TPM certified the DevID key (TPM2_Certify), and then challenges
// the agent twice in one message: sign a nonce with the DevID key (proof
// of possession) and activate a credential made to the EK for the AK
// (proof that the AK, and so the DevID key, lives in that TPM). It is
// stricter than SPIRE in three places that SPIRE's own agent satisfies:
// the AK must be a restricted key fixed to its TPM, the DevID key must be
// fixedTPM, and the DevID public area must be the certificate's key (see
// tpm.VerifyDevIDResidency).
//
// Agents are named spiffe://<td>/spire/agent/tpm_devid/<SHA-1 fingerprint
// of the DevID certificate>.
package tpmdevid

import (
	"context"
	"crypto/sha1" //nolint:gosec // SPIRE names agents and CAs by SHA-1 fingerprint.
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// PluginName is the attestation type, the selector type and the plugin
// name in configs.
const PluginName = "tpm_devid"

// PluginData is the plugin_data block of NodeAttestor "tpm_devid".
type PluginData struct {
	// DevIDCAPath holds the PEM CAs DevID certificates chain to.
	DevIDCAPath string `hcl:"devid_ca_path"`
	// EndorsementCAPath holds the PEM TPM manufacturer CAs.
	EndorsementCAPath string `hcl:"endorsement_ca_path"`
}

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// DevIDRoots are the CAs DevID certificates must chain to.
	DevIDRoots *x509.CertPool
	// EKRoots are the CAs EK certificates must chain to.
	EKRoots *tpm.EKRoots
	Now     func() time.Time
}

// Attestor verifies tpm_devid attestation.
type Attestor struct {
	cfg Config
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("tpm_devid: trust domain is required")
	case cfg.DevIDRoots == nil:
		return nil, errors.New("tpm_devid: devid_ca_path is required")
	case cfg.EKRoots == nil:
		return nil, errors.New("tpm_devid: endorsement_ca_path is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Attestor{cfg: cfg}, nil
}

// NewFromPluginData builds an Attestor from its plugin_data. Every
// certificate of either file is a trust anchor, as in SPIRE: an operator's
// endorsement_ca_path may name an intermediate on its own.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData) (*Attestor, error) {
	var errs []error
	if d.DevIDCAPath == "" {
		errs = append(errs, errors.New("tpm_devid: devid_ca_path is required"))
	}
	if d.EndorsementCAPath == "" {
		errs = append(errs, errors.New("tpm_devid: endorsement_ca_path is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	devIDRoots, err := loadPool(d.DevIDCAPath)
	if err != nil {
		return nil, fmt.Errorf("tpm_devid: unable to load DevID trust bundle: %w", err)
	}
	ekPool, err := loadPool(d.EndorsementCAPath)
	if err != nil {
		return nil, fmt.Errorf("tpm_devid: unable to load endorsement trust bundle: %w", err)
	}
	return New(Config{TrustDomain: td, DevIDRoots: devIDRoots,
		EKRoots: &tpm.EKRoots{Roots: ekPool, Intermediates: x509.NewCertPool()}})
}

// loadPool reads the PEM certificates of a file; it must hold one.
func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, n := x509.NewCertPool(), 0
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// Type implements nodeattestor.Attestor.
func (*Attestor) Type() string { return PluginName }

// Fingerprint is the hex SHA-1 of a certificate's DER, SPIRE's agent name
// and ca:fingerprint selector.
func Fingerprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec // a name, not a security boundary: the chain and proofs are.
	return hex.EncodeToString(sum[:])
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "tpm_devid: "+format, args...)
}

// Attest implements nodeattestor.Attestor. The CSR is not bound: SPIRE's
// tpm_devid evidence binds no key of the agent's.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, challenge nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	d, err := tpm.ParseDevIDAttestation(payload)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	leaf, err := x509.ParseCertificate(d.DevIDCert[0])
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "tpm_devid: unable to parse DevID certificate: %v", err)
	}
	inter := x509.NewCertPool()
	for i, der := range d.DevIDCert[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "tpm_devid: unable to parse DevID intermediate certificate %d: %v", i, err)
		}
		inter.AddCert(c)
	}
	now := a.cfg.Now()
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: a.cfg.DevIDRoots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, deny("unable to verify DevID certificate: %v", err)
	}
	ev, err := tpm.VerifyDevIDResidency(d, leaf.PublicKey, a.cfg.EKRoots, now)
	if err != nil {
		return nil, deny("DevID residency: %v", err)
	}
	ch, err := json.Marshal(ev.Challenge)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "tpm_devid: challenge: %v", err)
	}
	raw, err := challenge(ctx, ch)
	if err != nil {
		return nil, err
	}
	resp, err := tpm.ParseDevIDChallengeResponse(raw)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := tpm.VerifyDevIDResponse(ev, leaf, resp); err != nil {
		return nil, deny("%v", err)
	}
	id, err := spiffeid.FromSegments(a.cfg.TrustDomain, "spire", "agent", PluginName, Fingerprint(leaf))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "tpm_devid: agent ID: %v", err)
	}
	return &nodeattestor.Result{AgentID: id, Selectors: Selectors(leaf, chains), CanReattest: true}, nil
}

// Selectors are SPIRE's tpm_devid selectors: subject:cn and issuer:cn of
// the DevID certificate (when set), and ca:fingerprint of every CA in the
// verified chains, once each. (SPIRE's documentation says "fingerprint:";
// its code, which the selectors of enrolled nodes follow, says
// "ca:fingerprint:".)
func Selectors(leaf *x509.Certificate, chains [][]*x509.Certificate) []*types.Selector {
	var out []*types.Selector
	add := func(v string) { out = append(out, &types.Selector{Type: PluginName, Value: v}) }
	if cn := leaf.Subject.CommonName; cn != "" {
		add("subject:cn:" + cn)
	}
	if cn := leaf.Issuer.CommonName; cn != "" {
		add("issuer:cn:" + cn)
	}
	seen := map[string]bool{}
	for _, chain := range chains {
		for _, c := range chain[1:] {
			fp := Fingerprint(c)
			if !seen[fp] {
				seen[fp] = true
				add("ca:fingerprint:" + fp)
			}
		}
	}
	return out
}
