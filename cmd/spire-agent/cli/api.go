package cli

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func (e *env) fetchX509(args []string) error {
	var c common
	var silent bool
	var writePath string
	fs := e.flagSet("fetch x509", &c, true)
	fs.BoolVar(&silent, "silent", false, "Suppress stdout")
	fs.StringVar(&writePath, "write", "", "Write SVID data to the specified path (optional; only available for pretty output format)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	cl, err := e.client(&c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := e.withTimeout(&c)
	defer cancel()

	start := time.Now()
	x, err := cl.FetchX509Context(ctx)
	elapsed := time.Since(start)
	if err != nil {
		// A gRPC status already reads "rpc error: code = ...", as SPIRE
		// prints it; only other failures (a malformed answer) get the prefix.
		if _, ok := status.FromError(err); ok {
			return err
		}
		return fmt.Errorf("rpc error: %w", err)
	}
	if c.output == "json" {
		return e.printJSON(x509ContextProto(x))
	}
	if !silent {
		e.printX509Context(x, elapsed)
	}
	if writePath != "" {
		return e.writeX509(writePath, x)
	}
	return nil
}

// printX509Context prints what SPIRE's `api fetch x509` prints.
func (e *env) printX509Context(x *workloadapi.X509Context, elapsed time.Duration) {
	msg := fmt.Sprintf("Received %d svid", len(x.SVIDs))
	if len(x.SVIDs) != 1 {
		msg += "s"
	}
	e.printf("%s after %s\n", msg, elapsed)
	for _, svid := range x.SVIDs {
		e.printf("\n")
		e.printf("SPIFFE ID:\t\t%s\n", svid.ID)
		if svid.Hint != "" {
			e.printf("Hint:\t\t\t%s\n", svid.Hint)
		}
		e.printf("SVID Valid After:\t%v\n", svid.Certificates[0].NotBefore)
		e.printf("SVID Valid Until:\t%v\n", svid.Certificates[0].NotAfter)
		for i, c := range svid.Certificates[1:] {
			e.printf("Intermediate #%v Valid After:\t%v\n", i+1, c.NotBefore)
			e.printf("Intermediate #%v Valid Until:\t%v\n", i+1, c.NotAfter)
		}
		for i, c := range ownAuthorities(x, svid) {
			e.printf("CA #%v Valid After:\t%v\n", i+1, c.NotBefore)
			e.printf("CA #%v Valid Until:\t%v\n", i+1, c.NotAfter)
		}
		for _, td := range federatedDomains(x, svid) {
			b, _ := x.Bundles.Get(td)
			for i, c := range b.X509Authorities() {
				e.printf("[%s] CA #%v Valid After:\t%v\n", td.IDString(), i+1, c.NotBefore)
				e.printf("[%s] CA #%v Valid Until:\t%v\n", td.IDString(), i+1, c.NotAfter)
			}
		}
	}
	e.printf("\n")
}

func ownAuthorities(x *workloadapi.X509Context, svid *x509svid.SVID) []*x509.Certificate {
	if b, ok := x.Bundles.Get(svid.ID.TrustDomain()); ok {
		return b.X509Authorities()
	}
	return nil
}

// federatedDomains lists the other trust domains, sorted for stable output.
func federatedDomains(x *workloadapi.X509Context, svid *x509svid.SVID) []spiffeid.TrustDomain {
	var tds []spiffeid.TrustDomain
	for _, b := range x.Bundles.Bundles() {
		if b.TrustDomain() != svid.ID.TrustDomain() {
			tds = append(tds, b.TrustDomain())
		}
	}
	sort.Slice(tds, func(i, j int) bool { return tds[i].Compare(tds[j]) < 0 })
	return tds
}

// writeX509 writes svid.N.pem, svid.N.key, bundle.N.pem and
// federated_bundle.N.M.pem, as SPIRE does.
func (e *env) writeX509(dir string, x *workloadapi.X509Context) error {
	for i, svid := range x.SVIDs {
		svidPath := filepath.Join(dir, fmt.Sprintf("svid.%d.pem", i))
		keyPath := filepath.Join(dir, fmt.Sprintf("svid.%d.key", i))
		bundlePath := filepath.Join(dir, fmt.Sprintf("bundle.%d.pem", i))

		e.printf("Writing SVID #%d to file %s.\n", i, svidPath)
		if err := writeCerts(svidPath, svid.Certificates); err != nil {
			return err
		}
		e.printf("Writing key #%d to file %s.\n", i, keyPath)
		keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
		if err != nil {
			return fmt.Errorf("marshal key: %w", err)
		}
		if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			return fmt.Errorf("write key: %w", err)
		}
		e.printf("Writing bundle #%d to file %s.\n", i, bundlePath)
		if err := writeCerts(bundlePath, ownAuthorities(x, svid)); err != nil {
			return err
		}
		for j, td := range federatedDomains(x, svid) {
			b, _ := x.Bundles.Get(td)
			p := filepath.Join(dir, fmt.Sprintf("federated_bundle.%d.%d.pem", i, j))
			e.printf("Writing federated bundle #%d for trust domain %s to file %s.\n", j, td.IDString(), p)
			if err := writeCerts(p, b.X509Authorities()); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeCerts(path string, certs []*x509.Certificate) error {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// x509ContextProto rebuilds the Workload API message for -output json, so
// the JSON has the field names SPIRE's output has.
func x509ContextProto(x *workloadapi.X509Context) *workload.X509SVIDResponse {
	resp := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{}}
	for _, svid := range x.SVIDs {
		certs, key, err := svid.MarshalRaw()
		if err != nil {
			continue
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    svid.ID.String(),
			X509Svid:    certs,
			X509SvidKey: key,
			Bundle:      concat(ownAuthorities(x, svid)),
			Hint:        svid.Hint,
		})
		for _, td := range federatedDomains(x, svid) {
			b, _ := x.Bundles.Get(td)
			resp.FederatedBundles[td.IDString()] = concat(b.X509Authorities())
		}
	}
	return resp
}

func concat(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func (e *env) printJSON(msgs ...proto.Message) error {
	var parts []json.RawMessage
	for _, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			return fmt.Errorf("marshal json: %w", err)
		}
		parts = append(parts, b)
	}
	var out []byte
	var err error
	if len(parts) == 1 {
		out, err = json.Marshal(parts[0])
	} else {
		out, err = json.Marshal(parts)
	}
	if err != nil {
		return fmt.Errorf("marshal json: %w", err)
	}
	e.printf("%s\n", out)
	return nil
}

// fetchJWT and validateJWT talk to the Workload API without go-spiffe's
// client: like SPIRE's CLI they print what the agent sent (bundle bytes as
// served, hints, the agent's own view of the claims), not a re-encoding.
func (e *env) fetchJWT(args []string) error {
	var c common
	var audience, spiffeID string
	fs := e.flagSet("fetch jwt", &c, true)
	fs.StringVar(&audience, "audience", "", "comma separated list of audience values")
	fs.StringVar(&spiffeID, "spiffeID", "", "SPIFFE ID subject (optional)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	var auds []string
	for _, a := range strings.Split(audience, ",") {
		if a = strings.TrimSpace(a); a != "" {
			auds = append(auds, a)
		}
	}
	if len(auds) == 0 {
		return errors.New("audience must be specified")
	}
	cl, closeConn, err := e.rawClient(&c)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := e.withTimeout(&c)
	defer cancel()
	ctx = workloadHeader(ctx)

	stream, err := cl.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		return fmt.Errorf("failed to receive JWT bundles: %w", err)
	}
	bundles, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("failed to receive JWT bundles: %w", err)
	}
	svids, err := cl.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: auds, SpiffeId: spiffeID})
	if err != nil {
		return err
	}
	if c.output == "json" {
		return e.printJSON(svids, bundles)
	}
	for _, s := range svids.Svids {
		e.printf("token(%s):\n\t%s\n", s.SpiffeId, s.Svid)
		if s.Hint != "" {
			e.printf("hint(%s):\n\t%s\n", s.SpiffeId, s.Hint)
		}
	}
	keys := make([]string, 0, len(bundles.Bundles))
	for k := range bundles.Bundles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e.printf("bundle(%s):\n\t%s\n", k, bundles.Bundles[k])
	}
	return nil
}

