// Command showcert prints an X.509-SVID chain written by
// `spire-agent api fetch x509 -write` and verifies it against the bundle
// with go-spiffe, as any SPIFFE workload would. The demo uses it.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: showcert SVID.pem BUNDLE.pem")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "showcert:", err)
		os.Exit(1)
	}
}

func run(svidPath, bundlePath string) error {
	svidPEM, err := os.ReadFile(svidPath)
	if err != nil {
		return err
	}
	var chain []*x509.Certificate
	for block, rest := pem.Decode(svidPEM); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return fmt.Errorf("no certificate in %s", svidPath)
	}
	if err != nil {
		return err
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return err
	}
	bundle, err := x509bundle.Load(id.TrustDomain(), bundlePath)
	if err != nil {
		return err
	}
	fmt.Printf("SPIFFE ID:  %s\n", id)
	for i, c := range chain {
		role := "leaf"
		if i > 0 {
			role = "intermediate"
		}
		fmt.Printf("[%d] %-12s subject=%q issuer=%q\n", i, role, c.Subject.String(), c.Issuer.String())
		fmt.Printf("    valid %s .. %s (expires in %s)\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), time.Until(c.NotAfter).Round(time.Second))
	}
	for _, a := range bundle.X509Authorities() {
		fmt.Printf("[root]             subject=%q valid until %s\n", a.Subject.String(), a.NotAfter.UTC().Format(time.RFC3339))
	}
	verifiedID, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		return fmt.Errorf("chain does NOT verify against the bundle: %w", err)
	}
	if verifiedID != id {
		return fmt.Errorf("verified ID %s differs from %s", verifiedID, id)
	}
	fmt.Printf("Verified with go-spiffe against the %s trust bundle.\n", id.TrustDomain())
	return nil
}
