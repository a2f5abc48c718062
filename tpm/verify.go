package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/go-attestation/attest"
	ekx509 "github.com/google/go-attestation/x509"
	"github.com/google/go-tpm/tpm2"
)

// EKCertificate is an EK certificate that chained to a configured
// manufacturer root, with the TPM identity from its subject alternative
// name.
type EKCertificate struct {
	Certificate *x509.Certificate
	// NotBefore and NotAfter bound the validity of the whole verified
	// chain, so a cached verification can be re-checked against the time.
	NotBefore, NotAfter time.Time
	// PublicKey is the EK public key certified by the manufacturer; it is
	// the only key MakeCredential may use.
	PublicKey    crypto.PublicKey
	Manufacturer string
	Model        string
	Version      string
}

// EKRoots are the manufacturer CAs an EK certificate must chain to.
type EKRoots struct {
	Roots         *x509.CertPool
	Intermediates *x509.CertPool

	// issuers caches intermediates that issued a verified EK certificate,
	// by subject: a manufacturer's EK certificates share a few issuing
	// CAs, so the issuer-to-root part of the chain is verified once, not
	// once per machine.
	mu      sync.Mutex
	issuers map[string][]*verifiedIssuer
}

// verifiedIssuer is an intermediate that chained to a root, as the
// direct issuer of an EK certificate.
type verifiedIssuer struct {
	cert *x509.Certificate
	// anchor holds only cert: an EK certificate verified against it
	// proves its signature by cert and its own validity.
	anchor *x509.CertPool
	// chain is cert and its verified ancestors.
	chain []*x509.Certificate
	// notBefore and notAfter bound the validity of the ancestors.
	notBefore, notAfter time.Time
}

// LoadEKRoots reads PEM certificates from a file or from every file of a
// directory: self-signed certificates become roots, others intermediates
// (swtpm's local CA is a root plus its issuer certificate).
func LoadEKRoots(path string) (*EKRoots, error) {
	files := []string{path}
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("tpm: EK CA: %w", err)
	} else if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("tpm: EK CA: %w", err)
		}
		files = files[:0]
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	r := &EKRoots{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("tpm: EK CA: %w", err)
		}
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("tpm: EK CA %s: %w", f, err)
			}
			r.Add(c)
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("tpm: EK CA: no PEM certificate in %s", path)
	}
	return r, nil
}

// Add adds c as a root when self-signed, else as an intermediate.
func (r *EKRoots) Add(c *x509.Certificate) {
	if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
		r.Roots.AddCert(c)
	} else {
		r.Intermediates.AddCert(c)
	}
}

// VerifyEKCertificate checks an EK certificate against the TCG EK
// Credential Profile and chains it to roots at time now. The TPM
// manufacturer, model and version come from the subject alternative name,
// which the profile makes critical and Go's verifier would otherwise
// refuse as an unhandled critical extension.
func VerifyEKCertificate(der []byte, roots *EKRoots, now time.Time) (*EKCertificate, error) {
	if roots == nil {
		return nil, errors.New("tpm: verify EK certificate: no roots configured")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify EK certificate: %w", err)
	}
	ek, err := ekx509.ToEKCertificate(cert)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify EK certificate: profile: %w", err)
	}
	if len(cert.UnhandledCriticalExtensions) != 0 {
		return nil, fmt.Errorf("tpm: verify EK certificate: unhandled critical extensions %v", cert.UnhandledCriticalExtensions)
	}
	if ek.TpmManufacturer == "" {
		return nil, errors.New("tpm: verify EK certificate: no TPM manufacturer in the subject alternative name")
	}
	chain, err := roots.verifyChain(cert, now)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify EK certificate: %w", err)
	}
	notBefore, notAfter := cert.NotBefore, cert.NotAfter
	for _, c := range chain {
		if c.NotBefore.After(notBefore) {
			notBefore = c.NotBefore
		}
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	switch cert.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("tpm: verify EK certificate: unsupported key type %T", cert.PublicKey)
	}
	return &EKCertificate{
		Certificate:  cert,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		PublicKey:    cert.PublicKey,
		Manufacturer: ek.TpmManufacturer,
		Model:        ek.TpmModel,
		Version:      ek.TpmVersion,
	}, nil
}

// ekVerifyOptions verify an EK certificate. EK certificates carry
// tcg-kp-EKCertificate, which Go does not know; the CA chain, not the
// EKU, is what vouches for the TPM.
func ekVerifyOptions(roots, intermediates *x509.CertPool, now time.Time) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}

