package external

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
)

// The conversions below are SPIRE's: nil slices stay nil both ways (a
// plugin that drops every DNS SAN drops them), a subject is required in
// answers, and only string attribute values cross the wire.

func x509CAAttributesToV1(a credentialcomposer.X509CAAttributes) (*credentialcomposerv1.X509CAAttributes, error) {
	subject, err := subjectToV1(a.Subject)
	if err != nil {
		return nil, err
	}
	var policies []string
	if a.Policies != nil {
		policies = make([]string, 0, len(a.Policies))
		for _, p := range a.Policies {
			policies = append(policies, p.String())
		}
	}
	return &credentialcomposerv1.X509CAAttributes{
		Subject:           subject,
		PolicyIdentifiers: policies,
		ExtraExtensions:   extensionsToV1(a.ExtraExtensions),
	}, nil
}

func x509CAAttributesFromV1(pb *credentialcomposerv1.X509CAAttributes) (credentialcomposer.X509CAAttributes, error) {
	var a credentialcomposer.X509CAAttributes
	var err error
	if a.Subject, err = subjectFromV1(pb.GetSubject()); err != nil {
		return a, fmt.Errorf("subject: %w", err)
	}
	if ids := pb.GetPolicyIdentifiers(); ids != nil {
		a.Policies = make([]x509.OID, 0, len(ids))
		for _, s := range ids {
			oid, err := x509.ParseOID(s)
			if err != nil {
				return a, fmt.Errorf("policy identifiers: %w", err)
			}
			a.Policies = append(a.Policies, oid)
		}
	}
	if a.ExtraExtensions, err = extensionsFromV1(pb.GetExtraExtensions()); err != nil {
		return a, fmt.Errorf("extra extensions: %w", err)
	}
	return a, nil
}

func x509SVIDAttributesToV1(a credentialcomposer.X509SVIDAttributes) (*credentialcomposerv1.X509SVIDAttributes, error) {
	subject, err := subjectToV1(a.Subject)
	if err != nil {
		return nil, err
	}
	return &credentialcomposerv1.X509SVIDAttributes{
		Subject:         subject,
		DnsSans:         a.DNSNames,
		ExtraExtensions: extensionsToV1(a.ExtraExtensions),
	}, nil
}

func x509SVIDAttributesFromV1(pb *credentialcomposerv1.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	var a credentialcomposer.X509SVIDAttributes
	var err error
	if a.Subject, err = subjectFromV1(pb.GetSubject()); err != nil {
		return a, fmt.Errorf("subject: %w", err)
	}
	a.DNSNames = pb.GetDnsSans()
	if a.ExtraExtensions, err = extensionsFromV1(pb.GetExtraExtensions()); err != nil {
		return a, fmt.Errorf("extra extensions: %w", err)
	}
	return a, nil
}

// claimsToV1 goes through JSON because structpb cannot take Go values such
// as int64 or []string directly, and JSON is what the claims become anyway.
func claimsToV1(claims map[string]any) (*structpb.Struct, error) {
	if len(claims) == 0 {
		return nil, errors.New("invalid claims: cannot be empty")
	}
	js, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("failed to marshal claims: %w", err)
	}
	out := &structpb.Struct{}
	if err := out.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("failed to encode claims: %w", err)
	}
	return out, nil
}

func subjectToV1(n pkix.Name) (*credentialcomposerv1.DistinguishedName, error) {
	var extra []*credentialcomposerv1.AttributeTypeAndValue
	if n.ExtraNames != nil {
		extra = make([]*credentialcomposerv1.AttributeTypeAndValue, 0, len(n.ExtraNames))
		for _, atv := range n.ExtraNames {
			v, ok := atv.Value.(string)
			if !ok {
				return nil, errors.New("only string values are allowed in extra name attributes")
			}
			extra = append(extra, &credentialcomposerv1.AttributeTypeAndValue{Oid: atv.Type.String(), StringValue: v})
		}
	}
	return &credentialcomposerv1.DistinguishedName{
		Country:            n.Country,
		Organization:       n.Organization,
		OrganizationalUnit: n.OrganizationalUnit,
		Locality:           n.Locality,
		Province:           n.Province,
		StreetAddress:      n.StreetAddress,
		PostalCode:         n.PostalCode,
		SerialNumber:       n.SerialNumber,
		CommonName:         n.CommonName,
		ExtraNames:         extra,
	}, nil
}

func subjectFromV1(pb *credentialcomposerv1.DistinguishedName) (pkix.Name, error) {
	if pb == nil {
		return pkix.Name{}, errors.New("cannot be empty")
	}
	var extra []pkix.AttributeTypeAndValue
	if pb.ExtraNames != nil {
		extra = make([]pkix.AttributeTypeAndValue, 0, len(pb.ExtraNames))
		for _, atv := range pb.ExtraNames {
			oid, err := parseOID(atv.GetOid())
			if err != nil {
				return pkix.Name{}, fmt.Errorf("extra names: %w", err)
			}
			extra = append(extra, pkix.AttributeTypeAndValue{Type: oid, Value: atv.GetStringValue()})
		}
	}
	return pkix.Name{
		Country:            pb.Country,
		Organization:       pb.Organization,
		OrganizationalUnit: pb.OrganizationalUnit,
		Locality:           pb.Locality,
		Province:           pb.Province,
		StreetAddress:      pb.StreetAddress,
		PostalCode:         pb.PostalCode,
		SerialNumber:       pb.SerialNumber,
		CommonName:         pb.CommonName,
		ExtraNames:         extra,
	}, nil
}

func extensionsToV1(exts []pkix.Extension) []*credentialcomposerv1.X509Extension {
	if exts == nil {
		return nil
	}
	out := make([]*credentialcomposerv1.X509Extension, 0, len(exts))
	for _, e := range exts {
		out = append(out, &credentialcomposerv1.X509Extension{Oid: e.Id.String(), Value: e.Value, Critical: e.Critical})
	}
	return out
}

func extensionsFromV1(pbs []*credentialcomposerv1.X509Extension) ([]pkix.Extension, error) {
	if pbs == nil {
		return nil, nil
	}
	out := make([]pkix.Extension, 0, len(pbs))
	for _, pb := range pbs {
		oid, err := parseOID(pb.GetOid())
		if err != nil {
			return nil, err
		}
		out = append(out, pkix.Extension{Id: oid, Value: pb.GetValue(), Critical: pb.GetCritical()})
	}
	return out, nil
}

// parseOID reads a dotted OID. Beyond SPIRE's check that every arc is an
// integer, it refuses what asn1 could not encode later (a negative arc,
// fewer than two arcs), so the plugin is named as the culprit rather than
// the certificate encoder failing with no context.
func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, fmt.Errorf("invalid OID: non-integer part %q", part)
		}
		if n < 0 {
			return nil, fmt.Errorf("invalid OID: negative part %q", part)
		}
		oid[i] = n
	}
	if len(oid) < 2 || oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return nil, fmt.Errorf("invalid OID: %q is not an encodable object identifier", s)
	}
	return oid, nil
}
