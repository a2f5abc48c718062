package config

import "github.com/spiffe-hw/spire-hw/config/hclconf"

// SDS is the agent block's sds block, SPIRE's: the resource names under
// which Envoy asks the Workload API socket for secrets, and whether
// validation contexts use Envoy's SPIFFE validator. Its fields are
// agent/sds.Settings', in the same order.
type SDS struct {
	// DefaultSVIDName is default_svid_name: the caller's first
	// X.509-SVID ("default").
	DefaultSVIDName string
	// DefaultBundleName is default_bundle_name: the agent's own trust
	// domain bundle ("ROOTCA").
	DefaultBundleName string
	// DefaultAllBundlesName is default_all_bundles_name: every trust
	// domain the caller may trust, as one SPIFFE validator config ("ALL").
	DefaultAllBundlesName string
	// DisableSPIFFECertValidation is disable_spiffe_cert_validation:
	// plain trusted CAs instead of the SPIFFE validator (an Envoy's node
	// metadata may override it).
	DisableSPIFFECertValidation bool
}

// SPIRE's defaults of the sds block.
const (
	DefaultSDSSVIDName       = "default"
	DefaultSDSBundleName     = "ROOTCA"
	DefaultSDSAllBundlesName = "ALL"
)

func defaultSDS() SDS {
	return SDS{DefaultSVIDName: DefaultSDSSVIDName, DefaultBundleName: DefaultSDSBundleName, DefaultAllBundlesName: DefaultSDSAllBundlesName}
}

// parse reads the sds block. An empty name keeps the default, as SPIRE's
// merge of defaults does.
func (c *SDS) parse(b *hclconf.Section) {
	for _, n := range []struct {
		key string
		dst *string
	}{
		{"default_svid_name", &c.DefaultSVIDName},
		{"default_bundle_name", &c.DefaultBundleName},
		{"default_all_bundles_name", &c.DefaultAllBundlesName},
	} {
		var v string
		if b.String(n.key, &v) && v != "" {
			*n.dst = v
		}
	}
	b.Bool("disable_spiffe_cert_validation", &c.DisableSPIFFECertValidation)
	if c.DefaultAllBundlesName == c.DefaultBundleName {
		// SPIRE's warning: the bundle name is matched first, so the
		// all-bundles name can never be asked for.
		b.Diagnostics().Warnf(b.LineOf("default_all_bundles_name"), b.Key("default_all_bundles_name"),
			`the "default_bundle_name" and "default_all_bundles_name" configurables have the same value (%q). "default_all_bundles_name" will be ignored. Please configure distinct values or use the defaults. This will be a configuration error in a future release.`,
			c.DefaultBundleName)
	}
	b.Finish()
}
