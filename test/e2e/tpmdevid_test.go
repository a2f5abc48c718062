package e2e

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor/tpmdevid"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

// TestTPMDevIDNodeAttestation drives tpm_devid through the real binaries
// with SPIRE's configuration keys: a swtpm holding a DevID issued under an
// intermediate of a test root, the agent named by the DevID certificate's
// fingerprint with SPIRE's selectors, and a go-spiffe workload getting
// SVIDs both from an entry under the agent ID and from a node alias that
// selects on the DevID's CA fingerprint.
func TestTPMDevIDNodeAttestation(t *testing.T) {
	t.Parallel()
	fleet := swtpm.StartT(t, 1)
	root, err := testpki.NewRoot("e2e devid root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("e2e devid issuing")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	devIDCA := filepath.Join(dir, "devid-ca.pem")
	if err := os.WriteFile(devIDCA, testpki.CertsPEM(root.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := fleet.ProvisionDevID(fleet.TPMs[0], swtpm.DevIDOptions{CA: inter, Intermediates: []*x509.Certificate{inter.Cert},
		KeyType: "ecc", Password: "s3cret", CommonName: "edge-7", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	agentID := "spiffe://example.org/spire/agent/tpm_devid/" + tpmdevid.Fingerprint(d.Cert)

	s := startServerConf(t, serverConfig{nodeAttestor: fmt.Sprintf(`NodeAttestor "tpm_devid" {
        plugin_data {
            devid_ca_path = %q
            endorsement_ca_path = %q
        }
    }`, devIDCA, fleet.CABundle)})
	s.createEntry(t, "-parentID", agentID, "-spiffeID", "spiffe://example.org/devid/direct", "-selector", uidSelector)
	s.createEntry(t, "-node", "-spiffeID", "spiffe://example.org/devid/fleet", "-selector", "tpm_devid:ca:fingerprint:"+tpmdevid.Fingerprint(inter.Cert))
	s.createEntry(t, "-parentID", "spiffe://example.org/devid/fleet", "-spiffeID", "spiffe://example.org/devid/by-ca", "-selector", uidSelector)

	a := newAgent(t, s, agentConfig{nodeAttestor: fmt.Sprintf(`NodeAttestor "tpm_devid" {
        plugin_data {
            devid_cert_path = %q
            devid_priv_path = %q
            devid_pub_path = %q
            devid_password = "s3cret"
            tpm_device_path = %q
        }
    }`, d.CertPath, d.PrivPath, d.PubPath, fleet.TPMs[0].Path), workloadAttestor: unixAttestor("")})
	a.start(t, "")
	c := newClient(t, a)
	eventually(t, 20*time.Second, "both SVIDs of the DevID node", func() error {
		got := svidIDs(t, fetchX509(t, c, "spiffe://example.org/devid/by-ca"))
		if want := []string{"spiffe://example.org/devid/by-ca", "spiffe://example.org/devid/direct"}; !slices.Equal(got, want) {
			return fmt.Errorf("SVIDs %v, want %v", got, want)
		}
		return nil
	})

	ag, ok := listAgents(t, s)[agentID]
	if !ok {
		t.Fatalf("agent %s not attested", agentID)
	}
	if ag.AttestationType != "tpm_devid" || !ag.CanReattest {
		t.Errorf("agent %s: attestation type %q, can re-attest %v", agentID, ag.AttestationType, ag.CanReattest)
	}
	for _, want := range []string{"tpm_devid:subject:cn:edge-7", "tpm_devid:issuer:cn:e2e devid issuing",
		"tpm_devid:ca:fingerprint:" + tpmdevid.Fingerprint(inter.Cert), "tpm_devid:ca:fingerprint:" + tpmdevid.Fingerprint(root.Cert)} {
		if !ag.has(want) {
			t.Errorf("agent selectors lack %s: %v", want, ag.Selectors)
		}
	}
}
