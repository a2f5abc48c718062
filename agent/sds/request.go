package sds

import (
	"fmt"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Caps on one request. SPIRE has none; they bound what a stream keeps of
// the request it last accepted, whatever the size of the message. An Envoy
// asks for one secret per SDS subscription, so 64 names leave room for
// clients that batch.
const (
	maxResourceNames = 64
	// maxNameLength is the longest SPIFFE ID (2048 bytes); trust domain
	// IDs and configured names are shorter.
	maxNameLength = 2048
	// maxTypeURLLength is generous for the Secret type URL (61 bytes),
	// which is echoed in every response.
	maxTypeURLLength = 256
)

// disableSPIFFECertValidationKey is the Envoy node metadata key that
// overrides Settings.DisableSPIFFECertValidation for that Envoy, as in
// SPIRE.
const disableSPIFFECertValidationKey = "disable_spiffe_cert_validation"

// query is what answering a request needs: its names and type URL, and
// what its node says about the validator to use.
type query struct {
	typeURL string
	names   []string
	node    nodeInfo
}

// nodeInfo is what SDS reads of an Envoy's node description.
type nodeInfo struct {
	// sent is whether the request carried a node at all.
	sent bool
	// noSPIFFEValidator is set for Envoy 1.17 and older (by the build
	// version the node reports), which lack the SPIFFE validator.
	noSPIFFEValidator bool
	// disable is the node's disable_spiffe_cert_validation, when it holds
	// a boolean (or a string strconv.ParseBool reads); nil otherwise.
	disable *bool
}

// checkRequest refuses a request over the caps with InvalidArgument.
func checkRequest(req *discoveryv3.DiscoveryRequest) error {
	if n := len(req.GetResourceNames()); n > maxResourceNames {
		return status.Errorf(codes.InvalidArgument, "too many resource names: %d (at most %d per request)", n, maxResourceNames)
	}
	for _, name := range req.GetResourceNames() {
		if len(name) > maxNameLength {
			return status.Errorf(codes.InvalidArgument, "resource name of %d bytes (at most %d)", len(name), maxNameLength)
		}
	}
	if n := len(req.GetTypeUrl()); n > maxTypeURLLength {
		return status.Errorf(codes.InvalidArgument, "type URL of %d bytes (at most %d)", n, maxTypeURLLength)
	}
	return nil
}

// newQuery keeps of req what answering it needs; req must have passed
// checkRequest. The names are copied so that the request can be dropped.
func newQuery(req *discoveryv3.DiscoveryRequest) query {
	return query{
		typeURL: req.GetTypeUrl(),
		names:   append([]string(nil), req.GetResourceNames()...),
		node:    readNode(req.GetNode()),
	}
}

func readNode(n *corev3.Node) nodeInfo {
	if n == nil {
		return nodeInfo{}
	}
	info := nodeInfo{sent: true}
	// As SPIRE: a node without a build version is taken to be recent.
	if bv := n.GetUserAgentBuildVersion(); bv != nil {
		v := bv.GetVersion()
		major, minor := v.GetMajorNumber(), v.GetMinorNumber()
		info.noSPIFFEValidator = !((major == 1 && minor > 17) || major > 1)
	}
	if v, ok := n.GetMetadata().GetFields()[disableSPIFFECertValidationKey]; ok {
		// A value of another type, or a string that is no boolean, is
		// as if the key were absent (SPIRE's choice: safer than guessing).
		if b, err := parseBool(v); err == nil {
			info.disable = &b
		}
	}
	return info
}

func parseBool(v *structpb.Value) (bool, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_BoolValue:
		return k.BoolValue, nil
	case *structpb.Value_StringValue:
		return strconv.ParseBool(k.StringValue)
	}
	return false, fmt.Errorf("unsupported value type %T", v.GetKind())
}

// spiffeValidator says whether validation contexts go out as Envoy's
// SPIFFE validator config (rather than plain trusted CAs) for this node.
func (n nodeInfo) spiffeValidator(s Settings) bool {
	disabled := s.DisableSPIFFECertValidation
	if n.disable != nil {
		disabled = *n.disable
	}
	return !disabled && !n.noSPIFFEValidator
}

// namesChanged says whether a request asks for other names than the last
// one: another count, or a name the last did not have.
func namesChanged(old, cur []string) bool {
	if len(old) != len(cur) {
		return true
	}
	had := make(map[string]bool, len(old))
	for _, n := range old {
		had[n] = true
	}
	for _, n := range cur {
		if !had[n] {
			return true
		}
	}
	return false
}
