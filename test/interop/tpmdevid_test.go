package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // SPIRE names tpm_devid agents by SHA-1 fingerprint.
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/spiffe/spire/pkg/agent/plugin/nodeattestor/tpmdevid/tpmutil"
)

// The tpm_devid tests provision a DevID the way SPIRE's own test simulator
// does (pkg/agent/.../tpmutil templates through go-tpm's legacy API, which
// this module has since SPIRE uses it) in a swtpm manufactured with EK
// certificates by swtpm's local CA, then attest SPIRE's agent to our
// server and our agent to SPIRE's server with it. This module cannot
// import the main module's sim/swtpm, so it runs swtpm itself.

// devidTPM is a running swtpm holding a DevID, and the files both sides
// are configured with.
type devidTPM struct {
	sock                        string // Unix socket, tpm_device_path
	ekCA, devIDCA               string
	certPath, pubPath, privPath string
	fingerprint                 string
}

func startDevIDTPM(t *testing.T) *devidTPM {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("REQUIRE_SIM") == "1" {
				t.Fatalf("%s not installed (REQUIRE_SIM=1)", bin)
			}
			t.Skipf("%s not installed (apt-get install swtpm swtpm-tools)", bin)
		}
	}
	dir := shortTempDir(t)
	caDir, state := filepath.Join(dir, "ca"), filepath.Join(dir, "state")
	for _, d := range []string{caDir, state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	localca, setup, opts := filepath.Join(dir, "localca.conf"), filepath.Join(dir, "setup.conf"), filepath.Join(dir, "localca.options")
	for p, c := range map[string]string{
		localca: fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", caDir),
		setup:   fmt.Sprintf("create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n", localca, opts),
		opts:    "--platform-manufacturer interop\n--platform-version 2.1\n--platform-model swtpm\n",
	} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert",
		"--create-platform-cert", "--config", setup, "--overwrite").CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v: %s", err, out)
	}
	d := &devidTPM{sock: filepath.Join(dir, "tpm.sock"), ekCA: filepath.Join(dir, "ek-ca.pem"), devIDCA: filepath.Join(dir, "devid-ca.pem"),
		certPath: filepath.Join(dir, "devid.crt.pem"), pubPath: filepath.Join(dir, "devid.pub.blob"), privPath: filepath.Join(dir, "devid.priv.blob")}
	root, err1 := os.ReadFile(filepath.Join(caDir, "swtpm-localca-rootca-cert.pem"))
	issuer, err2 := os.ReadFile(filepath.Join(caDir, "issuercert.pem"))
	if err1 != nil || err2 != nil {
		t.Fatalf("swtpm CA: %v %v", err1, err2)
	}
	if err := os.WriteFile(d.ekCA, append(append(root, '\n'), issuer...), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, dir, "swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state, "--flags", "not-need-init,startup-clear",
		"--server", "type=unixio,path="+d.sock, "--ctrl", "type=unixio,path="+d.sock+".ctrl")
	eventually(t, 10*time.Second, "swtpm listening", func() error {
		if err := p.exited(); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unix", d.sock)
		if err == nil {
			c.Close()
		}
		return err
	})
	d.provision(t)
	return d
}

