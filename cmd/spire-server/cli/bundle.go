package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

const (
	formatPEM    = "pem"
	formatSPIFFE = "spiffe"

	// bundleHeaderFmt precedes each bundle in "bundle list".
	bundleHeaderFmt = "****************************************\n* %s\n****************************************\n"

	// maxBundleDataSize bounds what "bundle set" reads, from -path or
	// stdin.
	maxBundleDataSize = 16 << 20
)

// validateFormat normalizes -format; empty means PEM.
func validateFormat(format string) (string, error) {
	if format == "" {
		return formatPEM, nil
	}
	format = strings.ToLower(format)
	switch format {
	case formatPEM, formatSPIFFE:
		return format, nil
	}
	return "", fmt.Errorf("invalid format: %q", format)
}

// bundleCountCommand is "bundle count": the server's own bundle and every
// federated one.
type bundleCountCommand struct {
	out outputFormat
}

func (*bundleCountCommand) synopsis() string { return "Count bundles" }

func (c *bundleCountCommand) appendFlags(fs *flag.FlagSet) { addOutputFlag(fs, &c.out) }

func (c *bundleCountCommand) run(ctx context.Context, e *env, cl *clients) error {
	resp, err := cl.bundle().CountBundles(ctx, &bundlev1.CountBundlesRequest{})
	if err != nil {
		return err
	}
	return printBundleCount(e, c.out, resp)
}

func printBundleCount(e *env, out outputFormat, resp *bundlev1.CountBundlesResponse) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	n := int(resp.Count)
	e.printf("%d %s\n", n, pluralize(n, "bundle", "bundles"))
	return nil
}

// bundleShowCommand is "bundle show": the server's own trust bundle.
type bundleShowCommand struct {
	format string
	out    outputFormat
}

func (*bundleShowCommand) synopsis() string { return "Prints server CA bundle to stdout" }

func (c *bundleShowCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.format, "format", formatPEM, "The format to show the bundle (only pretty output format supports this flag). Either \"pem\" or \"spiffe\".")
	addOutputFlag(fs, &c.out)
}

func (c *bundleShowCommand) run(ctx context.Context, e *env, cl *clients) error {
	format, err := validateFormat(c.format)
	if err != nil {
		return err
	}
	b, err := cl.bundle().GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return err
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, b)
	}
	return printBundleWithFormat(e.stdout, b, format, false)
}

// printBundleWithFormat writes a bundle as PEM certificates (X.509
// authorities only) or as a SPIFFE bundle document (JWKS) with both X.509
// and JWT authorities.
func printBundleWithFormat(w io.Writer, b *types.Bundle, format string, header bool) error {
	if b == nil {
		return errors.New("no bundle provided")
	}
	format, err := validateFormat(format)
	if err != nil {
		return err
	}
	if header {
		fmt.Fprintf(w, bundleHeaderFmt, b.TrustDomain)
	}
	if format == formatPEM {
		for i, a := range b.X509Authorities {
			if _, err := x509.ParseCertificate(a.GetAsn1()); err != nil {
				return fmt.Errorf("unable to parse X.509 authority %d: %w", i, err)
			}
			if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: a.GetAsn1()}); err != nil {
				return err
			}
		}
		return nil
	}
	sb, err := spiffeBundleFromProto(b)
	if err != nil {
		return err
	}
	doc, err := sb.Marshal()
	if err != nil {
		return fmt.Errorf("unable to marshal SPIFFE bundle: %w", err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, doc, "", "    "); err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, indented.String())
	return err
}

// spiffeBundleFromProto converts an API bundle to go-spiffe's bundle so that
// go-spiffe produces the SPIFFE bundle document.
func spiffeBundleFromProto(b *types.Bundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("invalid bundle trust domain %q: %w", b.TrustDomain, err)
	}
	var certs []*x509.Certificate
	for i, a := range b.X509Authorities {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("unable to parse X.509 authority %d: %w", i, err)
		}
		certs = append(certs, cert)
	}
	keys := make(map[string]crypto.PublicKey, len(b.JwtAuthorities))
	for i, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("unable to parse JWT authority %d: %w", i, err)
		}
		keys[k.GetKeyId()] = pub
	}
	sb := spiffebundle.New(td)
	sb.SetX509Authorities(certs)
	sb.SetJWTAuthorities(keys)
	if b.RefreshHint > 0 {
		sb.SetRefreshHint(time.Duration(b.RefreshHint) * time.Second)
	}
	if b.SequenceNumber > 0 {
		sb.SetSequenceNumber(b.SequenceNumber)
	}
	return sb, nil
}

