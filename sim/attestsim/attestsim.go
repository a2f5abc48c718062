// Package attestsim prepares a simulated node for one node attestor: it
// starts the local service that attestor talks to (sim/cloud, sim/k8s) or
// makes the credentials it proves possession of (sim/x509/testpki, an SSH
// host certificate), writes the files the configuration names, and renders
// the server and agent NodeAttestor blocks together with the agent ID the
// server will assign.
//
// The attest-sim command, scripts/demo-attest.sh and the end-to-end tests
// all start nodes here, so the printed configuration is the tested one.
package attestsim

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // SPIRE names x509pop agents by the SHA-1 fingerprint.
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/cloud"
	"github.com/spiffe-hw/spire-hw/sim/k8s"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"golang.org/x/crypto/ssh"
)

// Providers are the names Start accepts, in the order the command
// starts them when given none.
var Providers = []string{"aws", "azure", "gcp", "k8s", "x509pop", "sshpop"}

// AzureResource is the audience the simulated Azure agent asks its MSI
// token for and the server requires.
const AzureResource = "api://spire-node-attestor"

// K8sCluster is the cluster name the k8s agent sends and the server keys
// its configuration by.
const K8sCluster = "demo"

// Node is one simulated node, ready for an agent.
type Node struct {
	// Provider is the name given to Start ("aws"); Plugin is the
	// NodeAttestor it serves ("aws_iid").
	Provider, Plugin string
	// ServerBlock and AgentBlock are the HCL NodeAttestor blocks for the
	// server's and the agent's plugins sections.
	ServerBlock, AgentBlock string
	// AgentPath is the path of the agent ID the server assigns, such as
	// /spire/agent/aws_iid/<account>/<region>/<instance>.
	AgentPath string
	// Selectors are some of the selectors the server derives for the
	// agent, for node-alias entries ("aws_iid:tag:env:prod").
	Selectors []string
	// FirstUse is true for the attestors that accept an identity document
	// once (aws_iid, azure_msi, gcp_iit); the others re-attest.
	FirstUse bool
	// Description says, for a human, what was started.
	Description string

	closeOnce sync.Once
	closers   []func() error
}

// AgentID is the full agent SPIFFE ID in trustDomain.
func (n *Node) AgentID(trustDomain string) string {
	return "spiffe://" + trustDomain + n.AgentPath
}

// Close stops the node's services; the files stay in the directory.
func (n *Node) Close() error {
	var errs []error
	n.closeOnce.Do(func() {
		for i := len(n.closers) - 1; i >= 0; i-- {
			errs = append(errs, n.closers[i]())
		}
	})
	return errors.Join(errs...)
}

