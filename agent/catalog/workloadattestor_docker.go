package catalog

import (
	"context"
	"errors"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// newDocker builds the "docker" workload attestor from SPIRE's
// plugin_data keys.
func newDocker(_ context.Context, p hclconf.Plugin, deps Deps) (workloadapi.Attestor, error) {
	var data struct {
		DockerSocketPath            string                `hcl:"docker_socket_path"`
		DockerVersion               string                `hcl:"docker_version"`
		ContainerIDCgroupMatchers   []string              `hcl:"container_id_cgroup_matchers"`
		UseNewContainerLocator      *bool                 `hcl:"use_new_container_locator"`
		VerboseContainerLocatorLogs bool                  `hcl:"verbose_container_locator_logs"`
		Experimental                containerExperimental `hcl:"experimental"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	a, err := docker.New(docker.Config{
		SocketPath:                  data.DockerSocketPath,
		Version:                     data.DockerVersion,
		ContainerIDCgroupMatchers:   data.ContainerIDCgroupMatchers,
		UseNewContainerLocator:      data.UseNewContainerLocator,
		VerboseContainerLocatorLogs: data.VerboseContainerLocatorLogs,
		Sigstore:                    data.Experimental.Sigstore != nil,
		Log:                         deps.Log.With("plugin", docker.SelectorType),
	})
	if ce := (*docker.ConfigError)(nil); errors.As(err, &ce) {
		return nil, p.Errorf(ce.Key, "%v", ce.Err)
	} else if err != nil {
		return nil, err
	}
	return a, nil
}

// containerExperimental is the experimental block of SPIRE's docker and k8s
// attestors: their sigstore keys, decoded so that a SPIRE configuration
// loads (and a misspelt key is still an error); the attestors warn that
// they do not verify signatures.
type containerExperimental struct {
	Sigstore *struct {
		AllowedIdentities   map[string][]string `hcl:"allowed_identities"`
		SkippedImages       []string            `hcl:"skipped_images"`
		RekorURL            *string             `hcl:"rekor_url"`
		IgnoreSCT           *bool               `hcl:"ignore_sct"`
		IgnoreTlog          *bool               `hcl:"ignore_tlog"`
		IgnoreAttestations  *bool               `hcl:"ignore_attestations"`
		RegistryCredentials map[string]*struct {
			Username string `hcl:"username"`
			Password string `hcl:"password"`
		} `hcl:"registry_credentials"`
	} `hcl:"sigstore"`
}
