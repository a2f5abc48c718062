package api

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/wire/push"
)

// Role is what a caller may do.
type Role int

const (
	// RoleNone: an unauthenticated caller on TCP, or an SVID holder without
	// privileges; it may call only public methods.
	RoleNone Role = iota
	// RoleAgent: an attested agent presenting its current agent SVID.
	RoleAgent
	// RoleAdmin: the local admin socket, or an SVID whose ID is in
	// admin_ids or belongs to an admin entry.
	RoleAdmin
)

// Caller is the authenticated caller of one request.
type Caller struct {
	Role Role
	// Local is true on the admin Unix socket.
	Local bool
	// ID and Cert are set when the caller presented an X.509-SVID.
	ID   spiffeid.ID
	Cert *x509.Certificate
	// Node is the caller's attested node when Role is RoleAgent.
	Node *datastore.AttestedNode
}

type callerKey struct{}

// CallerFromContext returns the caller the interceptors authenticated.
func CallerFromContext(ctx context.Context) (*Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*Caller)
	return c, ok
}

// access says who may call a method.
type access int

const (
	accessPublic access = iota
	accessAgent
	accessAdmin
	accessAgentOrAdmin
	// accessLocal: the admin socket only, not admin SVIDs over TCP
	// (SPIRE's allow_local): the logger API changes the daemon itself.
	accessLocal
)

// methodAccess lists every method the server serves; anything absent is
// refused, so a service registered without a rule cannot be reached.
var methodAccess = map[string]access{
	"/grpc.health.v1.Health/Check": accessPublic,
	"/grpc.health.v1.Health/Watch": accessPublic,
	"/grpc.health.v1.Health/List":  accessPublic,

	"/spire.api.server.agent.v1.Agent/AttestAgent":     accessPublic,
	"/spire.api.server.agent.v1.Agent/RenewAgent":      accessAgent,
	"/spire.api.server.agent.v1.Agent/PostStatus":      accessAgent,
	"/spire.api.server.agent.v1.Agent/CountAgents":     accessAdmin,
	"/spire.api.server.agent.v1.Agent/ListAgents":      accessAdmin,
	"/spire.api.server.agent.v1.Agent/GetAgent":        accessAdmin,
	"/spire.api.server.agent.v1.Agent/DeleteAgent":     accessAdmin,
	"/spire.api.server.agent.v1.Agent/BanAgent":        accessAdmin,
	"/spire.api.server.agent.v1.Agent/CreateJoinToken": accessAdmin,

	"/spire.api.server.entry.v1.Entry/CountEntries":          accessAdmin,
	"/spire.api.server.entry.v1.Entry/ListEntries":           accessAdmin,
	"/spire.api.server.entry.v1.Entry/GetEntry":              accessAdmin,
	"/spire.api.server.entry.v1.Entry/BatchCreateEntry":      accessAdmin,
	"/spire.api.server.entry.v1.Entry/BatchUpdateEntry":      accessAdmin,
	"/spire.api.server.entry.v1.Entry/BatchDeleteEntry":      accessAdmin,
	"/spire.api.server.entry.v1.Entry/GetAuthorizedEntries":  accessAgent,
	"/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries": accessAgent,

	"/spire.api.server.svid.v1.SVID/MintX509SVID":        accessAdmin,
	"/spire.api.server.svid.v1.SVID/MintJWTSVID":         accessAdmin,
	"/spire.api.server.svid.v1.SVID/BatchNewX509SVID":    accessAgent,
	"/spire.api.server.svid.v1.SVID/NewJWTSVID":          accessAgent,
	"/spire.api.server.svid.v1.SVID/NewDownstreamX509CA": accessAdmin,

	"/spire.api.server.bundle.v1.Bundle/GetBundle":                  accessPublic,
	"/spire.api.server.bundle.v1.Bundle/CountBundles":               accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/AppendBundle":               accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/PublishJWTAuthority":        accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/ListFederatedBundles":       accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/GetFederatedBundle":         accessAgentOrAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchCreateFederatedBundle": accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchUpdateFederatedBundle": accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchSetFederatedBundle":    accessAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchDeleteFederatedBundle": accessAdmin,

	"/spire.api.server.debug.v1.Debug/GetInfo": accessAdmin,

	"/spire.api.server.trustdomain.v1.TrustDomain/ListFederationRelationships":       accessAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/GetFederationRelationship":         accessAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/BatchCreateFederationRelationship": accessAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/BatchUpdateFederationRelationship": accessAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/BatchDeleteFederationRelationship": accessAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/RefreshBundle":                     accessAdmin,

	"/spire.api.server.logger.v1.Logger/GetLogger":     accessLocal,
	"/spire.api.server.logger.v1.Logger/SetLogLevel":   accessLocal,
	"/spire.api.server.logger.v1.Logger/ResetLogLevel": accessLocal,

	// Our own service: an attested agent's change notices.
	push.SubscribeMethod: accessAgent,

	"/spire.api.server.localauthority.v1.LocalAuthority/GetJWTAuthorityState":        accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareJWTAuthority":         accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateJWTAuthority":        accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintJWTAuthority":           accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeJWTAuthority":          accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/GetX509AuthorityState":       accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareX509Authority":        accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateX509Authority":       accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintX509Authority":          accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintX509UpstreamAuthority":  accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeX509Authority":         accessAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeX509UpstreamAuthority": accessAdmin,
}

