package k8spsat

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxAPIResponse bounds what the attestor reads from the API server.
const maxAPIResponse = 4 << 20

// APIClient makes the three Kubernetes API calls the attestor needs.
type APIClient struct {
	base  *url.URL
	http  *http.Client
	token func() (string, error)
}

// ClientConfig says how to reach one cluster's API server.
type ClientConfig struct {
	// URL is the API server's base URL (https://host:port).
	URL string
	// CAPEM verifies the API server's certificate; the system roots when
	// empty.
	CAPEM []byte
	// Token is a static bearer token; TokenFile, when set, is read on
	// every call instead, since projected tokens rotate.
	Token     string
	TokenFile string
	// ClientCertPEM and ClientKeyPEM authenticate with a certificate.
	ClientCertPEM, ClientKeyPEM []byte
	// Timeout bounds each call; 10s when zero.
	Timeout time.Duration
}

// NewAPIClient returns a client for cfg.
func NewAPIClient(cfg ClientConfig) (*APIClient, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("k8spsat: API server URL %q is not an http(s) URL", cfg.URL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(cfg.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("k8spsat: API server CA holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if len(cfg.ClientCertPEM) > 0 || len(cfg.ClientKeyPEM) > 0 {
		pair, err := tls.X509KeyPair(cfg.ClientCertPEM, cfg.ClientKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("k8spsat: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	c := &APIClient{base: u, http: &http.Client{Transport: tr, Timeout: timeout}}
	switch {
	case cfg.TokenFile != "":
		path := cfg.TokenFile
		c.token = func() (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("k8spsat: API token: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	default:
		tok := cfg.Token
		c.token = func() (string, error) { return tok, nil }
	}
	return c, nil
}

// apiError is a non-success answer of the API server.
type apiError struct {
	Code    int
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("API server answered %d: %s", e.Code, e.Message)
}

// isNotFound reports whether err is the API server's 404.
func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Code == http.StatusNotFound
}

func (c *APIClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("k8spsat: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("k8spsat: request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := c.token()
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("k8spsat: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse+1))
	if err != nil {
		return fmt.Errorf("k8spsat: %s %s: read: %w", method, path, err)
	}
	if len(b) > maxAPIResponse {
		return fmt.Errorf("k8spsat: %s %s: response larger than %d bytes", method, path, maxAPIResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &st)
		return fmt.Errorf("k8spsat: %s %s: %w", method, path, &apiError{Code: resp.StatusCode, Message: st.Message})
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("k8spsat: %s %s: decode: %w", method, path, err)
	}
	return nil
}

// TokenReviewStatus is the part of a TokenReview's status the attestor
// reads.
type TokenReviewStatus struct {
	Authenticated bool `json:"authenticated"`
	User          struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	Audiences []string `json:"audiences"`
	Error     string   `json:"error"`
}

// ReviewToken asks the API server to authenticate token for audiences
// (the API server's own audiences when empty).
func (c *APIClient) ReviewToken(ctx context.Context, token string, audiences []string) (*TokenReviewStatus, error) {
	type spec struct {
		Token     string   `json:"token"`
		Audiences []string `json:"audiences,omitempty"`
	}
	req := struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
		Spec       spec   `json:"spec"`
	}{"TokenReview", "authentication.k8s.io/v1", spec{token, audiences}}
	var resp struct {
		Status TokenReviewStatus `json:"status"`
	}
	if err := c.do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews", req, &resp); err != nil {
		return nil, err
	}
	return &resp.Status, nil
}

// PodInfo is the part of a pod the attestor reads.
type PodInfo struct {
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		UID       string            `json:"uid"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		NodeName           string `json:"nodeName"`
		ServiceAccountName string `json:"serviceAccountName"`
	} `json:"spec"`
	Status struct {
		HostIP string `json:"hostIP"`
	} `json:"status"`
}

// GetPod reads a pod.
func (c *APIClient) GetPod(ctx context.Context, namespace, name string) (*PodInfo, error) {
	var p PodInfo
	if err := c.do(ctx, http.MethodGet, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(name), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// NodeInfo is the part of a node the attestor reads.
type NodeInfo struct {
	Metadata struct {
		Name   string            `json:"name"`
		UID    string            `json:"uid"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
}

// GetNode reads a node.
func (c *APIClient) GetNode(ctx context.Context, name string) (*NodeInfo, error) {
	var n NodeInfo
	if err := c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(name), nil, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// kubeconfig is the subset of a kubeconfig file this package understands.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server     string `yaml:"server"`
			CA         string `yaml:"certificate-authority"`
			CAData     string `yaml:"certificate-authority-data"`
			InsecureTL bool   `yaml:"insecure-skip-tls-verify"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			Token          string `yaml:"token"`
			TokenFile      string `yaml:"tokenFile"`
			ClientCert     string `yaml:"client-certificate"`
			ClientCertData string `yaml:"client-certificate-data"`
			ClientKey      string `yaml:"client-key"`
			ClientKeyData  string `yaml:"client-key-data"`
			Exec           any    `yaml:"exec"`
			AuthProvider   any    `yaml:"auth-provider"`
		} `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster string `yaml:"cluster"`
			User    string `yaml:"user"`
		} `yaml:"context"`
	} `yaml:"contexts"`
}

// LoadKubeconfig reads the current context of a kubeconfig file (YAML or
// JSON). It supports server, certificate authority (file or data), and
// token, token file or client certificate credentials; exec and
// auth-provider credentials and insecure-skip-tls-verify are refused.
// Relative paths are relative to the file, as kubectl resolves them.
func LoadKubeconfig(path string) (ClientConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	ctxName := kc.CurrentContext
	if ctxName == "" && len(kc.Contexts) == 1 {
		ctxName = kc.Contexts[0].Name
	}
	var clusterName, userName string
	found := false
	for _, c := range kc.Contexts {
		if c.Name == ctxName {
			clusterName, userName, found = c.Context.Cluster, c.Context.User, true
		}
	}
	if !found {
		return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: no context %q", path, ctxName)
	}
	var cfg ClientConfig
	found = false
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		found = true
		if c.Cluster.InsecureTL {
			return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: insecure-skip-tls-verify is not supported", path)
		}
		cfg.URL = c.Cluster.Server
		if cfg.CAPEM, err = dataOrFile(c.Cluster.CAData, rel(c.Cluster.CA)); err != nil {
			return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: certificate authority: %w", path, err)
		}
	}
	if !found {
		return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: no cluster %q", path, clusterName)
	}
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		if u.User.Exec != nil || u.User.AuthProvider != nil {
			return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: exec and auth-provider credentials are not supported", path)
		}
		cfg.Token = u.User.Token
		cfg.TokenFile = rel(u.User.TokenFile)
		if cfg.ClientCertPEM, err = dataOrFile(u.User.ClientCertData, rel(u.User.ClientCert)); err != nil {
			return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: client certificate: %w", path, err)
		}
		if cfg.ClientKeyPEM, err = dataOrFile(u.User.ClientKeyData, rel(u.User.ClientKey)); err != nil {
			return ClientConfig{}, fmt.Errorf("k8spsat: kubeconfig %s: client key: %w", path, err)
		}
	}
	return cfg, nil
}

func dataOrFile(b64, path string) ([]byte, error) {
	if b64 != "" {
		return base64.StdEncoding.DecodeString(b64)
	}
	if path != "" {
		return os.ReadFile(path)
	}
	return nil, nil
}

// In-cluster credentials, as every pod is given them.
const (
	inClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	inClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// InClusterConfig is the configuration of a server running in a pod.
func InClusterConfig() (ClientConfig, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return ClientConfig{}, errors.New("k8spsat: not running in a cluster (KUBERNETES_SERVICE_HOST unset): set kube_config_file or kube_api_url")
	}
	ca, err := os.ReadFile(inClusterCAFile)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("k8spsat: in-cluster CA: %w", err)
	}
	return ClientConfig{URL: "https://" + net.JoinHostPort(host, port), CAPEM: ca, TokenFile: inClusterTokenFile}, nil
}
