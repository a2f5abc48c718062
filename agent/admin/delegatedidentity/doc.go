// Package delegatedidentity serves SPIRE's Delegated Identity API
// (spire.api.agent.delegatedidentity.v1) on the agent's admin socket: a
// trusted delegate (Cilium's agent, a node proxy) gets the X.509-SVIDs,
// JWT-SVIDs and bundles of other workloads on its node, named by their
// selectors or by their PID.
//
// Every call first attests the caller with the Workload API's attestors
// (workloadapi.Handler.AttestPIDFD, on the pidfd taken at accept) and
// requires that one of the entries its selectors match issues a SPIFFE ID
// listed in authorized_delegates, with SPIRE's codes and messages: Internal
// "workload attestation failed", PermissionDenied "no identity issued" or
// "caller not configured as an authorized delegate". Streams check again,
// on the selectors attested at their start, before each message they send,
// so a delegate whose entry is deleted loses its streams.
//
// A workload named by PID is attested on the same path, pinned by a pidfd
// opened at once: a PID with no process is refused (NotFound), so is one
// whose process exits while it is attested, and a stream by PID ends when
// that process exits (SPIRE's documentation says such results are valid
// only until then; SPIRE itself leaves that check to the delegate).
//
// Bounds: a request holds at most MaxSelectors selectors of at most
// MaxSelectorLen bytes each and at most MaxAudiences audiences of at most
// MaxAudienceLen bytes; one uid holds at most Config.MaxStreamsPerUID
// streams at once. A stream's pending update is only ever the latest (the
// cache's subscriptions drop what a slow reader has not taken), and a
// reader that stops reading blocks its stream in gRPC's bounded per-stream
// send window rather than making the agent queue messages.
package delegatedidentity