// provision creates the DevID key as SPIRE's simulator does (the RSA AK
// template with the DevID attributes, under the high-range RSA SRK) and
// certifies it with a fresh CA.
func (d *devidTPM) provision(t *testing.T) {
	t.Helper()
	rwc, err := tpm2.OpenTPM(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer rwc.Close()
	srk, _, _, _, _, _, err := tpm2.CreatePrimaryEx(rwc, tpm2.HandleOwner, tpm2.PCRSelection{}, "", "", tpmutil.SRKTemplateHighRSA())
	if err != nil {
		t.Fatalf("create SRK: %v", err)
	}
	tmpl := client.AKTemplateRSA()
	tmpl.Attributes = tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth
	priv, pub, _, _, _, err := tpm2.CreateKey(rwc, srk, tpm2.PCRSelection{}, "", "devid-pw", tmpl)
	if err != nil {
		t.Fatalf("create DevID key: %v", err)
	}
	if err := tpm2.FlushContext(rwc, srk); err != nil {
		t.Fatal(err)
	}
	decoded, err := tpm2.DecodePublic(pub)
	if err != nil {
		t.Fatal(err)
	}
	key, err := decoded.Key()
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop devid ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "interop-node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}, ca, key, caKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(leafDER) //nolint:gosec // SPIRE's agent name
	d.fingerprint = hex.EncodeToString(sum[:])
	for p, b := range map[string][]byte{
		d.certPath: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		d.devIDCA:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		d.pubPath:  pub, d.privPath: priv,
	} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func (d *devidTPM) agentID() string {
	return "spiffe://example.org/spire/agent/tpm_devid/" + d.fingerprint
}

// startDevIDAgent runs im's agent against s, attesting with tpm_devid.
func startDevIDAgent(t *testing.T, im impl, s *server, d *devidTPM) *agent {
	t.Helper()
	dir := shortTempDir(t)
	bundle := filepath.Join(dir, "bootstrap.crt")
	if err := os.WriteFile(bundle, []byte(s.cli(t, s.impl, "bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agent{impl: im, dir: dir, socket: filepath.Join(dir, "agent.sock"), conf: filepath.Join(dir, "agent.conf")}
	conf := fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
}
plugins {
    NodeAttestor "tpm_devid" {
        plugin_data {
            devid_cert_path = %q
            devid_priv_path = %q
            devid_pub_path = %q
            devid_password = "devid-pw"
            tpm_device_path = %q
        }
    }
    KeyManager "disk" {
        plugin_data {
            directory = %q
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, filepath.Join(dir, "data"), s.port, a.socket, bundle, trustDomain, d.certPath, d.privPath, d.pubPath, d.sock, filepath.Join(dir, "data"))
	if err := os.WriteFile(a.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, "")
	return a
}

// TestTpmDevid attests with one DevID across every pairing of servers and
// agents; what each server records about the agent must be what SPIRE's
// server records about SPIRE's agent.
func TestTpmDevid(t *testing.T) {
	const ref = "spire-server/spire-agent"
	pairs := []struct {
		name          string
		server, agent *impl
	}{
		{ref, &upstream, &upstream},
		{"our-server/spire-agent", &ours, &upstream},
		{"spire-server/our-agent", &upstream, &ours},
		{"our-server/our-agent", &ours, &ours},
	}
	shown := map[string]string{}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			shown[p.name] = devidFlow(t, *p.server, *p.agent)
		})
	}
	want, ok := shown[ref]
	if !ok {
		t.Fatalf("the reference run %s failed; nothing to compare with", ref)
	}
	t.Logf("%s: %s", ref, want)
	for _, p := range pairs[1:] {
		// The fingerprint differs per run (a fresh DevID each time).
		if got, ok := shown[p.name]; ok && got != want {
			t.Errorf("%s: agent show differs from upstream's:\n got:      %s\n upstream: %s", p.name, got, want)
		}
	}
}

// devidFlow attests im's agent to im's server with a fresh DevID, gets a
// workload SVID through it and returns `agent show` by upstream's CLI with
// the run's fingerprints masked.
func devidFlow(t *testing.T, serverImpl, agentImpl impl) string {
	d := startDevIDTPM(t)
	s := startServerWith(t, serverImpl, func(dir string) string {
		return fmt.Sprintf(`    KeyManager "disk" {
        plugin_data {
            keys_path = %q
        }
    }
    NodeAttestor "tpm_devid" {
        plugin_data {
            devid_ca_path = %q
            endorsement_ca_path = %q
        }
    }
`, filepath.Join(dir, "data", "keys.json"), d.devIDCA, d.ekCA)
	})
	workload := "spiffe://example.org/devid-workload"
	s.cli(t, serverImpl, "entry", "create", "-parentID", d.agentID(), "-spiffeID", workload, "-selector", uidSelector)
	a := startDevIDAgent(t, agentImpl, s, d)
	if agents := s.cli(t, serverImpl, "agent", "list"); !strings.Contains(agents, d.agentID()) {
		t.Errorf("agent list lacks %s:\n%s", d.agentID(), agents)
	}
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fetchX509(t, c, workload)
	out := showAgent(t, s, upstream, d.agentID())
	ca, err := os.ReadFile(d.devIDCA)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(ca)
	caSum := sha1.Sum(blk.Bytes) //nolint:gosec // SPIRE's selector
	out = strings.ReplaceAll(out, d.fingerprint, "<fingerprint>")
	return strings.ReplaceAll(out, hex.EncodeToString(caSum[:]), "<ca-fingerprint>")
}
