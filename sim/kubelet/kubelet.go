package kubelet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a Kubelet; the zero value is a secure port with a
// random bearer token.
type Options struct {
	// Token is the bearer token /pods accepts (default random).
	Token string
	// NodeName is the name the serving certificate is for, besides
	// localhost and 127.0.0.1 (default "sim-node").
	NodeName string
	// ReadOnly also serves /pods on a plain-HTTP port without
	// authentication, as --read-only-port does.
	ReadOnly bool
	// ClientCAs, when set, lets a client certificate that chains to them
	// authenticate instead of the token.
	ClientCAs *x509.CertPool
	// Anonymous accepts requests without credentials, as
	// --anonymous-auth=true with an authorizer that allows them.
	Anonymous bool
}

// Kubelet is a running simulated kubelet.
type Kubelet struct {
	opts   Options
	caPEM  []byte
	secure *http.Server
	ro     *http.Server
	sport  int
	roport int

	mu       sync.Mutex
	fault    Fault
	token    string
	pods     []Pod // in the order added: the kubelet's list is stable
	created  map[string]time.Time
	served   int
	servedCh chan struct{} // closed and replaced on each answer
}

// Pod is what a test says about a pod.
type Pod struct {
	Name, Namespace, UID string
	Labels               map[string]string
	ServiceAccount       string
	NodeName             string
	Owners               []Owner
	InitContainers       []Container
	Containers           []Container
}

// Owner is one of a pod's owner references.
type Owner struct{ Kind, Name, UID string }

// Container is one container of a pod and its status.
type Container struct {
	Name string
	// Image is the image as the pod spec names it; ImageID the resolved
	// one ("docker://sha256:..." for an imported image).
	Image, ImageID string
	// ContainerID is "docker://<64 hex>"; empty for a container not
	// started yet.
	ContainerID string
}

// quiet drops the server's log: handshakes refused by a client with the
// wrong CA are what some tests are about.
var quiet = log.New(io.Discard, "", 0)

// Start serves a kubelet on ephemeral loopback ports until the test ends.
func Start(tb testing.TB, opts Options) *Kubelet {
	tb.Helper()
	if opts.Token == "" {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		opts.Token = hex.EncodeToString(b)
	}
	if opts.NodeName == "" {
		opts.NodeName = "sim-node"
	}
	cert, caPEM, err := serverCert(opts.NodeName)
	if err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	k := &Kubelet{opts: opts, caPEM: caPEM, token: opts.Token, created: map[string]time.Time{}, servedCh: make(chan struct{})}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.ClientCAs != nil {
		tlsCfg.ClientCAs = opts.ClientCAs
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("kubelet: listen: %v", err)
	}
	k.sport = ln.Addr().(*net.TCPAddr).Port
	k.secure = &http.Server{Handler: k.handler(true), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}
	go func() { _ = k.secure.ServeTLS(ln, "", "") }()
	tb.Cleanup(func() { _ = k.secure.Close() })
	if opts.ReadOnly {
		rln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("kubelet: listen: %v", err)
		}
		k.roport = rln.Addr().(*net.TCPAddr).Port
		k.ro = &http.Server{Handler: k.handler(false), ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}
		go func() { _ = k.ro.Serve(rln) }()
		tb.Cleanup(func() { _ = k.ro.Close() })
	}
	return k
}

// SecurePort is the HTTPS port (kubelet_secure_port).
func (k *Kubelet) SecurePort() int { return k.sport }

// ReadOnlyPort is the plain-HTTP port (kubelet_read_only_port), 0 unless
// Options.ReadOnly.
func (k *Kubelet) ReadOnlyPort() int { return k.roport }

// CAPEM is the CA that signed the serving certificate (kubelet_ca_path).
func (k *Kubelet) CAPEM() []byte { return slices.Clone(k.caPEM) }

// NodeName is the name the serving certificate is for.
func (k *Kubelet) NodeName() string { return k.opts.NodeName }

