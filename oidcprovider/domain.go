package oidcprovider

import (
	"fmt"
	"net"

	"golang.org/x/net/idna"
)

// domainPolicy decides whether a request's host may be served.
type domainPolicy func(domain string) error

// allowDomains returns the policy that admits exactly the given domains.
// A domain must already be in its ASCII (punycode) form, as SPIRE requires,
// so that two spellings of one name cannot both be listed or requested.
func allowDomains(domains ...string) (domainPolicy, error) {
	allowed := make(map[string]bool, len(domains))
	for _, d := range domains {
		k, err := domainKey(d)
		if err != nil {
			return nil, err
		}
		allowed[k] = true
	}
	return func(domain string) error {
		k, err := domainKey(domain)
		if err != nil {
			return err
		}
		if !allowed[k] {
			return fmt.Errorf("domain %q is not allowed", domain)
		}
		return nil
	}, nil
}

// domainKey validates a host name with IDNA lookup rules.
func domainKey(domain string) (string, error) {
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("domain %q is not a valid domain name: %w", domain, err)
	}
	if ascii != domain {
		return "", fmt.Errorf("domain %q must already be punycode encoded", domain)
	}
	return domain, nil
}

// hostDomain takes the domain out of a Host value, which may carry a port.
func hostDomain(host string) string {
	if d, _, err := net.SplitHostPort(host); err == nil {
		return d
	}
	return host
}