// verifyChain returns a verified chain from cert to a root. When cert's
// issuer already issued a verified EK certificate, only cert's signature
// and validity are checked against it, and the issuer's cached ancestry
// against now: the rest of the chain is the same as then, so the path
// length constraints of the ancestors hold as they did. Chains whose CAs
// constrain names or policies, which depend on the leaf, are never cached.
func (r *EKRoots) verifyChain(cert *x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	r.mu.Lock()
	cands := r.issuers[string(cert.RawIssuer)]
	r.mu.Unlock()
	for _, is := range cands {
		if now.Before(is.notBefore) || now.After(is.notAfter) {
			continue
		}
		if _, err := cert.Verify(ekVerifyOptions(is.anchor, nil, now)); err == nil {
			return append([]*x509.Certificate{cert}, is.chain...), nil
		}
	}
	chains, err := cert.Verify(ekVerifyOptions(r.Roots, r.Intermediates, now))
	if err != nil {
		return nil, err
	}
	chain := chains[0]
	if len(chain) >= 3 && cacheable(chain[1:]) {
		is := &verifiedIssuer{cert: chain[1], anchor: x509.NewCertPool(), chain: chain[1:],
			notBefore: chain[1].NotBefore, notAfter: chain[1].NotAfter}
		is.anchor.AddCert(chain[1])
		for _, c := range chain[2:] {
			if c.NotBefore.After(is.notBefore) {
				is.notBefore = c.NotBefore
			}
			if c.NotAfter.Before(is.notAfter) {
				is.notAfter = c.NotAfter
			}
		}
		r.mu.Lock()
		if r.issuers == nil {
			r.issuers = map[string][]*verifiedIssuer{}
		}
		key := string(chain[1].RawSubject)
		if !slices.ContainsFunc(r.issuers[key], func(o *verifiedIssuer) bool { return o.cert.Equal(is.cert) }) {
			// Bounded: entries are configured intermediates.
			r.issuers[key] = append(r.issuers[key], is)
		}
		r.mu.Unlock()
	}
	return chain, nil
}

// cacheable reports whether no CA in cas constrains names or policies,
// the checks whose outcome depends on the leaf.
func cacheable(cas []*x509.Certificate) bool {
	for _, c := range cas {
		if len(c.PermittedDNSDomains)+len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+len(c.ExcludedIPRanges)+
			len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) != 0 {
			return false
		}
		if len(c.PolicyMappings) != 0 || c.RequireExplicitPolicy > 0 || c.RequireExplicitPolicyZero ||
			c.InhibitPolicyMapping > 0 || c.InhibitPolicyMappingZero || c.InhibitAnyPolicy > 0 || c.InhibitAnyPolicyZero {
			return false
		}
	}
	return true
}

// EKHash is the hex SHA-256 of the PKIX DER encoding of an EK public key:
// the stable name of a TPM in agent IDs and allow-lists.
func EKHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("tpm: EK hash: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// ParseEKPublic decodes an EK TPMT_PUBLIC (sent by TPMs without an EK
// certificate) and checks it has the shape of an endorsement key.
func ParseEKPublic(b []byte) (crypto.PublicKey, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("tpm: parse EK public: %w", err)
	}
	if !isEKShaped(pub) {
		return nil, errors.New("tpm: parse EK public: not a restricted decryption key fixed to its TPM")
	}
	k, err := PublicKeyFromTPM(pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: parse EK public: %w", err)
	}
	return k, nil
}

// AKPublic is an attestation key whose parameters passed VerifyAK.
type AKPublic struct {
	// Name is the AK's TPM name (algorithm ID and digest of its public
	// area), to which MakeCredential binds the secret.
	Name []byte
	// Key is the AK's public key.
	Key crypto.PublicKey
	// Hash is the SHA-256 hex of the AK's TPMT_PUBLIC, to pin it.
	Hash string

	// sigHash is the hash of the AK's signing scheme; zero admits any
	// allowed hash.
	sigHash crypto.Hash
}

