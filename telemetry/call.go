package telemetry

import (
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Call is SPIRE's call counter: when done it counts key and observes
// key.elapsed_time in milliseconds, both labelled with the gRPC status
// code of the outcome (status="OK" for success).
type Call struct {
	m      *Metrics
	key    []string
	start  time.Time
	mu     sync.Mutex
	labels []Label
	done   bool
}

// StartCall starts a call counter for key.
func (m *Metrics) StartCall(key ...string) *Call {
	return &Call{m: m, key: key, start: time.Now()}
}

// AddLabel adds a label to both metrics of the call.
func (c *Call) AddLabel(name, value string) {
	c.mu.Lock()
	c.labels = append(c.labels, Label{Name: name, Value: value})
	c.mu.Unlock()
}

// Done emits the call with err's status code; a second Done does nothing.
// Use it as defer c.Done(&err) to see the function's final error.
func (c *Call) Done(err *error) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	code := codes.OK
	if err != nil && *err != nil {
		code = status.Code(*err)
	}
	labels := append(c.labels, Label{Name: "status", Value: code.String()})
	c.mu.Unlock()
	c.m.IncrCounter(c.key, 1, labels...)
	c.m.MeasureSince(append(c.key[:len(c.key):len(c.key)], "elapsed_time"), c.start, labels...)
}

// RPCKey is SPIRE's metric key for a gRPC method: "rpc", the service's
// dotted name split on '.', then the method, each in snake case, with
// SPIRE's short service names (spire.api.server.agent.v1.Agent/AttestAgent
// gives rpc.agent.v1.agent.attest_agent, SpiffeWorkloadAPI/FetchX509SVID
// gives rpc.workload_api.fetch_x509_svid).
func RPCKey(fullMethod string) []string {
	if k, ok := rpcKeys.Load(fullMethod); ok {
		return k.([]string)
	}
	fm := strings.TrimPrefix(fullMethod, "/")
	service, method, _ := strings.Cut(fm, "/")
	service = serviceShortNames.Replace(service)
	method = strings.ReplaceAll(method, "SubscribeToX509SVIDs", "subscribe_to_x509_svids")
	key := []string{"rpc"}
	for _, p := range append(strings.Split(service, "."), method) {
		key = append(key, snakeCase(p))
	}
	rpcKeys.Store(fullMethod, key)
	return key
}

var (
	rpcKeys           sync.Map
	serviceShortNames = strings.NewReplacer(
		"spire.api.server.", "",
		"SpiffeWorkloadAPI", "WorkloadAPI",
		"envoy.service.secret.v3.SecretDiscoveryService", "SDS.v3",
		"grpc.health.v1.Health", "Health",
		"logger.v1.Logger", "Logger",
		"spire.api.agent.delegatedidentity.v1.DelegatedIdentity", "DelegatedIdentity",
	)
)

// snakeCase is SPIRE's metricKey: lower case, '_' for any other character,
// and '_' before an upper-case letter that starts or ends a word
// (FetchX509SVID -> fetch_x509_svid, ABCDef -> abc_def).
func snakeCase(s string) string {
	in := []rune(s)
	out := make([]rune, 0, len(in)+4)
	for i, r := range in {
		if !unicode.In(r, unicode.Letter, unicode.Number) {
			out = append(out, '_')
			continue
		}
		lr := unicode.ToLower(r)
		if r != lr && i > 0 && i+1 < len(in) &&
			(unicode.IsLower(in[i+1]) || unicode.IsLower(in[i-1])) && out[len(out)-1] != '_' {
			out = append(out, '_')
		}
		out = append(out, lr)
	}
	return string(out)
}
