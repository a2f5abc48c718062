// Package federation is the server's side of SPIFFE federation: the bundle
// endpoint that serves this trust domain's bundle to foreign servers
// (https_spiffe with the server's own X.509-SVID, or https_web with a
// certificate from disk or ACME), and the refresher that fetches the
// bundles of the trust domains this server federates with, from the
// configuration's federates_with blocks and the datastore's federation
// relationships, and stores them so that agents hand them to the workloads
// whose entries federate with those trust domains.
//
// Every fetched bundle is treated as hostile until checked: its size is
// capped, it must parse as a SPIFFE bundle with X.509 authorities, none of
// its authorities may name another trust domain or be one of this trust
// domain's own, and its sequence number may not go backwards. A refused
// bundle is logged with the reason and the last good one stays.
package federation