// authenticate works out who is calling. The TLS layer has already verified
// any client certificate against the trust bundle; here the certificate is
// matched with the datastore, so an evicted, banned or superseded agent SVID
// is refused even though it still chains to the CA.
func (a *API) authenticate(ctx context.Context) (*Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer information")
	}
	if _, ok := p.Addr.(*net.UnixAddr); ok {
		return &Caller{Role: RoleAdmin, Local: true}, nil
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return &Caller{Role: RoleNone}, nil
	}
	cert := tlsInfo.State.PeerCertificates[0]
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate is not an X.509-SVID: %v", err)
	}
	c := &Caller{Role: RoleNone, ID: id, Cert: cert}
	if isAgentPath(a.cfg.TrustDomain, id) {
		node, err := a.authenticateAgent(ctx, id, cert)
		if err != nil {
			return nil, err
		}
		c.Role, c.Node = RoleAgent, node
		return c, nil
	}
	if slices.Contains(a.cfg.AdminIDs, id) {
		c.Role = RoleAdmin
		return c, nil
	}
	snap, err := a.entries.snapshot(ctx)
	if err != nil {
		return nil, dsError("load entries", err)
	}
	if snap.isAdmin(id.String()) {
		c.Role = RoleAdmin
	}
	return c, nil
}

func isAgentPath(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	return id.MemberOf(td) && strings.HasPrefix(id.Path(), "/spire/agent/")
}

// authenticateAgent checks an agent SVID against the attested node: the
// serial must be the node's current one, or the one issued by the last
// renewal, which this first use then makes current.
func (a *API) authenticateAgent(ctx context.Context, id spiffeid.ID, cert *x509.Certificate) (*datastore.AttestedNode, error) {
	serial := cert.SerialNumber.String()
	node, err := a.nodes.fetch(ctx, id.String(), false)
	if err == nil && serial != node.CertSerial {
		// A serial the cached node does not hold as current: perhaps
		// renewed through another server, and about to be activated,
		// which writes the node. Never refuse, nor write back, on the
		// strength of a cached copy.
		node, err = a.nodes.fetch(ctx, id.String(), true)
	}
	for attempt := 0; ; attempt++ {
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			return nil, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %q is not attested", id)
		case err != nil && databaseUnreachable(err):
			// A node this server never read cannot be authenticated
			// without the database (a ban would go unseen); the agent
			// retries, on another server (agent/client's retry policy).
			return nil, status.Errorf(codes.Unavailable, "fetch attested node: database unavailable: %v", err)
		case err != nil:
			return nil, status.Errorf(codes.Internal, "fetch attested node: %v", err)
		case node.Banned():
			return nil, agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %q is banned", id)
		}
		switch serial {
		case node.CertSerial:
			return node, nil
		case node.NewCertSerial:
		default:
			return nil, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %q presented an SVID that is not active (serial %s)", id, serial)
		}
		// Activation is conditional on the node as read (from the
		// database, above): a renewal or ban through another server
		// that overtook it must not be overwritten. Losing is retried
		// once from a fresh read, which is correct here: the caller
		// proves it holds this serial on this very connection, and
		// the decision depends only on the stored node. Most often
		// the winner was the same activation (the agent's calls
		// reaching two servers at once), and the re-read finds the
		// serial current; after a renewal or ban it is refused as
		// that node says.
		read := node.Serials()
		node.CertSerial, node.CertNotAfter = node.NewCertSerial, node.NewCertNotAfter
		node.NewCertSerial, node.NewCertNotAfter = "", 0
		sels := node.Selectors
		node.Selectors = nil // leave the stored selectors alone
		err = a.cfg.DataStore.UpdateAttestedNode(ctx, node, read)
		node.Selectors = sels
		a.nodes.forget(id.String())
		switch {
		case err == nil:
			return node, nil
		case errors.Is(err, datastore.ErrConflict) && attempt == 0:
			node, err = a.nodes.fetch(ctx, id.String(), true)
		case errors.Is(err, datastore.ErrConflict):
			return nil, a.nodeWriteError(ctx, "activate renewed agent SVID", id.String(), err)
		case errors.Is(err, datastore.ErrNotFound):
			return nil, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %q is not attested", id)
		default:
			return nil, dsError("activate renewed agent SVID", err)
		}
	}
}

// agentDenied is PermissionDenied with SPIRE's reason attached: SPIRE's
// agents read the reason, not the message, to decide whether to
// re-attest (not attested, not active) or to shut down (banned).
func agentDenied(reason types.PermissionDeniedDetails_Reason, format string, args ...any) error {
	st := status.Newf(codes.PermissionDenied, format, args...)
	if d, err := st.WithDetails(&types.PermissionDeniedDetails{Reason: reason}); err == nil {
		st = d
	}
	return st.Err()
}

func (a *API) authorize(ctx context.Context, method string) (context.Context, error) {
	acc, ok := methodAccess[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not served", method)
	}
	c, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	allowed := false
	switch acc {
	case accessPublic:
		allowed = true
	case accessAgent:
		allowed = c.Role == RoleAgent
	case accessAdmin:
		allowed = c.Role == RoleAdmin
	case accessAgentOrAdmin:
		allowed = c.Role == RoleAgent || c.Role == RoleAdmin
	case accessLocal:
		allowed = c.Local
	}
	if !allowed {
		return nil, status.Errorf(codes.PermissionDenied, "caller is not authorized for %s", method)
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

// callerAgent returns the calling agent; the interceptor guarantees it for
// agent-only methods.
func callerAgent(ctx context.Context) (*Caller, error) {
	c, ok := CallerFromContext(ctx)
	if !ok || c.Role != RoleAgent {
		return nil, status.Error(codes.PermissionDenied, "caller is not an agent")
	}
	return c, nil
}
