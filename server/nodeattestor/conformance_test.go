package nodeattestor_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	agentnodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	servernodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"golang.org/x/crypto/ssh"

	agentexternal "github.com/spiffe-hw/spire-hw/agent/nodeattestor/external"
	agentjointoken "github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	agentsshpop "github.com/spiffe-hw/spire-hw/agent/nodeattestor/sshpop"
	agenttpm "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	agenttpmdevid "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpmdevid"
	agentx509pop "github.com/spiffe-hw/spire-hw/agent/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/hostservice"
	serverexternal "github.com/spiffe-hw/spire-hw/server/nodeattestor/external"
	serverjointoken "github.com/spiffe-hw/spire-hw/server/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/nodeattestortest"
	serversshpop "github.com/spiffe-hw/spire-hw/server/nodeattestor/sshpop"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	servertpmdevid "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpmdevid"
	serverx509pop "github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// The conformance tests pair each verifier with the agent collector of the
// same method: the suite is about the exchange, so both sides are real.

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestX509PoPConformance(t *testing.T) {
	for _, keyType := range []string{"ecdsa", "rsa"} {
		t.Run(keyType, func(t *testing.T) {
			nodeattestortest.Run(t, func(t *testing.T) nodeattestortest.Pair {
				root, err := testpki.NewRoot("x509pop root")
				if err != nil {
					t.Fatal(err)
				}
				inter, err := root.Intermediate("x509pop issuing")
				if err != nil {
					t.Fatal(err)
				}
				leaf, key, err := inter.Issue(testpki.Leaf{CommonName: "node-1", KeyType: keyType})
				if err != nil {
					t.Fatal(err)
				}
				roots := x509.NewCertPool()
				roots.AddCert(root.Cert)
				server, err := serverx509pop.New(serverx509pop.Config{TrustDomain: td, Roots: roots, MaxIntermediates: 1})
				if err != nil {
					t.Fatal(err)
				}
				agent, err := agentx509pop.NewFromKey([][]byte{leaf.Raw, inter.Cert.Raw}, key)
				if err != nil {
					t.Fatal(err)
				}
				return nodeattestortest.Pair{
					Server: server, Agent: agent, TrustDomain: td,
					WantAgentIDPrefix: "spiffe://example.org/spire/agent/x509pop/" + serverx509pop.Fingerprint(leaf),
				}
			})
		})
	}
}

func TestSSHPoPConformance(t *testing.T) {
	_, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	hostKeys := map[string]func() (crypto.Signer, error){
		"ed25519": func() (crypto.Signer, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err },
		"ecdsa":   func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"rsa":     func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	}
	for _, name := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(name, func(t *testing.T) {
			nodeattestortest.Run(t, func(t *testing.T) nodeattestortest.Pair {
				key, err := hostKeys[name]()
				if err != nil {
					t.Fatal(err)
				}
				signer, err := ssh.NewSignerFromKey(key)
				if err != nil {
					t.Fatal(err)
				}
				cert := &ssh.Certificate{Key: signer.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"node-1"},
					ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
				if err := cert.SignCert(rand.Reader, ca); err != nil {
					t.Fatal(err)
				}
				server, err := serversshpop.New(serversshpop.Config{TrustDomain: td, Authorities: []ssh.PublicKey{ca.PublicKey()}})
				if err != nil {
					t.Fatal(err)
				}
				agent, err := agentsshpop.NewFromSigner(cert, signer)
				if err != nil {
					t.Fatal(err)
				}
				return nodeattestortest.Pair{Server: server, Agent: agent, TrustDomain: td}
			})
		})
	}
}

