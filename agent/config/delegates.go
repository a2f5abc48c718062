package config

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// validateAuthorizedDelegates applies SPIRE's rule to authorized_delegates:
// each must be a SPIFFE ID in the agent's trust domain. Listing delegates
// without admin_socket_path, where the Delegated Identity API is served,
// is accepted with a warning, since nothing would serve them.
func (c *Config) validateAuthorizedDelegates(d *hclconf.Diagnostics) {
	a := &c.Agent
	a.AuthorizedDelegates = nil
	if a.TrustDomain.IsZero() {
		// The missing trust_domain is reported; against it, every ID
		// would be refused too.
		return
	}
	for _, s := range a.authorizedDelegates {
		id, err := spiffeid.FromString(s)
		if err != nil {
			d.Errorf(0, "agent.authorized_delegates", "error validating authorized delegate: %q: %v (use a SPIFFE ID such as \"spiffe://%s/delegate\")", s, err, a.TrustDomain.Name())
			continue
		}
		if !id.MemberOf(a.TrustDomain) {
			d.Errorf(0, "agent.authorized_delegates", "error validating authorized delegate: SPIFFE ID %q is not a member of trust domain %q (use an ID of the agent's trust domain)", id, a.TrustDomain)
			continue
		}
		a.AuthorizedDelegates = append(a.AuthorizedDelegates, id)
	}
	if len(a.authorizedDelegates) > 0 && a.AdminSocketPath == "" {
		d.Warnf(0, "agent.authorized_delegates", "set without admin_socket_path: the Delegated Identity API is served only on the admin socket, so no delegate can use it (set admin_socket_path)")
	}
}
