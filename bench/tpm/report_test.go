package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	agenttpm "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/tpm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// baseline is the server's first-attestation work with the untuned
// verifier.
func (ev *evidence) baseline(now time.Time) error {
	ek, err := baselineVerifyEK(ev.ekCert, ev.roots, now)
	if err != nil {
		return err
	}
	ak, err := baselineVerifyAK(ev.data.AK)
	if err != nil {
		return err
	}
	if _, _, err := tpm.MakeCredential(ek, ak.name); err != nil {
		return err
	}
	return baselineVerifyQuote(ak, ev.quote, ev.qd)
}

// tuned is the same work with the verifier in use. The EK chain's
// issuer-to-root part is cached in roots after the first call, as it is on
// a server once it has seen one machine of a manufacturer; each call still
// verifies the EK certificate's own signature, profile and validity.
func (ev *evidence) tuned(now time.Time) error {
	ekc, err := tpm.VerifyEKCertificate(ev.ekCert, ev.roots, now)
	if err != nil {
		return err
	}
	ak, err := tpm.VerifyAK(ev.data.AK)
	if err != nil {
		return err
	}
	if _, _, err := tpm.MakeCredential(ekc.PublicKey, ak.Name); err != nil {
		return err
	}
	_, err = tpm.VerifyQuote(ak, ev.quote, ev.qd, ev.pcrs)
	return err
}

// measure runs op on one goroutine for d (or n times when n > 0) and
// returns the mean time per call.
func measure(t *testing.T, d time.Duration, n int, op func() error) time.Duration {
	t.Helper()
	if err := op(); err != nil { // warm caches and the first-use path
		t.Fatal(err)
	}
	calls := 0
	start := time.Now()
	for (n > 0 && calls < n) || (n == 0 && time.Since(start) < d) {
		if err := op(); err != nil {
			t.Fatal(err)
		}
		calls++
	}
	return time.Since(start) / time.Duration(calls)
}

// TestReport measures the server's verification cost per attestation
// before and after tuning, in the same run, and end-to-end attestation on
// swtpm. Under `make test` it runs a few iterations of each, to keep the
// paths working; with BENCH_REPORT=1 it runs TPM_BENCH_SECONDS (default
// 2 s) per row and writes bench/RESULTS-tpm.md.
func TestReport(t *testing.T) {
	full := os.Getenv("BENCH_REPORT") == "1"
	d, n, nE2E := 2*time.Second, 0, 0
	if s := os.Getenv("TPM_BENCH_SECONDS"); s != "" {
		if v, err := time.ParseDuration(s + "s"); err == nil {
			d = v
		}
	}
	if !full {
		n, nE2E = 3, 1
	}
	type row struct {
		name, what    string
		before, after time.Duration
	}
	var rows []row
	fleet := startFleet(t)
	for _, c := range ekCases {
		ev := collectFrom(t, fleet, c)
		now := time.Now()
		// Interleave so that load from other processes hits both alike.
		var before, after time.Duration
		for range 2 {
			before += measure(t, d/2, n, func() error { return ev.baseline(now) })
			after += measure(t, d/2, n, func() error { return ev.tuned(now) })
		}
		rows = append(rows, row{name: "ServerVerify/ek=" + c.name, what: "first attestation of a machine, server CPU: EK certificate profile + chain, AK checks, MakeCredential, quote verification",
			before: before / 2, after: after / 2})
	}

	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	req, _ := x509.ParseCertificateRequest(csr)
	ctx := context.Background()
	e2e := map[string]time.Duration{}
	for _, c := range ekCases {
		v, err := servertpm.New(servertpm.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), EKRoots: roots})
		if err != nil {
			t.Fatal(err)
		}
		a, err := agenttpm.New(agenttpm.PluginData{TPMPath: fleet.TPMs[c.tpm].Path, EKAlgorithm: c.alg})
		if err != nil {
			t.Fatal(err)
		}
		e2e[c.name] = measure(t, d, nE2E, func() error {
			payload, err := a.AttestationData(ctx, csr)
			if err != nil {
				return err
			}
			res, err := v.Attest(ctx, payload, req, a.Respond)
			if err == nil && res.AgentID.IsZero() {
				err = fmt.Errorf("no agent ID")
			}
			return err
		})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# TPM node attestation benchmarks\n\n")
	fmt.Fprintf(&b, "`BENCH_REPORT=1 go test -run TestReport ./bench/tpm/` (%s per row, one goroutine) on %s, %d CPUs shared with other jobs, %s; swtpm with EK certificates from swtpm_localca; the P-256 EK (what hardware TPMs ship at 0x01c0000a) is provisioned into a second swtpm and certified by the same local CA with swtpm_cert (sim/swtpm.ProvisionP256EK).\n\n",
		d, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "## Server verification per attestation (target <= 1 ms on one core)\n\n")
	fmt.Fprintf(&b, "Before and after are measured in the same run, interleaved, so machine load hits both alike; the ratio is the figure to trust.\n\n")
	fmt.Fprintf(&b, "| benchmark | what it measures | before | after | after/before | target |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		met := "met"
		if r.after > time.Millisecond {
			met = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | <= 1 ms: %s |\n", r.name, r.what, r.before.Round(time.Microsecond), r.after.Round(time.Microsecond),
			float64(r.after)/float64(r.before), met)
	}
	fmt.Fprintf(&b, "\n## End-to-end attestation on swtpm (target <= 100 ms with an ECC AK)\n\n| benchmark | result | target |\n|---|---|---|\n")
	for _, c := range ekCases {
		met := "met"
		if e2e[c.name] > 100*time.Millisecond {
			met = "**missed**"
		}
		fmt.Fprintf(&b, "| AttestE2E/ek=%s (ECC P-256 AK) | %s | <= 100 ms: %s |\n", c.name, e2e[c.name].Round(10*time.Microsecond), met)
	}
	b.WriteString(reportNotes)
	t.Log("\n" + b.String())
	if full {
		if err := os.WriteFile("../RESULTS-tpm.md", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const reportNotes = `
## What changed between before and after

- EK chain: the issuer-to-root part of a verified chain is cached per issuing CA (in
  ` + "`tpm.EKRoots`" + `), so a machine's first attestation checks one signature (its EK
  certificate's) instead of the whole chain. Chains whose CAs carry name or policy
  constraints, which depend on the leaf, are always verified in full. The attestor also
  caches whole EK certificate verifications by certificate hash, so a re-attestation skips
  even that.
- AK, quote and signature decoding: hand-written decoders for TPMT_PUBLIC, TPMS_ATTEST,
  TPMT_SIGNATURE and TPMS_CREATION_DATA (tpm/wire.go, fuzzed against go-tpm's decoder)
  replace go-attestation's legacy decoder and go-tpm's reflection, and the AK is decoded
  once instead of twice; the AK name is hashed from the received bytes instead of being
  re-marshalled.
- What remains is cryptography: the EK certificate's signature (RSA-3072, by swtpm_localca's
  key; Go's constant-time RSA has assembly only up to 2048 bits, so this check alone takes
  about 0.35 ms), two ECDSA P-256 verifications (AK creation, quote) and MakeCredential
  (RSA-OAEP for an RSA EK; ECDH on the EK's curve for an ECC EK: P-384, swtpm_setup's
  choice, has no assembly in Go and costs about 0.75 ms, P-256 has and costs a fraction).
`
