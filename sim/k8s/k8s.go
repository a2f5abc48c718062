package k8s

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// DefaultIssuer is the iss claim of tokens minted by a Cluster, the
// kube-apiserver default.
const DefaultIssuer = "https://kubernetes.default.svc.cluster.local"

// Options configure a Cluster. The zero value is a usable cluster.
type Options struct {
	// Algorithm signs service-account tokens: "RS256" (default) or "ES256".
	Algorithm string
	// Issuer is the iss claim of minted tokens; DefaultIssuer when empty.
	Issuer string
	// BearerToken authenticates API clients (the SPIRE server); random
	// when empty.
	BearerToken string
	// APIAudiences are the audiences a TokenReview without spec.audiences
	// checks, as kube-apiserver's --api-audiences; the issuer when empty.
	APIAudiences []string
	// DisableLookup stops TokenReview from checking that a token's bound
	// pod and node still exist with the same UIDs, as kube-apiserver with
	// --service-account-lookup=false. It lets tests show that the SPIRE
	// server checks the live pod itself.
	DisableLookup bool
	// IgnoreSpecAudiences makes TokenReview check APIAudiences whatever
	// the request asks, as an API server too old to know spec.audiences
	// does; the SPIRE server must then notice the status audiences.
	IgnoreSpecAudiences bool
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Pod is the part of a pod object the attestor reads.
type Pod struct {
	Namespace      string
	Name           string
	UID            string
	ServiceAccount string
	NodeName       string
	HostIP         string
	Labels         map[string]string
}

// Node is the part of a node object the attestor reads.
type Node struct {
	Name       string
	UID        string
	InternalIP string
	Labels     map[string]string
}

// Claims are the claims of a service-account token.
type Claims struct {
	Issuer    string            `json:"iss,omitempty"`
	Subject   string            `json:"sub,omitempty"`
	Audience  []string          `json:"aud,omitempty"`
	Expiry    int64             `json:"exp,omitempty"`
	NotBefore int64             `json:"nbf,omitempty"`
	IssuedAt  int64             `json:"iat,omitempty"`
	ID        string            `json:"jti,omitempty"`
	Kube      *KubernetesClaims `json:"kubernetes.io,omitempty"`
}

// KubernetesClaims is the "kubernetes.io" claim of a bound token.
type KubernetesClaims struct {
	Namespace      string     `json:"namespace"`
	ServiceAccount ObjectRef  `json:"serviceaccount"`
	Pod            *ObjectRef `json:"pod,omitempty"`
	Node           *ObjectRef `json:"node,omitempty"`
}

// ObjectRef names an object a token is bound to.
type ObjectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// Cluster is a running simulated API server.
type Cluster struct {
	opts   Options
	alg    jose.SignatureAlgorithm
	key    crypto.Signer
	caPEM  []byte
	srv    *http.Server
	ln     net.Listener
	url    string
	mu     sync.Mutex
	pods   map[string]Pod
	nodes  map[string]Node
	saUIDs map[string]string
}

// Start serves a new cluster on an ephemeral loopback port.
func Start(opts Options) (*Cluster, error) {
	if opts.Issuer == "" {
		opts.Issuer = DefaultIssuer
	}
	if len(opts.APIAudiences) == 0 {
		opts.APIAudiences = []string{opts.Issuer}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BearerToken == "" {
		opts.BearerToken = randomHex(24)
	}
	c := &Cluster{opts: opts, pods: map[string]Pod{}, nodes: map[string]Node{}, saUIDs: map[string]string{}}
	var err error
	switch opts.Algorithm {
	case "", "RS256":
		c.alg = jose.RS256
		c.key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		c.alg = jose.ES256
		c.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("k8s: unsupported algorithm %q", opts.Algorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("k8s: signing key: %w", err)
	}
	tlsCert, caPEM, err := serverCert()
	if err != nil {
		return nil, err
	}
	c.caPEM = caPEM
	c.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("k8s: listen: %w", err)
	}
	c.url = "https://" + c.ln.Addr().String()
	c.srv = &http.Server{
		Handler:           c.handler(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{tlsCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = c.srv.ServeTLS(c.ln, "", "") }()
	return c, nil
}

// Close stops the server.
func (c *Cluster) Close() error { return c.srv.Close() }

// URL is the API server's base URL (https://127.0.0.1:port).
func (c *Cluster) URL() string { return c.url }

// CAPEM is the PEM certificate that verifies the API server's TLS.
func (c *Cluster) CAPEM() []byte { return append([]byte(nil), c.caPEM...) }

// BearerToken is the credential API clients present.
func (c *Cluster) BearerToken() string { return c.opts.BearerToken }

// Issuer is the iss claim of minted tokens.
func (c *Cluster) Issuer() string { return c.opts.Issuer }

// PublicKey verifies the cluster's service-account tokens.
func (c *Cluster) PublicKey() crypto.PublicKey { return c.key.Public() }

// PutNode adds or replaces a node.
func (c *Cluster) PutNode(n Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[n.Name] = n
}

// PutPod adds or replaces a pod; replacing a pod with a new UID is how a
// test recreates it.
func (c *Cluster) PutPod(p Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pods[p.Namespace+"/"+p.Name] = p
}

// DeletePod removes a pod.
func (c *Cluster) DeletePod(namespace, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pods, namespace+"/"+name)
}

func (c *Cluster) pod(namespace, name string) (Pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[namespace+"/"+name]
	return p, ok
}

func (c *Cluster) node(name string) (Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	return n, ok
}

// serviceAccountUID gives each service account a stable UID.
func (c *Cluster) serviceAccountUID(namespace, name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := namespace + "/" + name
	if _, ok := c.saUIDs[k]; !ok {
		c.saUIDs[k] = NewUID()
	}
	return c.saUIDs[k]
}

// MintToken returns a projected service-account token for the pod
// namespace/name, bound to the pod and its node, as the kubelet writes
// into a serviceAccountToken volume.
func (c *Cluster) MintToken(namespace, name string, audiences []string, ttl time.Duration) (string, error) {
	p, ok := c.pod(namespace, name)
	if !ok {
		return "", fmt.Errorf("k8s: pod %s/%s not found", namespace, name)
	}
	now := c.opts.Now()
	claims := Claims{
		Issuer:    c.opts.Issuer,
		Subject:   "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
		Audience:  audiences,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		Expiry:    now.Add(ttl).Unix(),
		ID:        NewUID(),
		Kube: &KubernetesClaims{
			Namespace:      p.Namespace,
			ServiceAccount: ObjectRef{Name: p.ServiceAccount, UID: c.serviceAccountUID(p.Namespace, p.ServiceAccount)},
			Pod:            &ObjectRef{Name: p.Name, UID: p.UID},
		},
	}
	if n, ok := c.node(p.NodeName); ok {
		claims.Kube.Node = &ObjectRef{Name: n.Name, UID: n.UID}
	}
	return c.Sign(claims)
}

// Sign signs arbitrary claims with the cluster's key, for tests that need
// tokens a kubelet would never mint.
func (c *Cluster) Sign(claims Claims) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: c.alg, Key: c.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("k8s: signer: %w", err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("k8s: sign: %w", err)
	}
	return tok, nil
}

// Kubeconfig is a kubeconfig that reaches this cluster with its bearer
// token, as a SPIRE server outside the cluster is given.
func (c *Cluster) Kubeconfig() []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: sim
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: spire-server
  user:
    token: %s
contexts:
- name: sim
  context:
    cluster: sim
    user: spire-server
current-context: sim
`, c.url, base64.StdEncoding.EncodeToString(c.caPEM), c.opts.BearerToken)
}

// NewUID returns a random RFC 4122 version 4 UID, as Kubernetes assigns.
func NewUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serverCert makes a throwaway CA and a TLS certificate for loopback.
func serverCert() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("k8s: CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "k8s-sim CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("k8s: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("k8s: CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("k8s: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("k8s: server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}