// Start prepares a node for provider (one of Providers), writing the
// files its configuration names under dir, which must exist.
func Start(provider, dir string) (*Node, error) {
	var n *Node
	var err error
	switch provider {
	case "aws":
		n, err = startAWS(dir)
	case "azure":
		n, err = startAzure()
	case "gcp":
		n, err = startGCP(dir)
	case "k8s":
		n, err = startK8s(dir)
	case "x509pop":
		n, err = startX509(dir)
	case "sshpop":
		n, err = startSSH(dir)
	default:
		return nil, fmt.Errorf("attestsim: unknown provider %q (use %s)", provider, strings.Join(Providers, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("attestsim: %s: %w", provider, err)
	}
	n.Provider = provider
	return n, nil
}

func writeFile(dir, name string, b []byte, mode os.FileMode) (string, error) {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, mode); err != nil {
		return "", err
	}
	return p, nil
}

func startAWS(dir string) (*Node, error) {
	s, err := cloud.StartAWS(cloud.AWSConfig{})
	if err != nil {
		return nil, err
	}
	doc := s.Instance().Document
	cert, err := writeFile(dir, "aws-"+doc.Region+".pem", s.Signer().CertPEM(), 0o644)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &Node{
		Plugin: "aws_iid", FirstUse: true, closers: []func() error{s.Close},
		Selectors: []string{"aws_iid:account_id:" + doc.AccountID, "aws_iid:instance:id:" + doc.InstanceID,
			"aws_iid:tag:env:prod", "aws_iid:sg:name:blog", "aws_iid:iamrole:arn:aws:iam::123456789012:role/Blog"},
		AgentPath:   fmt.Sprintf("/spire/agent/aws_iid/%s/%s/%s", doc.AccountID, doc.Region, doc.InstanceID),
		Description: "AWS IMDS + EC2/IAM API at " + strings.TrimSuffix(s.IMDSEndpoint(), "/latest"),
		AgentBlock: fmt.Sprintf(`NodeAttestor "aws_iid" {
    plugin_data {
        ec2_metadata_endpoint = %q
    }
}`, s.IMDSEndpoint()),
		ServerBlock: fmt.Sprintf(`NodeAttestor "aws_iid" {
    plugin_data {
        access_key_id = %q
        secret_access_key = "any"
        ec2_endpoint = %q
        iam_endpoint = %q
        region_certificates = { %q = %q }
    }
}`, s.AccessKeyID(), s.EC2Endpoint(), s.IAMEndpoint(), doc.Region, cert),
	}, nil
}

func startAzure() (*Node, error) {
	s, err := cloud.StartAzure(cloud.AzureConfig{})
	if err != nil {
		return nil, err
	}
	vm := s.VM()
	id, secret := s.AppCredentials()
	return &Node{
		Plugin: "azure_msi", FirstUse: true, closers: []func() error{s.Close},
		Selectors: []string{"azure_msi:subscription-id:" + vm.SubscriptionID, "azure_msi:vm-name:" + vm.ResourceGroup + ":" + vm.Name,
			"azure_msi:virtual-network-subnet:" + vm.ResourceGroup + ":" + vm.VirtualNetwork + ":" + vm.Subnet},
		AgentPath:   fmt.Sprintf("/spire/agent/azure_msi/%s/%s", vm.TenantID, vm.PrincipalID),
		Description: "Azure IMDS + OIDC discovery + ARM at " + s.IMDSEndpoint(),
		AgentBlock: fmt.Sprintf(`NodeAttestor "azure_msi" {
    plugin_data {
        resource_id = %q
        imds_endpoint = %q
    }
}`, AzureResource, s.IMDSEndpoint()),
		ServerBlock: fmt.Sprintf(`NodeAttestor "azure_msi" {
    plugin_data {
        tenants = {
            %q = {
                resource_id = %q
                subscription_id = %q
                app_id = %q
                app_secret = %q
            }
        }
        oidc_discovery_url = %q
        login_endpoint = %q
        arm_endpoint = %q
    }
}`, vm.TenantID, AzureResource, vm.SubscriptionID, id, secret, s.DiscoveryURL(), s.LoginEndpoint(), s.ARMEndpoint()),
	}, nil
}

func startGCP(dir string) (*Node, error) {
	s, err := cloud.StartGCP(cloud.GCPConfig{})
	if err != nil {
		return nil, err
	}
	sa, err := writeFile(dir, "gcp-service-account.json", s.ServiceAccountJSON(), 0o600)
	if err != nil {
		s.Close()
		return nil, err
	}
	inst := s.Instance()
	return &Node{
		Plugin: "gcp_iit", FirstUse: true, closers: []func() error{s.Close},
		Selectors: []string{"gcp_iit:project-id:" + inst.ProjectID, "gcp_iit:instance-name:" + inst.InstanceName,
			"gcp_iit:zone:" + inst.Zone, "gcp_iit:label:env:" + inst.Labels["env"]},
		AgentPath:   fmt.Sprintf("/spire/agent/gcp_iit/%s/%s", inst.ProjectID, inst.InstanceID),
		Description: "GCP metadata server + certs + Compute API at http://" + s.MetadataHost(),
		AgentBlock: fmt.Sprintf(`NodeAttestor "gcp_iit" {
    plugin_data {
        identity_token_host = %q
    }
}`, s.MetadataHost()),
		ServerBlock: fmt.Sprintf(`NodeAttestor "gcp_iit" {
    plugin_data {
        projectid_allow_list = [%q]
        use_instance_metadata = true
        service_account_file = %q
        allowed_label_keys = ["env"]
        certs_url = %q
        compute_endpoint = %q
    }
}`, inst.ProjectID, sa, s.CertsURL(), s.ComputeEndpoint()),
	}, nil
}

// k8sTokenTTL is the lifetime of the agent's projected token; it is
// rewritten at half of it, as the kubelet does.
const k8sTokenTTL = 10 * time.Minute

func startK8s(dir string) (*Node, error) {
	c, err := k8s.Start(k8s.Options{})
	if err != nil {
		return nil, err
	}
	node := k8s.Node{Name: "node-1", UID: k8s.NewUID(), InternalIP: "127.0.0.1", Labels: map[string]string{"topology.kubernetes.io/zone": "sim-a"}}
	pod := k8s.Pod{Namespace: "spire", Name: "spire-agent-0", UID: k8s.NewUID(), ServiceAccount: "spire-agent", NodeName: node.Name, HostIP: "127.0.0.1", Labels: map[string]string{"app": "spire-agent"}}
	c.PutNode(node)
	c.PutPod(pod)
	kubeconfig, err := writeFile(dir, "kubeconfig", c.Kubeconfig(), 0o600)
	if err != nil {
		c.Close()
		return nil, err
	}
	tokenPath := filepath.Join(dir, "spire-agent-token")
	writeToken := func() error {
		tok, err := c.MintToken(pod.Namespace, pod.Name, []string{"spire-server"}, k8sTokenTTL)
		if err != nil {
			return err
		}
		// Rename so that the agent never reads half a token.
		if _, err := writeFile(dir, "spire-agent-token.tmp", []byte(tok), 0o600); err != nil {
			return err
		}
		return os.Rename(tokenPath+".tmp", tokenPath)
	}
	if err := writeToken(); err != nil {
		c.Close()
		return nil, err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(k8sTokenTTL / 2)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// A failed refresh leaves the old token, which is still
				// valid for the other half of its life.
				_ = writeToken()
			}
		}
	}()
	return &Node{
		Plugin: "k8s_psat",
		closers: []func() error{c.Close, func() error {
			close(stop)
			<-done
			return nil
		}},
		AgentPath: fmt.Sprintf("/spire/agent/k8s_psat/%s/%s", K8sCluster, node.UID),
		Selectors: []string{"k8s_psat:cluster:" + K8sCluster, "k8s_psat:agent_ns:" + pod.Namespace, "k8s_psat:agent_sa:" + pod.ServiceAccount,
			"k8s_psat:agent_pod_uid:" + pod.UID, "k8s_psat:agent_node_uid:" + node.UID, "k8s_psat:agent_pod_label:app:spire-agent"},
		Description: fmt.Sprintf("Kubernetes API at %s; node %s (uid %s), agent pod %s/%s (uid %s)",
			c.URL(), node.Name, node.UID, pod.Namespace, pod.Name, pod.UID),
		AgentBlock: fmt.Sprintf(`NodeAttestor "k8s_psat" {
    plugin_data {
        cluster = %q
        token_path = %q
    }
}`, K8sCluster, tokenPath),
		ServerBlock: fmt.Sprintf(`NodeAttestor "k8s_psat" {
    plugin_data {
        clusters = {
            %q = {
                service_account_allow_list = ["%s:%s"]
                kube_config_file = %q
                allowed_node_label_keys = ["topology.kubernetes.io/zone"]
                allowed_pod_label_keys = ["app"]
            }
        }
    }
}`, K8sCluster, pod.Namespace, pod.ServiceAccount, kubeconfig),
	}, nil
}