// Token is the bearer token accepted now.
func (k *Kubelet) Token() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.token
}

// SetToken changes the accepted token, as a rotated service account
// token would need.
func (k *Kubelet) SetToken(tok string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.token = tok
}

// WriteFiles writes the CA and the token into dir and returns their
// paths, for kubelet_ca_path and token_path.
func (k *Kubelet) WriteFiles(tb testing.TB, dir string) (caPath, tokenPath string) {
	tb.Helper()
	caPath, tokenPath = filepath.Join(dir, "kubelet-ca.crt"), filepath.Join(dir, "token")
	if err := os.WriteFile(caPath, k.caPEM, 0o644); err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	if err := os.WriteFile(tokenPath, []byte(k.Token()+"\n"), 0o600); err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	return caPath, tokenPath
}

// PutPod lists p, replacing a pod with the same UID.
func (k *Kubelet) PutPod(p Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.created[p.UID]; !ok {
		k.created[p.UID] = time.Now().UTC().Truncate(time.Second)
	}
	for i := range k.pods {
		if k.pods[i].UID == p.UID {
			k.pods[i] = p
			return
		}
	}
	k.pods = append(k.pods, p)
}

// DeletePod stops listing the pod with uid.
func (k *Kubelet) DeletePod(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods = slices.DeleteFunc(k.pods, func(p Pod) bool { return p.UID == uid })
	delete(k.created, uid)
}

// Fault is a way for /pods to misbehave, for tests of what a client does
// with a broken kubelet.
type Fault int

// The faults: none, a 200 answer that is not JSON, an answer whose
// headers never come (until the client gives up or the kubelet closes),
// and a 500.
const (
	NoFault Fault = iota
	Garbage
	Hang
	ServerError
)

// SetFault makes every later /pods request (on either port, after
// authentication) misbehave as f; NoFault restores normal answers.
func (k *Kubelet) SetFault(f Fault) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fault = f
}

// Served is the number of pod lists sent so far.
func (k *Kubelet) Served() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.served
}

// WaitServed waits until n pod lists in all have been sent, failing the
// test after timeout.
func (k *Kubelet) WaitServed(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		served, ch := k.served, k.servedCh
		k.mu.Unlock()
		if served >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("kubelet: %d pod lists served after %v, want %d", served, timeout, n)
		}
	}
}

func (k *Kubelet) handler(secure bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, r *http.Request) {
		if secure && !k.authenticated(r) {
			// The kubelet's answer to bad credentials.
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		k.mu.Lock()
		fault := k.fault
		k.mu.Unlock()
		switch fault {
		case Garbage:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"PodList","items":[{"metadata":{"uid":`))
			return
		case Hang:
			<-r.Context().Done()
			// Returning would send an empty 200, which a client whose
			// request ended for another reason (a retry racing its
			// deadline) reads as a truncated pod list; a hung kubelet
			// never answers, so abort the stream instead.
			panic(http.ErrAbortHandler)
		case ServerError:
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		k.servePods(w)
	})
	return mux
}

func (k *Kubelet) authenticated(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return k.opts.Anonymous
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(k.Token())) == 1
}

func (k *Kubelet) servePods(w http.ResponseWriter) {
	k.mu.Lock()
	list := podListJSON{Kind: "PodList", APIVersion: "v1", Items: make([]*podJSON, 0, len(k.pods))}
	for _, p := range k.pods {
		list.Items = append(list.Items, render(p, k.created[p.UID]))
	}
	k.mu.Unlock()
	b, err := json.Marshal(list)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	// Counted once the answer is written, so a test that waits for n
	// answers knows the attestor has had them.
	k.mu.Lock()
	k.served++
	close(k.servedCh)
	k.servedCh = make(chan struct{})
	k.mu.Unlock()
}

// serverCert makes a CA and a serving certificate for the node name,
// localhost and 127.0.0.1, as a kubelet's is.
func serverCert(node string) (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: node + "-ca@sim"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: node + "@sim"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{node, "localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("serving certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}
