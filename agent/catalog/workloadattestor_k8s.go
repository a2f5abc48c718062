package catalog

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/k8s"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// newK8s builds the "k8s" workload attestor from SPIRE's plugin_data keys
// (v1.13.3's HCLConfig); a key it does not know is an error.
func newK8s(_ context.Context, p hclconf.Plugin, deps Deps) (workloadapi.Attestor, error) {
	var data struct {
		KubeletReadOnlyPort         int                   `hcl:"kubelet_read_only_port"`
		KubeletSecurePort           int                   `hcl:"kubelet_secure_port"`
		MaxPollAttempts             int                   `hcl:"max_poll_attempts"`
		PollRetryInterval           string                `hcl:"poll_retry_interval"`
		KubeletCAPath               string                `hcl:"kubelet_ca_path"`
		SkipKubeletVerification     bool                  `hcl:"skip_kubelet_verification"`
		TokenPath                   string                `hcl:"token_path"`
		CertificatePath             string                `hcl:"certificate_path"`
		PrivateKeyPath              string                `hcl:"private_key_path"`
		UseAnonymousAuthentication  bool                  `hcl:"use_anonymous_authentication"`
		NodeNameEnv                 string                `hcl:"node_name_env"`
		NodeName                    string                `hcl:"node_name"`
		ReloadInterval              string                `hcl:"reload_interval"`
		DisableContainerSelectors   bool                  `hcl:"disable_container_selectors"`
		UseNewContainerLocator      *bool                 `hcl:"use_new_container_locator"`
		VerboseContainerLocatorLogs bool                  `hcl:"verbose_container_locator_logs"`
		Experimental                containerExperimental `hcl:"experimental"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	// SPIRE takes a zero or negative duration as "use the default"; a
	// value that does not parse is an error.
	duration := func(key, v string) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		return p.ParseDuration(key, v)
	}
	poll, err := duration("poll_retry_interval", data.PollRetryInterval)
	if err != nil {
		return nil, err
	}
	reload, err := duration("reload_interval", data.ReloadInterval)
	if err != nil {
		return nil, err
	}
	a, err := k8s.New(k8s.Config{
		KubeletReadOnlyPort:         data.KubeletReadOnlyPort,
		KubeletSecurePort:           data.KubeletSecurePort,
		SkipKubeletVerification:     data.SkipKubeletVerification,
		KubeletCAPath:               data.KubeletCAPath,
		TokenPath:                   data.TokenPath,
		CertificatePath:             data.CertificatePath,
		PrivateKeyPath:              data.PrivateKeyPath,
		UseAnonymousAuthentication:  data.UseAnonymousAuthentication,
		NodeName:                    data.NodeName,
		NodeNameEnv:                 data.NodeNameEnv,
		MaxPollAttempts:             data.MaxPollAttempts,
		PollRetryInterval:           poll,
		ReloadInterval:              reload,
		DisableContainerSelectors:   data.DisableContainerSelectors,
		LegacyContainerLocator:      data.UseNewContainerLocator != nil && !*data.UseNewContainerLocator,
		VerboseContainerLocatorLogs: data.VerboseContainerLocatorLogs,
		Sigstore:                    data.Experimental.Sigstore != nil,
		Log:                         deps.Log.With("plugin", k8s.SelectorType),
	})
	if ce := (*k8s.ConfigError)(nil); errors.As(err, &ce) {
		return nil, p.Errorf(ce.Key, "%v", ce.Err)
	} else if err != nil {
		return nil, err
	}
	return a, nil
}