// parseBundleData reads bundle data given to "bundle set" into an API
// bundle for trust domain td.
func parseBundleData(data []byte, format string, td spiffeid.TrustDomain) (*types.Bundle, error) {
	format, err := validateFormat(format)
	if err != nil {
		return nil, err
	}
	b := &types.Bundle{TrustDomain: td.Name()}
	if format == formatPEM {
		rest := data
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("unable to parse bundle data: %w", err)
			}
			b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: cert.Raw})
		}
		if len(b.X509Authorities) == 0 {
			return nil, errors.New("unable to parse bundle data: no PEM certificates found")
		}
		return b, nil
	}
	sb, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("unable to parse to spiffe bundle: %w", err)
	}
	for _, cert := range sb.X509Authorities() {
		b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: cert.Raw})
	}
	for kid, key := range sb.JWTAuthorities() {
		der, err := x509.MarshalPKIXPublicKey(key)
		if err != nil {
			return nil, fmt.Errorf("unable to marshal JWT authority %q: %w", kid, err)
		}
		b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{PublicKey: der, KeyId: kid})
	}
	if r, ok := sb.RefreshHint(); ok {
		b.RefreshHint = int64(r / time.Second)
	}
	if s, ok := sb.SequenceNumber(); ok {
		b.SequenceNumber = s
	}
	return b, nil
}

// bundleListCommand is "bundle list": federated bundles.
type bundleListCommand struct {
	id     string
	format string
	out    outputFormat
}

func (*bundleListCommand) synopsis() string { return "Lists federated bundle data" }

func (c *bundleListCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.id, "id", "", "SPIFFE ID of the trust domain")
	fs.StringVar(&c.format, "format", formatPEM, "The format to list federated bundles (only pretty output format supports this flag). Either \"pem\" or \"spiffe\".")
	addOutputFlag(fs, &c.out)
}

func (c *bundleListCommand) run(ctx context.Context, e *env, cl *clients) error {
	format, err := validateFormat(c.format)
	if err != nil {
		return err
	}
	client := cl.bundle()
	if c.id != "" {
		td, err := spiffeid.TrustDomainFromString(c.id)
		if err != nil {
			return fmt.Errorf("invalid -id %q: %w", c.id, err)
		}
		b, err := client.GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
		if err != nil {
			return err
		}
		if c.out == outputJSON {
			return printProtoJSON(e.stdout, b)
		}
		return printBundleWithFormat(e.stdout, b, format, false)
	}
	all := &bundlev1.ListFederatedBundlesResponse{}
	req := &bundlev1.ListFederatedBundlesRequest{}
	seen := map[string]bool{}
	for {
		resp, err := client.ListFederatedBundles(ctx, req)
		if err != nil {
			return err
		}
		all.Bundles = append(all.Bundles, resp.Bundles...)
		next := resp.NextPageToken
		if next == "" {
			break
		}
		if seen[next] {
			return fmt.Errorf("server repeated page token %q", next)
		}
		seen[next] = true
		req.PageToken = next
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, all)
	}
	for i, b := range all.Bundles {
		if i != 0 {
			fmt.Fprintln(e.stdout)
		}
		if err := printBundleWithFormat(e.stdout, b, format, true); err != nil {
			return err
		}
	}
	return nil
}

// bundleSetCommand is "bundle set": creates or replaces a federated bundle.
type bundleSetCommand struct {
	id     string
	path   string
	format string
	out    outputFormat
}

func (*bundleSetCommand) synopsis() string { return "Creates or updates federated bundle data" }

