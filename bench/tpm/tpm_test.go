// Package tpm benchmarks TPM node attestation: the server's verification
// cost per attestation (no TPM involved once the evidence exists) and the
// end-to-end attestation of an agent on swtpm with an ECC AK.
//
//	go test -run XXX -bench . ./bench/tpm/
//
// TestReport measures the same work with and without the verifier's
// tuning in one run; with BENCH_REPORT=1 it runs at full length and writes
// bench/RESULTS-tpm.md, otherwise it runs a few iterations as a test.
package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	agenttpm "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type evidence struct {
	roots  *tpm.EKRoots
	data   tpm.AttestationData
	ak     *tpm.AKPublic
	quote  *tpm.Quote
	qd     []byte
	pcrs   []int
	ekCert []byte
}

// ekCase is an EK kind the benchmarks measure: swtpm_setup's RSA and
// P-384 EKs on the first TPM of the fleet, and on the second the P-256 EK
// hardware TPMs ship.
type ekCase struct {
	name, alg string
	tpm       int
}

var ekCases = []ekCase{{"rsa", "rsa", 0}, {"ecc-p384", "ecc", 0}, {"ecc-p256", "ecc", 1}}

// startFleet starts the two TPMs ekCases name.
func startFleet(b testing.TB) *swtpm.Fleet {
	fleet := swtpm.StartT(b, 2)
	if err := fleet.ProvisionP256EK(fleet.TPMs[1]); err != nil {
		b.Fatal(err)
	}
	return fleet
}

// collect gathers one attestation's evidence from swtpm.
func collect(b testing.TB, c ekCase) *evidence {
	return collectFrom(b, startFleet(b), c)
}

// collectFrom gathers the evidence from a running simulator.
func collectFrom(b testing.TB, fleet *swtpm.Fleet, c ekCase) *evidence {
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		b.Fatal(err)
	}
	tp, err := tpm.Open(fleet.TPMs[c.tpm].Path)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK(tpm.WithEKAlgorithm(c.alg))
	if err != nil {
		b.Fatal(err)
	}
	ak, err := tp.NewAK()
	if err != nil {
		b.Fatal(err)
	}
	defer ak.Close()
	akPub, err := tpm.VerifyAK(ak.Params())
	if err != nil {
		b.Fatal(err)
	}
	pcrs := servertpm.DefaultPCRs
	qd := tpm.QualifyingData(make([]byte, 32), []byte("csr key"))
	q, err := tp.Quote(ak, qd, pcrs)
	if err != nil {
		b.Fatal(err)
	}
	return &evidence{roots: roots, data: tpm.AttestationData{AK: ak.Params()}, ak: akPub, quote: q, qd: qd, pcrs: pcrs, ekCert: ek.Certificate}
}

// BenchmarkServerVerify is the server's CPU work per attestation: EK
// certificate chain and profile, AK parameters, MakeCredential and quote
// verification.
func BenchmarkServerVerify(b *testing.B) {
	for _, c := range ekCases {
		b.Run("ek="+c.name, func(b *testing.B) {
			ev := collect(b, c)
			now := time.Now()
			b.ResetTimer()
			for b.Loop() {
				ekc, err := tpm.VerifyEKCertificate(ev.ekCert, ev.roots, now)
				if err != nil {
					b.Fatal(err)
				}
				ak, err := tpm.VerifyAK(ev.data.AK)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := tpm.MakeCredential(ekc.PublicKey, ak.Name); err != nil {
					b.Fatal(err)
				}
				if _, err := tpm.VerifyQuote(ak, ev.quote, ev.qd, ev.pcrs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkServerVerifyBaseline is BenchmarkServerVerify with the
// verifier as it was before tuning (see baseline_test.go).
func BenchmarkServerVerifyBaseline(b *testing.B) {
	for _, c := range ekCases {
		b.Run("ek="+c.name, func(b *testing.B) {
			ev := collect(b, c)
			now := time.Now()
			b.ResetTimer()
			for b.Loop() {
				if err := ev.baseline(now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAttestE2E is one full node attestation on swtpm: the agent
// reads its EK, creates and certifies its ECC AK, the server verifies and
// challenges, the agent activates the credential and quotes, the server
// verifies the quote.
func BenchmarkAttestE2E(b *testing.B) {
	fleet := startFleet(b)
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		b.Fatal(err)
	}
	v, err := servertpm.New(servertpm.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), EKRoots: roots})
	if err != nil {
		b.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	req, _ := x509.ParseCertificateRequest(csr)
	ctx := context.Background()
	for _, c := range ekCases {
		b.Run("ek="+c.name, func(b *testing.B) {
			a, err := agenttpm.New(agenttpm.PluginData{TPMPath: fleet.TPMs[c.tpm].Path, EKAlgorithm: c.alg})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				payload, err := a.AttestationData(ctx, csr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := v.Attest(ctx, payload, req, a.Respond); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkServerReverify is the server's work for a re-attesting agent
// whose EK certificate verification is cached: AK checks, MakeCredential
// and quote verification.
func BenchmarkServerReverify(b *testing.B) {
	ev := collect(b, ekCases[0])
	ekc, err := tpm.VerifyEKCertificate(ev.ekCert, ev.roots, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		ak, err := tpm.VerifyAK(ev.data.AK)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := tpm.MakeCredential(ekc.PublicKey, ak.Name); err != nil {
			b.Fatal(err)
		}
		if _, err := tpm.VerifyQuote(ak, ev.quote, ev.qd, ev.pcrs); err != nil {
			b.Fatal(err)
		}
	}
}
