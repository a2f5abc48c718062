package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// tpmKeyManager is KeyManager "tpm" on the TPM at path.
func tpmKeyManager(path string) string {
	return fmt.Sprintf(`KeyManager "tpm" {
        plugin_data {
            tpm_path = %q
        }
    }`, path)
}

// TestTPMResidentAgentKey runs the real binaries with the agent's key in
// its TPM and a server that admits only agents proving it: a workload gets
// its SVID, also through an entry that requires tpm:agent_key:resident; the
// agent restarts on its stored SVID with the key loaded from the TPM blob;
// its data directory holds no private key in the clear; and a copy of that
// directory on another machine (another TPM) cannot act as the agent: the
// blob does not load there, so the copy attests as its own node or not at
// all.
func TestTPMResidentAgentKey(t *testing.T) {
	t.Parallel()
	fleet := swtpm.StartT(t, 2)
	path0, path1 := fleet.TPMs[0].Path, fleet.TPMs[1].Path
	agent0 := "spiffe://example.org/spire/agent/tpm/" + tpmIdentity(t, path0, false)
	agent1 := "spiffe://example.org/spire/agent/tpm/" + tpmIdentity(t, path1, false)

	s := startServerConf(t, serverConfig{nodeAttestor: fmt.Sprintf(`NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = %q
            pcrs = [0, 7]
            require_resident_agent_key = true
        }
    }`, fleet.CABundle)})
	s.createEntry(t, "-parentID", agent0, "-spiffeID", "spiffe://example.org/resident/direct", "-selector", uidSelector)
	s.createEntry(t, "-node", "-spiffeID", "spiffe://example.org/resident/nodes", "-selector", "tpm:agent_key:resident")
	s.createEntry(t, "-parentID", "spiffe://example.org/resident/nodes", "-spiffeID", "spiffe://example.org/resident/required", "-selector", uidSelector)
	s.createEntry(t, "-parentID", agent1, "-spiffeID", "spiffe://example.org/resident/second", "-selector", uidSelector)

	tpmAttestor := func(path string) string {
		return fmt.Sprintf(`NodeAttestor "tpm" {
        plugin_data {
            tpm_path = %q
        }
    }`, path)
	}
	a0 := newAgent(t, s, agentConfig{nodeAttestor: tpmAttestor(path0), keyManager: tpmKeyManager(path0), workloadAttestor: unixAttestor("")})
	a0.start(t, "")
	want := []string{"spiffe://example.org/resident/direct", "spiffe://example.org/resident/required"}
	c0 := newClient(t, a0)
	eventually(t, 20*time.Second, "the workload's SVIDs through the resident-key agent", func() error {
		if got := svidIDs(t, fetchX509(t, c0, "spiffe://example.org/resident/required")); !slices.Equal(got, want) {
			return fmt.Errorf("SVIDs %v, want %v", got, want)
		}
		return nil
	})
	first, ok := listAgents(t, s)[agent0]
	if !ok || !first.has("tpm:agent_key:resident") {
		t.Fatalf("agent %s: listed %v, selectors %v; want tpm:agent_key:resident", agent0, ok, first.Selectors)
	}

	// Restart: the stored SVID is used with the key loaded from the blob,
	// without attesting again.
	data := filepath.Join(a0.dir, "data")
	// The scan below must be able to see a clear key where the agent keeps
	// keys: it finds the workload keys in the SVID cache (by design in the
	// clear, as workload keys leave the agent anyway) once it is written.
	eventually(t, 20*time.Second, "the workload keys in the SVID cache", func() error {
		if n := len(clearPrivateKeys(t, data)); n == 0 {
			return errString("no clear private key found in " + data)
		}
		return nil
	})
	a0.proc.Stop()
	checkAgentKeyResident(t, data, path0, agent0)
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(data)); err != nil {
		t.Fatal(err)
	}
	a0.start(t, "")
	c0 = newClient(t, a0)
	if got := svidIDs(t, fetchX509(t, c0, "spiffe://example.org/resident/required")); !slices.Equal(got, want) {
		t.Fatalf("after restart: SVIDs %v, want %v", got, want)
	}
	if strings.Contains(a0.proc.out.String(), "Node attestation succeeded") {
		t.Error("the restarted agent attested again instead of using its stored SVID and TPM key")
	}
	if again := listAgents(t, s)[agent0]; again.Serial != first.Serial {
		t.Errorf("agent SVID serial changed across the restart: %s -> %s", first.Serial, again.Serial)
	}

	// The copied data directory on another TPM: the blob does not load, so
	// the stored SVID of agent0 is useless there; the copy attests as the
	// node it is (agent1), never as agent0.
	a1 := newAgent(t, s, agentConfig{nodeAttestor: tpmAttestor(path1), keyManager: tpmKeyManager(path1), workloadAttestor: unixAttestor("")})
	if err := os.CopyFS(filepath.Join(a1.dir, "data"), os.DirFS(copyDir)); err != nil {
		t.Fatal(err)
	}
	// First with the server down, so that the copy can only serve what
	// it found in the directory: agent0's cached workload SVIDs (their
	// keys in the clear) are not its to serve.
	s.proc.Stop()
	a1.proc = start(t, a1.dir, "spire-agent", "run", "-config", a1.conf)
	eventually(t, 20*time.Second, "the copy to refuse the stored agent key", func() error {
		if done, code := a1.proc.exited(); done {
			t.Fatalf("the copy exited with %d", code)
		}
		if !strings.Contains(a1.proc.out.String(), "Stored agent key cannot be used on this node") {
			return errString("no refusal logged yet")
		}
		return nil
	})
	c1 := newClient(t, a1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if x, err := c1.FetchX509Context(ctx); err == nil {
		t.Errorf("the unattested copy served %v", svidIDs(t, x))
	}
	cancel()
	s.start(t)
	eventually(t, 30*time.Second, "the copy to attest as its own node", func() error {
		if r := cli(t, a1.dir, "spire-agent", "healthcheck", "-socketPath", a1.socket); r.code != 0 {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
	if got := svidIDs(t, fetchX509(t, c1, "spiffe://example.org/resident/second")); !slices.Contains(got, "spiffe://example.org/resident/second") || slices.Contains(got, "spiffe://example.org/resident/direct") {
		t.Fatalf("the copy's workload got %v: want the second node's entries, none of agent0's", got)
	}
	log := a1.proc.out.String()
	if !strings.Contains(log, "not made by this TPM") {
		t.Errorf("the copy did not report that the stored key is not its TPM's:\n%s", log)
	}
	if !strings.Contains(log, agent1) || strings.Contains(log, `"spiffe_id":"`+agent0) || strings.Contains(log, "spiffe_id="+agent0) {
		t.Errorf("the copy did not attest as %s alone", agent1)
	}
	agents := listAgents(t, s)
	if agents[agent0].Serial != first.Serial {
		t.Error("the copy changed agent0's SVID")
	}
	if !agents[agent1].has("tpm:agent_key:resident") {
		t.Errorf("the second agent's selectors %v lack tpm:agent_key:resident", agents[agent1].Selectors)
	}
	// What the copy keeps is its own identity now: agent1's SVID, for a key
	// in the second TPM; nothing of agent0's key or SVID remains usable.
	a1.proc.Stop()
	checkAgentKeyResident(t, filepath.Join(a1.dir, "data"), path1, agent1)
}

// checkAgentKeyResident checks, with the agent stopped (a swtpm serves one
// connection), that the agent SVID stored in dir names wantID and is for
// the key whose blob is stored beside it, which loads in the TPM at tpmPath
// only: the SVID's key lives in that TPM. No file in dir holds that key's
// private part in the clear, in PEM, DER or base64 (as JSON stores bytes).
func checkAgentKeyResident(t *testing.T, dir, tpmPath, wantID string) {
	t.Helper()
	der, err := os.ReadFile(filepath.Join(dir, "agent_svid.der"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := x509.ParseCertificates(der)
	if err != nil || len(chain) == 0 {
		t.Fatalf("stored agent SVID: %v", err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Errorf("stored agent SVID names %v, want %s", leaf.URIs, wantID)
	}
	blob, err := os.ReadFile(filepath.Join(dir, "agent_svid.tpmkey"))
	if err != nil {
		t.Fatalf("no TPM key blob in the data directory: %v", err)
	}
	tp, err := tpm.Open(tpmPath)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	key, err := tp.LoadResidentKey(blob)
	if err != nil {
		t.Fatalf("the stored blob does not load in its TPM: %v", err)
	}
	defer key.Close()
	if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("the stored agent SVID is not for the key in the TPM blob")
	}
	for file, pubs := range clearPrivateKeys(t, dir) {
		for _, pub := range pubs {
			if key.Public().(*ecdsa.PublicKey).Equal(pub) {
				t.Errorf("%s holds the agent's private key in the clear", file)
			}
		}
	}
}

// clearPrivateKeys returns, by file, the public keys of the private keys
// (PKCS#8, SEC 1 or PKCS#1) found in the clear under dir: in PEM blocks, as
// DER anywhere in a file (bbolt stores values as they are), or as base64
// strings (JSON's encoding of bytes).
func clearPrivateKeys(t *testing.T, dir string) map[string][]crypto.PublicKey {
	t.Helper()
	b64 := regexp.MustCompile(`[A-Za-z0-9+/]{64,}={0,2}`)
	found := map[string][]crypto.PublicKey{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		ders := [][]byte{b}
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			ders = append(ders, blk.Bytes)
		}
		for _, m := range b64.FindAll(b, -1) {
			if d, err := base64.StdEncoding.DecodeString(string(m)); err == nil {
				ders = append(ders, d)
			}
		}
		for _, der := range ders {
			if pubs := derPrivateKeys(der); len(pubs) > 0 {
				found[p] = append(found[p], pubs...)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// derPrivateKeys parses every ASN.1 SEQUENCE in b as a private key.
func derPrivateKeys(b []byte) []crypto.PublicKey {
	var pubs []crypto.PublicKey
	for i := range b {
		if b[i] != 0x30 {
			continue
		}
		var raw asn1.RawValue
		if _, err := asn1.Unmarshal(b[i:], &raw); err != nil {
			continue
		}
		var k any
		var err error
		if k, err = x509.ParsePKCS8PrivateKey(raw.FullBytes); err != nil {
			if k, err = x509.ParseECPrivateKey(raw.FullBytes); err != nil {
				k, err = x509.ParsePKCS1PrivateKey(raw.FullBytes)
			}
		}
		if s, ok := k.(crypto.Signer); err == nil && ok {
			pubs = append(pubs, s.Public())
		}
	}
	return pubs
}