// TestJoinTokenConformance gives every pair a datastore holding one fresh
// token, since a token attests once.
func TestJoinTokenConformance(t *testing.T) {
	nodeattestortest.Run(t, func(t *testing.T) nodeattestortest.Pair {
		store := sqlitetest.Open(t)
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		token := hex.EncodeToString(b)
		if err := store.CreateJoinToken(context.Background(), &datastore.JoinToken{Token: token, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		return nodeattestortest.Pair{
			Server: serverjointoken.New(td, store, nil), Agent: agentjointoken.New(token), TrustDomain: td,
			WantAgentIDPrefix: "spiffe://example.org/spire/agent/join_token/" + token,
		}
	})
}

// TestTPMConformance runs the suite on a swtpm TPM, with the CSR bound into
// the quote as the agent's client binds it; without swtpm it is skipped
// (failed under REQUIRE_SIM=1).
func TestTPMConformance(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"ecc", "rsa"} {
		t.Run(alg, func(t *testing.T) {
			nodeattestortest.Run(t, func(t *testing.T) nodeattestortest.Pair {
				server, err := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: roots})
				if err != nil {
					t.Fatal(err)
				}
				agent, err := agenttpm.New(agenttpm.PluginData{TPMPath: fleet.TPMs[0].Path, EKAlgorithm: alg})
				if err != nil {
					t.Fatal(err)
				}
				return nodeattestortest.Pair{Server: server, Agent: agent, TrustDomain: td, BindsCSR: true}
			})
		})
	}
}

// TestTPMDevIDConformance runs the suite on a swtpm TPM holding a DevID
// of each key type, issued under an intermediate of a test root.
func TestTPMDevIDConformance(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	root, err := testpki.NewRoot("devid root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("devid issuing")
	if err != nil {
		t.Fatal(err)
	}
	devIDRoots := x509.NewCertPool()
	devIDRoots.AddCert(root.Cert)
	ekRoots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, kt := range []string{"rsa", "ecc"} {
		t.Run(kt, func(t *testing.T) {
			d, err := fleet.ProvisionDevID(fleet.TPMs[0], swtpm.DevIDOptions{CA: inter, Intermediates: []*x509.Certificate{inter.Cert},
				KeyType: kt, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			nodeattestortest.Run(t, func(t *testing.T) nodeattestortest.Pair {
				server, err := servertpmdevid.New(servertpmdevid.Config{TrustDomain: td, DevIDRoots: devIDRoots, EKRoots: ekRoots})
				if err != nil {
					t.Fatal(err)
				}
				agent, err := agenttpmdevid.New(agenttpmdevid.PluginData{DevIDCertPath: d.CertPath, DevIDPrivPath: d.PrivPath,
					DevIDPubPath: d.PubPath, TPMDevicePath: fleet.TPMs[0].Path})
				if err != nil {
					t.Fatal(err)
				}
				return nodeattestortest.Pair{Server: server, Agent: agent, TrustDomain: td,
					WantAgentIDPrefix: "spiffe://example.org/spire/agent/tpm_devid/" + servertpmdevid.Fingerprint(d.Cert)}
			})
		})
	}
}

// TestExternalConformance runs the suite against the HMAC test pair,
// test/plugins/servernodeattestor and test/plugins/agentnodeattestor, each
// started by the plugin host as a real process; the server side gets the
// AgentStore host service every SPIRE server offers.
func TestExternalConformance(t *testing.T) {
	// The plugins' own name for the method: it is the agent path segment
	// the server plugin issues IDs under.
	const name = "hmac"
	serverCmd := pluginbuild.Build(t, "servernodeattestor")
	agentCmd := pluginbuild.Build(t, "agentnodeattestor")
	load := func(t *testing.T, cmd, data, service string, hostServices ...pluginsdk.ServiceServer) *plugin.Plugin {
		t.Helper()
		p, err := plugin.Load(context.Background(), plugin.Config{
			Type: "NodeAttestor", Name: name, Cmd: cmd, Data: data, TrustDomain: td,
			Service: service, HostServices: hostServices, Log: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	for _, tc := range []struct{ name, serverData string }{
		{"Stateless", `secret = "conformance-secret"`},
		{"AgentStore", "secret = \"conformance-secret\"\nuse_agent_store = true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodeattestortest.Run(t, func(t *testing.T) nodeattestortest.Pair {
				server := load(t, serverCmd, tc.serverData, servernodeattestorv1.NodeAttestor_ServiceDesc.ServiceName,
					hostservice.AgentStore(sqlitetest.Open(t)))
				agent := load(t, agentCmd, "node_name = \"node-1\"\nsecret = \"conformance-secret\"", agentnodeattestorv1.NodeAttestor_ServiceDesc.ServiceName)
				return nodeattestortest.Pair{
					Server: serverexternal.New(server.Conn(), name, td), Agent: agentexternal.New(agent.Conn(), name), TrustDomain: td,
					WantAgentIDPrefix: "spiffe://example.org/spire/agent/hmac/node-1",
				}
			})
		})
	}
}