func startX509(dir string) (*Node, error) {
	root, err := testpki.NewRoot("attest-sim root")
	if err != nil {
		return nil, err
	}
	inter, err := root.Intermediate("attest-sim intermediate")
	if err != nil {
		return nil, err
	}
	leaf, key, err := inter.Issue(testpki.Leaf{CommonName: "node-1.example.org", NotAfter: time.Now().Add(24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	keyPEM, err := testpki.KeyPEM(key)
	if err != nil {
		return nil, err
	}
	bundle, err := writeFile(dir, "x509pop-ca.pem", testpki.CertsPEM(root.Cert), 0o644)
	if err != nil {
		return nil, err
	}
	certPath, err := writeFile(dir, "x509pop-node.pem", testpki.CertsPEM(leaf, inter.Cert), 0o644)
	if err != nil {
		return nil, err
	}
	keyPath, err := writeFile(dir, "x509pop-node.key", keyPEM, 0o600)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(leaf.Raw)          //nolint:gosec // SPIRE's agent name, not a security boundary.
	rootSum := sha1.Sum(root.Cert.Raw) //nolint:gosec // the same naming, for the ca:fingerprint selector.
	return &Node{
		Plugin:      "x509pop",
		AgentPath:   "/spire/agent/x509pop/" + hex.EncodeToString(sum[:]),
		Selectors:   []string{"x509pop:subject:cn:" + leaf.Subject.CommonName, "x509pop:ca:fingerprint:" + hex.EncodeToString(rootSum[:])},
		Description: "X.509 node certificate " + certPath + " (leaf + intermediate) under the root in " + bundle,
		AgentBlock: fmt.Sprintf(`NodeAttestor "x509pop" {
    plugin_data {
        private_key_path = %q
        certificate_path = %q
    }
}`, keyPath, certPath),
		ServerBlock: fmt.Sprintf(`NodeAttestor "x509pop" {
    plugin_data {
        ca_bundle_path = %q
    }
}`, bundle),
	}, nil
}

func startSSH(dir string) (*Node, error) {
	_, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ca, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		return nil, err
	}
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	host, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		return nil, err
	}
	cert := &ssh.Certificate{Key: host.PublicKey(), CertType: ssh.HostCert, KeyId: "node-1", ValidPrincipals: []string{"node-1.example.org"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(24 * time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(hostKey, "node-1")
	if err != nil {
		return nil, err
	}
	keyPath, err := writeFile(dir, "ssh_host_ed25519_key", pem.EncodeToMemory(blk), 0o600)
	if err != nil {
		return nil, err
	}
	certPath, err := writeFile(dir, "ssh_host_ed25519_key-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o644)
	if err != nil {
		return nil, err
	}
	caPath, err := writeFile(dir, "ssh_host_ca.pub", ssh.MarshalAuthorizedKey(ca.PublicKey()), 0o644)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(cert.Marshal())
	return &Node{
		Plugin:      "sshpop",
		AgentPath:   "/spire/agent/sshpop/" + base64.RawURLEncoding.EncodeToString(sum[:]),
		Description: "SSH host certificate " + certPath + " signed by the CA in " + caPath,
		AgentBlock: fmt.Sprintf(`NodeAttestor "sshpop" {
    plugin_data {
        host_key_path = %q
        host_cert_path = %q
    }
}`, keyPath, certPath),
		ServerBlock: fmt.Sprintf(`NodeAttestor "sshpop" {
    plugin_data {
        cert_authorities_path = %q
    }
}`, caPath),
	}, nil
}