// VerifyAK checks that p describes a key the TPM created as a restricted
// signing key that cannot leave it (fixedTPM, fixedParent,
// sensitiveDataOrigin), from the TPM's signed creation attestation and
// creation data. It does not prove which TPM holds the key; credential
// activation does.
func VerifyAK(p AKParams) (*AKPublic, error) {
	pub, err := parseSigningPublic(p.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify AK: public area: %w", err)
	}
	const want = attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin | attrRestricted | attrSignEncrypt
	switch {
	case pub.attrs&attrFixedTPM == 0:
		return nil, errors.New("tpm: verify AK: AK is exportable (fixedTPM clear)")
	case pub.attrs&want != want:
		return nil, errors.New("tpm: verify AK: not a restricted signing key fixed to its parent and generated by the TPM")
	case pub.attrs&attrDecrypt != 0:
		return nil, errors.New("tpm: verify AK: not a signing-only key")
	case pub.nameAlg != algSHA256:
		return nil, fmt.Errorf("tpm: verify AK: name algorithm %#x is not SHA-256", pub.nameAlg)
	}
	// The name is nameAlg || H(TPMT_PUBLIC); the decoder admits exactly
	// one encoding, so hashing the received bytes is hashing the key.
	sum := sha256.Sum256(p.Public)
	name := append([]byte{algSHA256 >> 8, algSHA256 & 0xff}, sum[:]...)
	ak := &AKPublic{Name: name, Key: pub.key, Hash: hex.EncodeToString(sum[:]), sigHash: pub.sigHash}

	if len(p.CreateAttestation) == 0 || len(p.CreateSignature) == 0 {
		return nil, errors.New("tpm: verify AK: no creation attestation")
	}
	att, err := parseAttestation(p.CreateAttestation)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify AK: creation attestation: %w", err)
	}
	if att.magic != tpmGenerated || att.typ != stAttestCreation {
		return nil, errors.New("tpm: verify AK: creation attestation was not produced by a TPM")
	}
	if err := checkCreationData(p.CreateData); err != nil {
		return nil, fmt.Errorf("tpm: verify AK: creation data: %w", err)
	}
	if cd := sha256.Sum256(p.CreateData); !bytes.Equal(att.creationHash, cd[:]) {
		return nil, errors.New("tpm: verify AK: creation attestation is for other creation data")
	}
	if !bytes.Equal(att.objectName, name) {
		return nil, errors.New("tpm: verify AK: creation attestation refers to a different key")
	}
	if err := ak.verifySignature(p.CreateAttestation, p.CreateSignature); err != nil {
		return nil, fmt.Errorf("tpm: verify AK: creation attestation: %w", err)
	}
	return ak, nil
}

// MakeCredential encrypts a fresh 32-byte secret to the EK public key ek
// (taken from a verified EK certificate, never from the agent) for the AK
// named akName. Only the TPM holding ek, with that AK loaded, can recover
// the secret.
func MakeCredential(ek crypto.PublicKey, akName []byte) (secret []byte, cred *Credential, err error) {
	tmpl, err := EKTemplate(ek, false)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: make credential: %w", err)
	}
	key, err := tpm2.ImportEncapsulationKey(&tmpl)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: make credential: %w", err)
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, fmt.Errorf("tpm: make credential: %w", err)
	}
	id, enc, err := tpm2.CreateCredential(rand.Reader, key, akName, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: make credential: %w", err)
	}
	return secret, &Credential{IDObject: id, EncryptedSecret: enc}, nil
}

// QuoteInfo is what a verified quote establishes.
type QuoteInfo struct {
	// PCRs are the verified SHA-256 values of the quoted PCRs.
	PCRs map[int][]byte
	// Clock, ResetCount and RestartCount come from the TPM's clock: reset
	// counts reboots, restart counts resumes since the last reboot, and
	// Clock (milliseconds) only moves forward while the TPM is powered.
	Clock        uint64
	ResetCount   uint32
	RestartCount uint32
}

