// Package tpm verifies TPM 2.0 node attestation: an agent proves it runs
// on a specific, genuine TPM (EK certificate chaining to a manufacturer
// root, or an allow-listed EK) with an attestation key resident in that
// TPM (credential activation), and reports the machine's state in a quote
// over a fresh server nonce bound to its CSR key. An agent whose CSR key
// is resident in that TPM proves it with the AK's certification of the
// key and gets selector tpm:agent_key:resident.
//
// Agents are named by their EK, so a machine keeps its ID across
// re-installs; the server pins the AK and the TPM's reset/restart counters
// per agent ID in the node's selectors and refuses a different AK or
// counters that go backwards.
package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/tpm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PluginName is the attestation type and the plugin name in configs.
const PluginName = "tpm"

// DefaultPCRs is the PCR selection quoted when the config names none: the
// platform firmware, configuration and boot-loader PCRs.
var DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// DefaultNonceTTL bounds how long the agent has to answer a challenge.
const DefaultNonceTTL = 60 * time.Second

// PluginData is the plugin_data block of NodeAttestor "tpm".
type PluginData struct {
	// EKCAPath is a PEM file or directory of manufacturer roots and
	// intermediates.
	EKCAPath string `hcl:"ek_ca_path"`
	// EKHashPath is a file of allowed EK hashes (hex SHA-256 of the PKIX
	// EK public key), one per line, for TPMs without EK certificates.
	EKHashPath      string `hcl:"ek_hash_path"`
	PCRs            []int  `hcl:"pcrs"`
	RequireEventLog bool   `hcl:"require_event_log"`
	// RequireResidentAgentKey refuses agents that do not prove their SVID
	// key TPM-resident (agent KeyManager "tpm").
	RequireResidentAgentKey bool `hcl:"require_resident_agent_key"`
}

// NodeLookup is the part of the datastore the attestor needs to pin an
// agent ID to its TPM.
type NodeLookup interface {
	GetNodeSelectors(ctx context.Context, spiffeID string) ([]*types.Selector, error)
}

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// EKRoots verify EK certificates; nil admits only allow-listed EKs.
	EKRoots *tpm.EKRoots
	// EKHashes is the allow-list of EK hashes.
	EKHashes map[string]bool
	// PCRs to quote; nil means DefaultPCRs.
	PCRs            []int
	RequireEventLog bool
	// RequireResidentAgentKey refuses an attestation whose response does
	// not carry the AK's certification of the CSR key.
	RequireResidentAgentKey bool
	// Nodes pins agent IDs to AKs and counters; nil disables pinning.
	Nodes    NodeLookup
	NonceTTL time.Duration
	Now      func() time.Time
}

// Attestor verifies TPM attestation.
type Attestor struct {
	cfg    Config
	nonces nonceStore
	// certs caches verified EK certificates by the SHA-256 of their DER:
	// chain verification is most of the server's cost, and a re-attesting
	// agent presents the same certificate every time. Validity at the
	// current time is checked again on every use.
	mu    sync.Mutex
	certs map[[32]byte]*tpm.EKCertificate
}

// maxCachedCerts bounds the EK certificate cache; it is cleared when full.
const maxCachedCerts = 100_000

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("tpm: trust domain is required")
	}
	if cfg.EKRoots == nil && len(cfg.EKHashes) == 0 {
		return nil, errors.New("tpm: ek_ca_path or ek_hash_path is required")
	}
	if cfg.PCRs == nil {
		cfg.PCRs = DefaultPCRs
	}
	if len(cfg.PCRs) == 0 {
		return nil, errors.New("tpm: pcrs must not be empty")
	}
	if _, err := tpm.PCRSelection(cfg.PCRs); err != nil {
		return nil, err
	}
	cfg.PCRs = slices.Clone(cfg.PCRs)
	slices.Sort(cfg.PCRs)
	cfg.PCRs = slices.Compact(cfg.PCRs)
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Attestor{cfg: cfg, nonces: nonceStore{m: map[string]time.Time{}}, certs: map[[32]byte]*tpm.EKCertificate{}}, nil
}

// NewFromPluginData builds an Attestor from its plugin_data.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData, nodes NodeLookup) (*Attestor, error) {
	cfg := Config{TrustDomain: td, PCRs: d.PCRs, RequireEventLog: d.RequireEventLog, RequireResidentAgentKey: d.RequireResidentAgentKey, Nodes: nodes}
	if d.EKCAPath != "" {
		r, err := tpm.LoadEKRoots(d.EKCAPath)
		if err != nil {
			return nil, fmt.Errorf("tpm: ek_ca_path: %w", err)
		}
		cfg.EKRoots = r
	}
	if d.EKHashPath != "" {
		h, err := LoadEKHashes(d.EKHashPath)
		if err != nil {
			return nil, err
		}
		cfg.EKHashes = h
	}
	return New(cfg)
}