func (e *env) validateJWT(args []string) error {
	var c common
	var audience, token string
	fs := e.flagSet("validate jwt", &c, true)
	fs.StringVar(&audience, "audience", "", "expected audience value")
	fs.StringVar(&token, "svid", "", "JWT SVID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if audience == "" {
		return errors.New("audience must be specified")
	}
	if token == "" {
		return errors.New("svid must be specified")
	}
	cl, closeConn, err := e.rawClient(&c)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := e.withTimeout(&c)
	defer cancel()

	resp, err := cl.ValidateJWTSVID(workloadHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: audience, Svid: token})
	if err != nil {
		if s, ok := status.FromError(err); ok && s.Code() == codes.InvalidArgument {
			return fmt.Errorf("SVID is not valid: %s", s.Message())
		}
		return fmt.Errorf("unable to validate JWT SVID: %w", err)
	}
	// Sorted keys and plain spacing, unlike protojson's deliberately
	// unstable output, so that scripts can compare it.
	claims, err := json.Marshal(resp.GetClaims().AsMap())
	if err != nil {
		return fmt.Errorf("unable to marshal claims: %w", err)
	}
	if c.output == "json" {
		e.printf("%s\n", mustJSON(map[string]any{"spiffe_id": resp.SpiffeId, "claims": json.RawMessage(claims)}))
		return nil
	}
	e.printf("SVID is valid.\n")
	e.printf("SPIFFE ID : %s\n", resp.SpiffeId)
	e.printf("Claims    : %s\n", claims)
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte("{}")
	}
	return b
}

// watcher prints each X509Context as `api fetch x509` would.
type watcher struct {
	e    *env
	last time.Time
	json bool
}

func (w *watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	if w.json {
		_ = w.e.printJSON(x509ContextProto(x))
	} else {
		w.e.printX509Context(x, time.Since(w.last))
	}
	w.last = time.Now()
}

func (w *watcher) OnX509ContextWatchError(err error) {
	if status.Code(err) != codes.Canceled {
		fmt.Fprintln(w.e.stderr, err)
	}
}

func (e *env) watch(args []string) error {
	var c common
	fs := e.flagSet("watch", &c, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	cl, err := e.client(&c)
	if err != nil {
		return err
	}
	defer cl.Close()
	err = cl.WatchX509Context(e.ctx, &watcher{e: e, last: time.Now(), json: c.output == "json"})
	if e.ctx.Err() != nil {
		// Interrupted: the normal way to stop watching.
		return nil
	}
	return err
}
