package oidcprovider

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseConfig: any file text is parsed or refused with an error, never
// a panic; an accepted one is complete.
func FuzzParseConfig(f *testing.F) {
	f.Add(minimal)
	f.Add(`domains = ["a"]
listen_socket_path = "/tmp/x"
workload_api { socket_path = "/a" trust_domain = "td" poll_interval = "-1s" }
health_checks { bind_port = 0 }
jwt_issuer = "https://x/y"`)
	f.Add(`domains = "a"
serving_cert_file { cert_file_path = "c" key_file_path = "k" addr = "[::1]:0" }
file { path = "b" }
acme { tos_accepted = true email = "e" cache_dir = "" }`)
	f.Add(`{"domains": ["a"], "insecure_addr": ":1", "server_api": {"address": "unix:/a"}}`)
	f.Add("domains = [\"\x00\"]\nexperimental { listen_named_pipe_name = \"p\" }")
	f.Fuzz(func(t *testing.T, conf string) {
		c, err := ParseConfig("fuzz.conf", []byte(conf), false)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if len(c.Domains) == 0 {
			t.Fatal("accepted without domains")
		}
		sources := 0
		for _, s := range []bool{c.ServerAPI != nil, c.WorkloadAPI != nil, c.File != nil} {
			if s {
				sources++
			}
		}
		if sources != 1 {
			t.Fatalf("accepted with %d sources", sources)
		}
		if _, err := newHandler(discard(), &staticSource{}, handlerConfig{policy: func(string) error { return nil }, pathPrefix: c.ServerPathPrefix}); err != nil {
			t.Fatalf("accepted prefix %q the handler refuses: %v", c.ServerPathPrefix, err)
		}
	})
}

// FuzzWellKnownHost: whatever Host and forwarding headers a client sends,
// the discovery document is served only for an allowed domain, and then
// names that domain.
func FuzzWellKnownHost(f *testing.F) {
	f.Add("domain.test", "", "", "")
	f.Add("internal:80", "domain.test", "https", "")
	f.Add("localhost", "evil.test", "", "proto=http")
	f.Add("domain.test:443", "", "", "for=x;proto=https")
	f.Add("[::1]:80", "xn--bcher-kva.test", "HTTP", "")
	f.Add("domain.test\"", "", "", "")
	h, err := newHandler(discard(), &staticSource{}, handlerConfig{allowInsecureScheme: true, policy: mustPolicy(f, "domain.test", "localhost")})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, xfHost, xfProto, fwd string) {
		r, err := http.NewRequest(http.MethodGet, "http://placeholder/.well-known/openid-configuration", nil)
		if err != nil {
			t.Skip()
		}
		r.Host = host
		r.Header.Set("X-Forwarded-Host", xfHost)
		r.Header.Set("X-Forwarded-Proto", xfProto)
		r.Header.Set("Forwarded", fwd)
		w := &recorder{header: http.Header{}}
		h.ServeHTTP(w, r)
		served := host
		if xfHost != "" {
			served = xfHost
		}
		d := hostDomain(served)
		allowed := d == "domain.test" || d == "localhost"
		switch {
		case w.code == 0 || w.code == http.StatusOK:
			if !allowed {
				t.Fatalf("served a document for host %q", served)
			}
			var doc discoveryDocument
			if err := json.Unmarshal([]byte(w.body.String()), &doc); err != nil {
				t.Fatalf("document is not JSON: %v", err)
			}
			if !strings.Contains(doc.Issuer, "://"+d) {
				t.Fatalf("issuer %q does not name %q", doc.Issuer, d)
			}
		case w.code == http.StatusBadRequest:
			if allowed {
				t.Fatalf("refused allowed host %q", served)
			}
		default:
			t.Fatalf("status %d", w.code)
		}
	})
}

func mustPolicy(tb testing.TB, domains ...string) domainPolicy {
	p, err := allowDomains(domains...)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// recorder is a minimal ResponseWriter (httptest's rejects some of the
// header values fuzzing makes).
type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(c int) {
	if r.code == 0 {
		r.code = c
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