// LoadEKHashes reads an allow-list of hex EK hashes, one per line; blank
// lines and lines starting with # are ignored.
func LoadEKHashes(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: ek_hash_path: %w", err)
	}
	out := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.ToLower(strings.TrimSpace(line))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if d, err := hex.DecodeString(line); err != nil || len(d) != 32 {
			return nil, fmt.Errorf("tpm: ek_hash_path %s line %d: not a hex SHA-256", path, i+1)
		}
		out[line] = true
	}
	return out, nil
}

// Type implements nodeattestor.Attestor.
func (a *Attestor) Type() string { return PluginName }

// AgentID is the ID of the agent whose EK hash is ekHash.
func AgentID(td spiffeid.TrustDomain, ekHash string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "spire", "agent", PluginName, ekHash)
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "tpm: "+format, args...)
}

// Attest implements nodeattestor.Attestor. csr is required: the quote must
// bind the key the server certifies, so an attestation without it is
// refused rather than verified without that binding.
func (a *Attestor) Attest(ctx context.Context, payload []byte, csr *x509.CertificateRequest, challenge nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	if csr == nil || csr.PublicKey == nil {
		return nil, status.Error(codes.InvalidArgument, "tpm: no CSR to bind the quote to: the attestation must carry the CSR of the agent SVID")
	}
	certifiedKey, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "tpm: CSR key: %v", err)
	}
	if challenge == nil {
		return nil, status.Error(codes.Internal, "tpm: no challenge function: the attestation needs one round trip")
	}
	data, err := tpm.ParseAttestationData(payload)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ek, err := a.verifyEK(data)
	if err != nil {
		return nil, err
	}
	ak, err := tpm.VerifyAK(data.AK)
	if err != nil {
		return nil, deny("%v", err)
	}
	// The agent quotes over the key of the CSR in its attestation data;
	// refusing another key here names the mismatch instead of leaving it
	// to surface as a failed quote.
	dataKey, err := tpm.CSRKeyDER(data.CSR)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !bytes.Equal(dataKey, certifiedKey) {
		return nil, deny("the attestation data is for another CSR key than the one to certify")
	}
	id, err := AgentID(a.cfg.TrustDomain, ek.hash)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "tpm: agent ID: %v", err)
	}
	pinned, err := a.pinned(ctx, id)
	if err != nil {
		return nil, err
	}
	if pinned.akHash != "" && pinned.akHash != ak.Hash {
		return nil, deny("agent %s is already attested with another attestation key; delete the agent to enroll a new one", id)
	}

	// Only the key of the verified certificate (or allow-listed EK)
	// encrypts the credential, so only that TPM can answer.
	secret, cred, err := tpm.MakeCredential(ek.key, ak.Name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	nonce, err := a.nonces.issue(a.cfg.Now(), a.cfg.NonceTTL)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "tpm: nonce: %v", err)
	}
	chal, err := json.Marshal(tpm.Challenge{Credential: *cred, Nonce: nonce, PCRs: a.cfg.PCRs})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "tpm: challenge: %v", err)
	}
	raw, err := challenge(ctx, chal)
	if err != nil {
		a.nonces.consume(nonce, a.cfg.Now())
		return nil, err
	}
	resp, err := tpm.ParseChallengeResponse(raw)
	if err != nil {
		a.nonces.consume(nonce, a.cfg.Now())
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// Consume the issued nonce whatever the answer, then check the echoed
	// one was issued, is unexpired and is this attestation's.
	issuedOK := a.nonces.consume(nonce, a.cfg.Now())
	if !bytes.Equal(resp.Nonce, nonce) {
		return nil, deny("unknown nonce")
	}
	if !issuedOK {
		return nil, deny("nonce expired")
	}
	if subtle.ConstantTimeCompare(secret, resp.Secret) != 1 {
		return nil, deny("credential activation failed: the AK is not in the TPM of this EK")
	}
	info, err := tpm.VerifyQuote(ak, &resp.Quote, tpm.QualifyingData(nonce, certifiedKey), a.cfg.PCRs)
	if err != nil {
		return nil, deny("%v", err)
	}
	if err := pinned.checkCounters(info); err != nil {
		return nil, deny("%v", err)
	}
	var boot *tpm.BootState
	switch {
	case len(resp.EventLog) > 0:
		if boot, err = tpm.ReplayEventLog(resp.EventLog, info.PCRs); err != nil {
			return nil, deny("%v", err)
		}
	case a.cfg.RequireEventLog:
		return nil, deny("an event log is required")
	}
	// The AK is now proven to live in this TPM, so its certification of
	// the CSR key proves the key lives there too. A proof that is present
	// but false is an attack (a copied key, a duplicable one, another
	// TPM's AK), so it refuses the agent rather than admitting it without
	// the selector.
	resident := false
	switch {
	case resp.AgentKey != nil:
		if err := tpm.VerifyResidentKey(ak, resp.AgentKey, tpm.AgentKeyQualifyingData(nonce, certifiedKey), csr.PublicKey); err != nil {
			return nil, deny("agent key: %s", strings.TrimPrefix(err.Error(), "tpm: "))
		}
		resident = true
	case a.cfg.RequireResidentAgentKey:
		return nil, deny("a TPM-resident agent key is required (require_resident_agent_key) and the agent sent no certification of its CSR key: configure the agent with KeyManager \"tpm\"")
	}
	return &nodeattestor.Result{
		AgentID:     id,
		Selectors:   selectors(ek, ak, info, boot, resident),
		CanReattest: true,
	}, nil
}

