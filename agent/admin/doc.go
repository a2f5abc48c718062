// Package admin serves the agent's admin socket (admin_socket_path), the
// agent's counterpart of the server's admin socket: SPIRE's debug/v1
// (GetInfo: the agent SVID chain, uptime, cache counts, last sync),
// logger/v1 (GetLogger, SetLogLevel, ResetLogLevel on the agent's live log
// level, `spire-agent logger get|set|reset`) and the Delegated Identity API.
//
// The socket is mode 0770, as SPIRE's: its file permissions are the
// authentication, so only the agent's user and group reach it. It is never
// the Workload API socket (agent/config refuses it in that socket's
// directory), and the Workload API's gRPC server does not register these
// services. Callers are identified by pidfd at accept (agent/peer), and
// held to per-uid connection caps and handshake and idle timeouts with the
// Workload API's pieces (agent/workloadapi.Limits, internal/connlimit).
//
// With Config.DelegatedIdentity the socket also serves SPIRE's Delegated
// Identity API (package delegatedidentity) to the authorized_delegates.
package admin
