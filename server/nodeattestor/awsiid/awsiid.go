// Package awsiid verifies aws_iid node attestation: an EC2 instance
// identity document with its RSA-2048 PKCS#7 signature. The signature is
// checked against the certificate of the region the document names
// (AWS's published certificates are built in, any region can be
// overridden), and the signed content must equal the document byte for
// byte, so no field can be edited. The EC2 and IAM APIs then supply the
// instance's tags, security groups and IAM roles as selectors, and let the
// attestor refuse an instance whose root volume was swapped after launch.
//
// An identity document can be read by any process on the instance and
// stays the same for its life, so it is accepted once: a second
// attestation is refused until the agent is evicted.
package awsiid

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/digitorus/pkcs7"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/agentpath"
)

// PluginName is the attestation type, the plugin name and the selector
// type.
const PluginName = "aws_iid"

// DefaultAgentPathTemplate is SPIRE's default agent ID path.
const DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"

// DefaultIAMEndpoint is the global IAM query API.
const DefaultIAMEndpoint = "https://iam.amazonaws.com/"

// MaxPayloadSize bounds the attestation payload; a real one is about 3 KiB.
const MaxPayloadSize = 64 << 10

// PluginData is the plugin_data block of server NodeAttestor "aws_iid".
// Key names follow SPIRE; region_certificates, ec2_endpoint and
// iam_endpoint are ours, so tests and simulators can stand in for AWS.
type PluginData struct {
	AccessKeyID                     string   `hcl:"access_key_id"`
	SecretAccessKey                 string   `hcl:"secret_access_key"`
	SkipBlockDevice                 bool     `hcl:"skip_block_device"`
	DisableInstanceProfileSelectors bool     `hcl:"disable_instance_profile_selectors"`
	LocalValidAcctIDs               []string `hcl:"account_ids_for_local_validation"`
	AgentPathTemplate               string   `hcl:"agent_path_template"`
	// RegionCertificates maps a region to a PEM certificate file that
	// replaces (or adds to) the built-in certificate of that region.
	RegionCertificates map[string]string `hcl:"region_certificates"`
	EC2Endpoint        string            `hcl:"ec2_endpoint"`
	IAMEndpoint        string            `hcl:"iam_endpoint"`
}

// NodeLookup is the part of the datastore the first-use rule needs.
type NodeLookup = nodeattestor.NodeLookup

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// RegionCerts are the trusted signing certificates by region.
	RegionCerts map[string]*x509.Certificate
	Credentials Credentials
	// EC2Endpoint, when set, replaces https://ec2.<region>.amazonaws.com/
	// for every region.
	EC2Endpoint string
	// IAMEndpoint defaults to DefaultIAMEndpoint.
	IAMEndpoint                     string
	SkipBlockDevice                 bool
	DisableInstanceProfileSelectors bool
	// LocalValidAccountIDs skip the block-device check, as in SPIRE.
	LocalValidAccountIDs []string
	// AgentPathTemplate defaults to DefaultAgentPathTemplate.
	AgentPathTemplate string
	// Nodes enforces first use; it is required.
	Nodes      NodeLookup
	HTTPClient *http.Client
	Now        func() time.Time
}

// Attestor verifies aws_iid attestation.
type Attestor struct {
	cfg  Config
	tmpl *template.Template
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("awsiid: trust domain is required")
	}
	if cfg.Nodes == nil {
		return nil, errors.New("awsiid: a node lookup is required for the first-use rule")
	}
	if len(cfg.RegionCerts) == 0 {
		return nil, errors.New("awsiid: no region certificates")
	}
	if cfg.Credentials.AccessKeyID == "" || cfg.Credentials.SecretAccessKey == "" {
		return nil, errors.New("awsiid: access_key_id and secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) are required to call DescribeInstances")
	}
	if cfg.AgentPathTemplate == "" {
		cfg.AgentPathTemplate = DefaultAgentPathTemplate
	}
	// The shared parser, so that SPIRE's template functions work here too.
	tmpl, err := agentpath.Parse("awsiid", cfg.AgentPathTemplate)
	if err != nil {
		return nil, err
	}
	if cfg.IAMEndpoint == "" {
		cfg.IAMEndpoint = DefaultIAMEndpoint
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Attestor{cfg: cfg, tmpl: tmpl}, nil
}

// NewFromPluginData builds an Attestor from its plugin_data. Credentials
// default to the AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN environment variables.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData, nodes NodeLookup) (*Attestor, error) {
	certs, err := BuiltinRegionCertificates()
	if err != nil {
		return nil, err
	}
	for region, path := range d.RegionCertificates {
		c, err := LoadCertificate(path)
		if err != nil {
			return nil, fmt.Errorf("awsiid: region_certificates[%q]: %w", region, err)
		}
		certs[region] = c
	}
	creds := Credentials{AccessKeyID: d.AccessKeyID, SecretAccessKey: d.SecretAccessKey}
	if creds.AccessKeyID == "" && creds.SecretAccessKey == "" {
		creds = Credentials{AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
	}
	return New(Config{
		TrustDomain: td, RegionCerts: certs, Credentials: creds,
		EC2Endpoint: d.EC2Endpoint, IAMEndpoint: d.IAMEndpoint,
		SkipBlockDevice: d.SkipBlockDevice, DisableInstanceProfileSelectors: d.DisableInstanceProfileSelectors,
		LocalValidAccountIDs: d.LocalValidAcctIDs, AgentPathTemplate: d.AgentPathTemplate, Nodes: nodes,
	})
}

// Type implements nodeattestor.Attestor.
func (a *Attestor) Type() string { return PluginName }