// VerifyQuote checks q against ak: the signature, the TPM_GENERATED magic,
// the quote attestation type, the qualifying data, a PCR selection equal to
// pcrs in the SHA-256 bank, and the PCR digest recomputed from q.PCRs.
func VerifyQuote(ak *AKPublic, q *Quote, qualifyingData []byte, pcrs []int) (*QuoteInfo, error) {
	if q == nil || len(q.Attest) == 0 {
		return nil, errors.New("tpm: verify quote: empty quote")
	}
	if len(pcrs) == 0 {
		return nil, errors.New("tpm: verify quote: empty PCR selection requested")
	}
	if err := ak.verifySignature(q.Attest, q.Signature); err != nil {
		return nil, fmt.Errorf("tpm: verify quote: %w", err)
	}
	att, err := parseAttestation(q.Attest)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify quote: %w", err)
	}
	if att.magic != tpmGenerated {
		return nil, errors.New("tpm: verify quote: not generated by a TPM")
	}
	if att.typ != stAttestQuote {
		return nil, fmt.Errorf("tpm: verify quote: attestation type %#x is not a quote", att.typ)
	}
	if !bytes.Equal(att.extraData, qualifyingData) {
		return nil, errors.New("tpm: verify quote: qualifying data does not match the nonce and CSR key")
	}
	want, err := PCRSelection(pcrs)
	if err != nil {
		return nil, fmt.Errorf("tpm: verify quote: %w", err)
	}
	if !selectionEqual(att.pcrSelect, want) {
		return nil, errors.New("tpm: verify quote: PCR selection differs from the requested one")
	}
	idx := slices.Clone(pcrs)
	slices.Sort(idx)
	idx = slices.Compact(idx)
	if len(q.PCRs) != len(idx) {
		return nil, fmt.Errorf("tpm: verify quote: %d PCR values for %d quoted PCRs", len(q.PCRs), len(idx))
	}
	for _, p := range idx {
		if v, ok := q.PCRs[p]; !ok || len(v) != sha256.Size {
			return nil, fmt.Errorf("tpm: verify quote: missing or malformed value of PCR %d", p)
		}
	}
	if !bytes.Equal(att.pcrDigest, pcrDigest(idx, q.PCRs)) {
		return nil, errors.New("tpm: verify quote: PCR values do not match the quoted digest")
	}
	values := make(map[int][]byte, len(idx))
	for _, p := range idx {
		values[p] = slices.Clone(q.PCRs[p])
	}
	return &QuoteInfo{
		PCRs:         values,
		Clock:        att.clock,
		ResetCount:   att.resetCount,
		RestartCount: att.restartCount,
	}, nil
}

func selectionEqual(got []pcrBank, want tpm2.TPMLPCRSelection) bool {
	if len(got) != len(want.PCRSelections) {
		return false
	}
	for i, g := range got {
		w := want.PCRSelections[i]
		if g.hash != uint16(w.Hash) || !bytes.Equal(bytes.TrimRight(g.bitmap, "\x00"), bytes.TrimRight(w.PCRSelect, "\x00")) {
			return false
		}
	}
	return true
}

// verifySignature checks a TPMT_SIGNATURE by the AK over msg.
func (ak *AKPublic) verifySignature(msg, sigBytes []byte) error {
	sig, err := parseSignature(sigBytes)
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	h, err := hashOf(sig.hash)
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	if ak.sigHash != 0 && h != ak.sigHash {
		return fmt.Errorf("signature hash %v differs from the key's scheme %v", h, ak.sigHash)
	}
	d := h.New()
	d.Write(msg)
	switch k := ak.Key.(type) {
	case *ecdsa.PublicKey:
		if sig.alg != algECDSA {
			return fmt.Errorf("signature algorithm %#x for an ECC key", sig.alg)
		}
		r, s := new(big.Int).SetBytes(sig.r), new(big.Int).SetBytes(sig.s)
		if !ecdsa.Verify(k, d.Sum(nil), r, s) {
			return errors.New("bad signature")
		}
		return nil
	case *rsa.PublicKey:
		if sig.alg != algRSASSA {
			return fmt.Errorf("signature algorithm %#x for an RSA key", sig.alg)
		}
		if err := rsa.VerifyPKCS1v15(k, h, d.Sum(nil), sig.sig); err != nil {
			return fmt.Errorf("bad signature: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("unsupported AK type %T", ak.Key)
	}
}

// BootState is what a replayed event log says about the boot.
type BootState struct {
	// SecureBoot is nil when the log does not say, else whether UEFI
	// Secure Boot was enabled.
	SecureBoot *bool
	// Events is the number of verified events.
	Events int
}

// ReplayEventLog parses a TCG event log and replays it against the quoted
// SHA-256 PCR values; events of a PCR that was not quoted are not trusted.
func ReplayEventLog(raw []byte, pcrs map[int][]byte) (st *BootState, err error) {
	defer func() {
		if r := recover(); r != nil {
			st, err = nil, fmt.Errorf("tpm: replay event log: malformed log: %v", r)
		}
	}()
	el, err := attest.ParseEventLog(raw)
	if err != nil {
		return nil, fmt.Errorf("tpm: replay event log: %w", err)
	}
	in := make([]attest.PCR, 0, len(pcrs))
	for i, v := range pcrs {
		in = append(in, attest.PCR{Index: i, Digest: v, DigestAlg: crypto.SHA256})
	}
	events, err := el.Verify(in)
	if err != nil {
		return nil, fmt.Errorf("tpm: replay event log: %w", err)
	}
	st = &BootState{Events: len(events)}
	if sb, err := attest.ParseSecurebootState(events); err == nil {
		on := sb.Enabled
		st.SecureBoot = &on
	}
	return st, nil
}