type verifiedEK struct {
	key  any
	hash string
	cert *tpm.EKCertificate
}

func (a *Attestor) verifyEK(d *tpm.AttestationData) (*verifiedEK, error) {
	var pubKey any
	if len(d.EKPublic) > 0 {
		k, err := tpm.ParseEKPublic(d.EKPublic)
		if err != nil {
			return nil, deny("%v", err)
		}
		pubKey = k
	}
	if len(d.EKCert) > 0 {
		if a.cfg.EKRoots != nil {
			c, err := a.verifyEKCert(d.EKCert)
			if err == nil {
				if pubKey != nil && !keysEqual(pubKey, c.PublicKey) {
					return nil, deny("the EK public key is not the one of the EK certificate")
				}
				h, err := tpm.EKHash(c.PublicKey)
				if err != nil {
					return nil, deny("%v", err)
				}
				return &verifiedEK{key: c.PublicKey, hash: h, cert: c}, nil
			}
			if len(a.cfg.EKHashes) == 0 {
				return nil, deny("%v", err)
			}
		}
		// An allow-listed EK may come with an unverifiable certificate;
		// its key is what the allow-list names.
		c, err := x509.ParseCertificate(d.EKCert)
		if err != nil {
			return nil, deny("EK certificate: %v", err)
		}
		if pubKey != nil && !keysEqual(pubKey, c.PublicKey) {
			return nil, deny("the EK public key is not the one of the EK certificate")
		}
		pubKey = c.PublicKey
	}
	h, err := tpm.EKHash(pubKey)
	if err != nil {
		return nil, deny("%v", err)
	}
	if !a.cfg.EKHashes[h] {
		return nil, deny("EK %s is neither certified by a configured root nor allow-listed", h)
	}
	return &verifiedEK{key: pubKey, hash: h}, nil
}

func (a *Attestor) verifyEKCert(der []byte) (*tpm.EKCertificate, error) {
	key := sha256.Sum256(der)
	now := a.cfg.Now()
	a.mu.Lock()
	c, ok := a.certs[key]
	a.mu.Unlock()
	if ok && !now.Before(c.NotBefore) && !now.After(c.NotAfter) {
		return c, nil
	}
	c, err := tpm.VerifyEKCertificate(der, a.cfg.EKRoots, now)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if len(a.certs) >= maxCachedCerts {
		clear(a.certs)
	}
	a.certs[key] = c
	a.mu.Unlock()
	return c, nil
}

func keysEqual(a, b any) bool {
	ae, ok := a.(interface{ Equal(x any) bool })
	if ok {
		return ae.Equal(b)
	}
	ad, err1 := x509.MarshalPKIXPublicKey(a)
	bd, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ad, bd)
}

// Selector values stored with the node. ak_hash and the counters are what
// re-attestation compares against.
const (
	selEKHash       = "ek_hash:"
	selAKHash       = "ak_hash:"
	selResetCount   = "reset_count:"
	selRestartCount = "restart_count:"
	selClock        = "clock:"
)

// AgentKeyResident is the value of the selector (type PluginName) of an
// agent that proved its SVID key resident in its TPM: entries can require
// it, and the API refuses such an agent a renewal, which would certify a
// new key without the proof.
const AgentKeyResident = "agent_key:resident"

func sel(v string) *types.Selector { return &types.Selector{Type: PluginName, Value: v} }