// payload is the agent's attestation data (SPIRE's JSON shape).
type payload struct {
	Document         string `json:"document"`
	Signature        string `json:"signature"`
	SignatureRSA2048 string `json:"rsa2048"`
}

// Document is the part of an instance identity document the attestor
// uses.
type Document struct {
	AccountID        string `json:"accountId"`
	AvailabilityZone string `json:"availabilityZone"`
	ImageID          string `json:"imageId"`
	InstanceID       string `json:"instanceId"`
	Region           string `json:"region"`
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "awsiid: "+format, args...)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "awsiid: "+format, args...)
}

// VerifyPayload checks the signature of the document in an attestation
// payload and returns the document. It does no network I/O.
func (a *Attestor) VerifyPayload(b []byte) (*Document, error) {
	if len(b) > MaxPayloadSize {
		return nil, invalid("payload of %d bytes exceeds %d", len(b), MaxPayloadSize)
	}
	var p payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, invalid("malformed payload: %v", err)
	}
	if p.SignatureRSA2048 == "" {
		return nil, invalid("payload has no RSA-2048 signature (rsa2048)")
	}
	var doc Document
	if err := json.Unmarshal([]byte(p.Document), &doc); err != nil {
		return nil, invalid("malformed identity document: %v", err)
	}
	for name, v := range map[string]string{"accountId": doc.AccountID, "region": doc.Region, "instanceId": doc.InstanceID, "availabilityZone": doc.AvailabilityZone, "imageId": doc.ImageID} {
		if v == "" {
			return nil, invalid("identity document has no %s", name)
		}
	}
	cert, ok := a.cfg.RegionCerts[doc.Region]
	if !ok {
		return nil, deny("no certificate for region %q", doc.Region)
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(p.SignatureRSA2048), ""))
	if err != nil {
		return nil, invalid("malformed signature: %v", err)
	}
	p7, err := parsePKCS7(der)
	if err != nil {
		return nil, invalid("malformed signature: %v", err)
	}
	// The region's certificate is the only one trusted to have signed,
	// whatever certificates the message carries.
	p7.Certificates = []*x509.Certificate{cert}
	if err := p7.Verify(); err != nil {
		return nil, deny("signature does not verify with the %s certificate: %v", doc.Region, err)
	}
	if !bytes.Equal(p7.Content, []byte(p.Document)) {
		return nil, deny("the signed content is not the identity document")
	}
	return &doc, nil
}

// parsePKCS7 turns the library's panics on hostile DER into errors.
func parsePKCS7(der []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		if r := recover(); r != nil {
			p7, err = nil, fmt.Errorf("pkcs7: %v", r)
		}
	}()
	return pkcs7.Parse(der)
}

// Attest implements nodeattestor.Attestor.
func (a *Attestor) Attest(ctx context.Context, b []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	doc, err := a.VerifyPayload(b)
	if err != nil {
		return nil, err
	}
	inst, err := a.describeInstance(ctx, doc.Region, doc.InstanceID)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "awsiid: %v", err)
	}
	if !a.cfg.SkipBlockDevice && !slices.Contains(a.cfg.LocalValidAccountIDs, doc.AccountID) {
		if err := checkBlockDevice(inst); err != nil {
			return nil, deny("block device check: %v", err)
		}
	}
	tags := map[string]string{}
	for _, t := range inst.Tags {
		tags[t.Key] = t.Value
	}
	id, err := a.agentID(doc, tags)
	if err != nil {
		return nil, err
	}
	if err := nodeattestor.CheckFirstUse(ctx, a.cfg.Nodes, id, "awsiid", "identity document"); err != nil {
		return nil, err
	}
	values := []string{
		"account_id:" + doc.AccountID,
		"az:" + doc.AvailabilityZone,
		"image:id:" + doc.ImageID,
		"instance:id:" + doc.InstanceID,
		"region:" + doc.Region,
	}
	for k, v := range tags {
		values = append(values, "tag:"+k+":"+v)
	}
	for _, g := range inst.Groups {
		values = append(values, "sg:id:"+g.ID, "sg:name:"+g.Name)
	}
	if !a.cfg.DisableInstanceProfileSelectors && inst.ProfileARN != "" {
		roles, err := a.instanceProfileRoles(ctx, inst.ProfileARN)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "awsiid: %v", err)
		}
		for _, r := range roles {
			values = append(values, "iamrole:"+r)
		}
	}
	slices.Sort(values)
	values = slices.Compact(values)
	sels := make([]*types.Selector, len(values))
	for i, v := range values {
		sels[i] = &types.Selector{Type: PluginName, Value: v}
	}
	return &nodeattestor.Result{AgentID: id, Selectors: sels}, nil
}

// agentID renders the agent path template under /spire/agent.
func (a *Attestor) agentID(doc *Document, tags map[string]string) (spiffeid.ID, error) {
	var buf bytes.Buffer
	err := a.tmpl.Execute(&buf, map[string]any{
		"PluginName": PluginName, "TrustDomain": a.cfg.TrustDomain.Name(),
		"AccountID": doc.AccountID, "Region": doc.Region, "InstanceID": doc.InstanceID, "Tags": tags,
	})
	if err != nil {
		return spiffeid.ID{}, deny("agent_path_template: %v", err)
	}
	if !strings.HasPrefix(buf.String(), "/") {
		return spiffeid.ID{}, deny("agent path %q does not start with /", buf.String())
	}
	id, err := spiffeid.FromPath(a.cfg.TrustDomain, "/spire/agent"+buf.String())
	if err != nil {
		return spiffeid.ID{}, deny("agent path %q: %v", buf.String(), err)
	}
	return id, nil
}