func (c *bundleSetCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.id, "id", "", "SPIFFE ID of the trust domain")
	fs.StringVar(&c.path, "path", "", "Path to the bundle data")
	fs.StringVar(&c.format, "format", formatPEM, "The format of the bundle data. Either \"pem\" or \"spiffe\".")
	addOutputFlag(fs, &c.out)
}

func (c *bundleSetCommand) buildRequest(stdin io.Reader) (*bundlev1.BatchSetFederatedBundleRequest, error) {
	if c.id == "" {
		return nil, errors.New("id is required (set -id)")
	}
	td, err := spiffeid.TrustDomainFromString(c.id)
	if err != nil {
		return nil, fmt.Errorf("invalid -id %q: %w", c.id, err)
	}
	var data []byte
	if c.path != "" {
		data, err = readFileLimited(c.path, maxBundleDataSize)
	} else {
		data, err = readLimited(stdin, "stdin", maxBundleDataSize)
	}
	if err != nil {
		return nil, fmt.Errorf("unable to load bundle data: %w", err)
	}
	b, err := parseBundleData(data, c.format, td)
	if err != nil {
		return nil, err
	}
	return &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{b}}, nil
}

func (c *bundleSetCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest(e.stdin)
	if err != nil {
		return err
	}
	resp, err := cl.bundle().BatchSetFederatedBundle(ctx, req)
	if err != nil {
		return err
	}
	if c.out == outputJSON {
		if err := printProtoJSON(e.stdout, resp); err != nil {
			return err
		}
	}
	for _, r := range resp.Results {
		if st := r.GetStatus(); st.GetCode() != int32(codes.OK) {
			return fmt.Errorf("failed to set federated bundle (code: %s, msg: %q)", codes.Code(st.GetCode()), st.GetMessage())
		}
	}
	if c.out == outputPretty {
		e.printf("bundle set.\n")
	}
	return nil
}

// bundleDeleteCommand is "bundle delete".
type bundleDeleteCommand struct {
	id   string
	mode string
	out  outputFormat
}

func (*bundleDeleteCommand) synopsis() string { return "Deletes federated bundle data" }

func (c *bundleDeleteCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.id, "id", "", "SPIFFE ID of the trust domain")
	fs.StringVar(&c.mode, "mode", "restrict", "Deletion mode: one of restrict, delete, or dissociate")
	addOutputFlag(fs, &c.out)
}

func (c *bundleDeleteCommand) buildRequest() (*bundlev1.BatchDeleteFederatedBundleRequest, error) {
	if c.id == "" {
		return nil, errors.New("id is required (set -id)")
	}
	td, err := spiffeid.TrustDomainFromString(c.id)
	if err != nil {
		return nil, fmt.Errorf("invalid -id %q: %w", c.id, err)
	}
	var mode bundlev1.BatchDeleteFederatedBundleRequest_Mode
	switch c.mode {
	case "restrict", "":
		mode = bundlev1.BatchDeleteFederatedBundleRequest_RESTRICT
	case "delete":
		mode = bundlev1.BatchDeleteFederatedBundleRequest_DELETE
	case "dissociate":
		mode = bundlev1.BatchDeleteFederatedBundleRequest_DISSOCIATE
	default:
		return nil, fmt.Errorf("unsupported mode %q; use restrict, delete or dissociate", c.mode)
	}
	return &bundlev1.BatchDeleteFederatedBundleRequest{TrustDomains: []string{td.Name()}, Mode: mode}, nil
}

func (c *bundleDeleteCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.bundle().BatchDeleteFederatedBundle(ctx, req)
	if err != nil {
		return err
	}
	if c.out == outputJSON {
		if err := printProtoJSON(e.stdout, resp); err != nil {
			return err
		}
	}
	for _, r := range resp.Results {
		if st := r.GetStatus(); st.GetCode() != int32(codes.OK) {
			return fmt.Errorf("failed to delete federated bundle %q (code: %s, msg: %q)", r.TrustDomain, codes.Code(st.GetCode()), st.GetMessage())
		}
	}
	if c.out == outputPretty {
		e.printf("bundle deleted.\n")
	}
	return nil
}