func selectors(ek *verifiedEK, ak *tpm.AKPublic, q *tpm.QuoteInfo, boot *tpm.BootState, resident bool) []*types.Selector {
	out := []*types.Selector{sel(selEKHash + ek.hash), sel(selAKHash + ak.Hash)}
	if c := ek.cert; c != nil {
		out = append(out, sel("manufacturer:"+c.Manufacturer), sel("model:"+c.Model), sel("version:"+c.Version))
	}
	idx := make([]int, 0, len(q.PCRs))
	for i := range q.PCRs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		out = append(out, sel(fmt.Sprintf("pcr:sha256:%d:%s", i, hex.EncodeToString(q.PCRs[i]))))
	}
	if boot != nil && boot.SecureBoot != nil {
		if *boot.SecureBoot {
			out = append(out, sel("secureboot:enabled"))
		} else {
			out = append(out, sel("secureboot:disabled"))
		}
	}
	if resident {
		out = append(out, sel(AgentKeyResident))
	}
	out = append(out,
		sel(selResetCount+strconv.FormatUint(uint64(q.ResetCount), 10)),
		sel(selRestartCount+strconv.FormatUint(uint64(q.RestartCount), 10)),
		sel(selClock+strconv.FormatUint(q.Clock, 10)))
	return out
}

// pinnedState is what the previous attestation of an agent ID recorded.
type pinnedState struct {
	akHash                   string
	hasCounters              bool
	resetCount, restartCount uint64
	clock                    uint64
}

func (a *Attestor) pinned(ctx context.Context, id spiffeid.ID) (pinnedState, error) {
	var p pinnedState
	if a.cfg.Nodes == nil {
		return p, nil
	}
	sels, err := a.cfg.Nodes.GetNodeSelectors(ctx, id.String())
	if errors.Is(err, datastore.ErrNotFound) {
		return p, nil
	}
	if err != nil {
		return p, status.Errorf(codes.Internal, "tpm: look up agent %s: %v", id, err)
	}
	return parsePinned(sels), nil
}

func parsePinned(sels []*types.Selector) pinnedState {
	var p pinnedState
	n := 0
	for _, s := range sels {
		if s.GetType() != PluginName {
			continue
		}
		v := s.GetValue()
		var err error
		switch {
		case strings.HasPrefix(v, selAKHash):
			p.akHash = strings.TrimPrefix(v, selAKHash)
		case strings.HasPrefix(v, selResetCount):
			p.resetCount, err = strconv.ParseUint(strings.TrimPrefix(v, selResetCount), 10, 32)
			n++
		case strings.HasPrefix(v, selRestartCount):
			p.restartCount, err = strconv.ParseUint(strings.TrimPrefix(v, selRestartCount), 10, 32)
			n++
		case strings.HasPrefix(v, selClock):
			p.clock, err = strconv.ParseUint(strings.TrimPrefix(v, selClock), 10, 64)
			n++
		}
		if err != nil {
			n = -10 // a corrupt counter pins nothing rather than everything
		}
	}
	p.hasCounters = n == 3
	return p
}

// checkCounters refuses a quote from an earlier TPM state than the last
// one seen: a reset count that went down, a restart count that went down
// within the same boot, or a clock that went back within the same boot.
//
// A TPM obfuscates both counts in quotes by an AK (owner hierarchy) by
// adding a per-key constant modulo 2^32. The AK is pinned per agent, so
// the constant is the same on both sides, and the counts are compared by
// their difference modulo 2^32.
func (p pinnedState) checkCounters(q *tpm.QuoteInfo) error {
	if !p.hasCounters {
		return nil
	}
	back := func(old, cur uint64) bool { return uint32(cur)-uint32(old) > 1<<31 }
	switch {
	case back(p.resetCount, uint64(q.ResetCount)):
		return fmt.Errorf("TPM reset count went back from %d to %d", p.resetCount, q.ResetCount)
	case uint32(p.resetCount) != q.ResetCount:
		return nil // rebooted: restart count and clock may start over
	case back(p.restartCount, uint64(q.RestartCount)):
		return fmt.Errorf("TPM restart count went back from %d to %d without a reboot", p.restartCount, q.RestartCount)
	case uint32(p.restartCount) == q.RestartCount && q.Clock < p.clock:
		return fmt.Errorf("TPM clock went back from %d to %d without a reboot", p.clock, q.Clock)
	}
	return nil
}

// nonceStore hands out single-use nonces that expire.
type nonceStore struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (s *nonceStore) issue(now time.Time, ttl time.Duration) ([]byte, error) {
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, exp := range s.m {
		if now.After(exp) {
			delete(s.m, k)
		}
	}
	s.m[string(n)] = now.Add(ttl)
	return n, nil
}

// consume removes n and reports whether it was issued and is unexpired.
func (s *nonceStore) consume(n []byte, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[string(n)]
	delete(s.m, string(n))
	return ok && !now.After(exp)
}
