package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

const (
	// maxChallenges bounds the challenge rounds of one attestation so that
	// a misbehaving server cannot keep the agent answering forever.
	maxChallenges = 32
	// MaxBatch is the most CSRs sent in one BatchNewX509SVID call.
	MaxBatch = 500
	// maxIDsPerRequest caps the IDs the agent asks for in one request of
	// SyncAuthorizedEntries when the server's page size is unknown.
	maxIDsPerRequest = 500
)

// AttestResult is the outcome of node attestation.
type AttestResult struct {
	// SVID is the agent's X509-SVID chain, leaf first.
	SVID []*x509.Certificate
	// Reattestable says whether the attestation method can be repeated
	// (join tokens cannot).
	Reattestable bool
	// Bundle is the server's trust bundle, fetched on the same connection.
	Bundle *types.Bundle
}

// Attest runs node attestation: it sends the attestor's evidence and csr,
// answers challenges, then fetches the trust bundle. With insecure
// bootstrap, the server's certificate, unverified during the handshake, is
// verified against that bundle afterwards, so a man in the middle that did
// not also forge the bundle is still detected.
func (c *Client) Attest(ctx context.Context, att nodeattestor.Attestor, csr []byte) (*AttestResult, error) {
	peer := &peerChain{}
	tlsCfg := c.bootstrapTLS(peer)
	// Any of the servers behind the address can attest the agent.
	conn, err := grpc.NewClient(target(c.cfg.ServerAddress), c.dialOptions(credentials.NewTLS(tlsCfg))...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.cfg.ServerAddress, err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	// An attestor that holds state for one attestation (an external
	// plugin's stream) is told when it is over, whatever the outcome.
	if d, ok := att.(interface{ Done() }); ok {
		defer d.Done()
	}
	// Evidence that binds the agent's key (a TPM quote) binds this CSR,
	// the one sent beside it.
	payload, err := att.AttestationData(ctx, csr)
	if err != nil {
		return nil, fmt.Errorf("client: attestation data: %w", err)
	}
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: attest agent: %w", err)
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{
		Params: &agentv1.AttestAgentRequest_Params{
			Data:   &types.AttestationData{Type: att.Type(), Payload: payload},
			Params: &agentv1.AgentX509SVIDParams{Csr: csr},
		},
	}})
	if err != nil {
		return nil, fmt.Errorf("client: attest agent: send params: %w", recvErr(stream, err))
	}
	var result *agentv1.AttestAgentResponse_Result
	for round := 0; result == nil; round++ {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("client: attest agent: %w", err)
		}
		switch step := resp.Step.(type) {
		case *agentv1.AttestAgentResponse_Result_:
			result = step.Result
			if result == nil {
				return nil, errors.New("client: attest agent: empty result")
			}
		case *agentv1.AttestAgentResponse_Challenge:
			if round >= maxChallenges {
				return nil, fmt.Errorf("client: attest agent: more than %d challenges", maxChallenges)
			}
			answer, err := att.Respond(ctx, step.Challenge)
			if err != nil {
				return nil, fmt.Errorf("client: attest agent: answer challenge: %w", err)
			}
			err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: answer}})
			if err != nil {
				return nil, fmt.Errorf("client: attest agent: send challenge response: %w", recvErr(stream, err))
			}
		default:
			return nil, errors.New("client: attest agent: response without a step")
		}
	}
	_ = stream.CloseSend()

	if result.Svid == nil {
		return nil, errors.New("client: attest agent: result without an SVID")
	}
	chain, err := ParseChain(result.Svid.CertChain)
	if err != nil {
		return nil, fmt.Errorf("client: attest agent: %w", err)
	}
	bundle, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("client: get bundle after attestation: %w", err)
	}
	if raw := peer.get(); raw != nil {
		sb, err := ParseBundle(c.cfg.TrustDomain, bundle)
		if err != nil {
			return nil, fmt.Errorf("client: bundle after attestation: %w", err)
		}
		id, _, err := x509svid.ParseAndVerify(raw, sb)
		if err != nil {
			return nil, fmt.Errorf("client: insecure bootstrap: server certificate does not chain to the server's bundle: %w", err)
		}
		if id != c.serverID {
			return nil, fmt.Errorf("client: insecure bootstrap: server presented %q, want %q", id, c.serverID)
		}
	}
	return &AttestResult{SVID: chain, Reattestable: result.Reattestable, Bundle: bundle}, nil
}

// recvErr turns the io.EOF of a failed Send into the stream's real status.
func recvErr(stream grpc.ClientStream, err error) error {
	if errors.Is(err, io.EOF) {
		if rerr := stream.RecvMsg(new(agentv1.AttestAgentResponse)); rerr != nil {
			return rerr
		}
	}
	return err
}

// peerChain records the server's raw certificates seen in an unverified
// (insecure bootstrap) handshake.
type peerChain struct {
	mu  sync.Mutex
	raw [][]byte
}

func (p *peerChain) set(raw [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw = raw
}

func (p *peerChain) get() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw
}

// RenewAgent asks for a new agent X509-SVID for the key in csr.
func (c *Client) RenewAgent(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
	conn, err := c.agentConn()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	resp, err := agentv1.NewAgentClient(conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}})
	if err != nil {
		return nil, fmt.Errorf("client: renew agent: %w", err)
	}
	if resp.Svid == nil {
		return nil, errors.New("client: renew agent: response without an SVID")
	}
	chain, err := ParseChain(resp.Svid.CertChain)
	if err != nil {
		return nil, fmt.Errorf("client: renew agent: %w", err)
	}
	return chain, nil
}

// SyncEntries returns every entry the agent is authorized for. Entries in
// cached whose revision the server reports unchanged are reused instead of
// being downloaded again. It uses SyncAuthorizedEntries and falls back to
// GetAuthorizedEntries against servers that do not implement it. Entries
// without an ID or a valid SPIFFE ID are dropped.
func (c *Client) SyncEntries(ctx context.Context, cached map[string]*types.Entry) ([]*types.Entry, error) {
	conn, err := c.agentConn()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	cl := entryv1.NewEntryClient(conn)
	entries, err := syncEntries(ctx, cl, cached)
	if status.Code(err) == codes.Unimplemented {
		resp, gerr := cl.GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
		if gerr != nil {
			return nil, fmt.Errorf("client: get authorized entries: %w", gerr)
		}
		entries, err = resp.Entries, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: sync authorized entries: %w", err)
	}
	return c.validEntries(entries), nil
}

func syncEntries(ctx context.Context, cl entryv1.EntryClient, cached map[string]*types.Entry) ([]*types.Entry, error) {
	stream, err := cl.SyncAuthorizedEntries(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{}); err != nil {
		return nil, recvErr(stream, err)
	}
	var (
		entries   []*types.Entry
		revisions []*entryv1.EntryRevision
		pageSize  int
	)
	// Phase 1: either all entries, or the revisions of all entries.
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if len(resp.EntryRevisions) > 0 && len(entries) > 0 || len(resp.Entries) > 0 && len(revisions) > 0 {
			return nil, status.Error(codes.Internal, "server mixed entries and revisions in one phase")
		}
		entries = append(entries, resp.Entries...)
		revisions = append(revisions, resp.EntryRevisions...)
		pageSize = max(pageSize, len(resp.EntryRevisions))
		if !resp.More {
			break
		}
	}
	if len(revisions) > 0 {
		var need []string
		for _, rev := range revisions {
			if e := cached[rev.GetId()]; e != nil && e.RevisionNumber == rev.GetRevisionNumber() {
				entries = append(entries, e)
				continue
			}
			need = append(need, rev.GetId())
		}
		if pageSize <= 0 || pageSize > maxIDsPerRequest {
			pageSize = maxIDsPerRequest
		}
		// Phases 2..n: ask for what is new or changed, a page at a time.
		for len(need) > 0 {
			n := min(pageSize, len(need))
			if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: need[:n]}); err != nil {
				return nil, recvErr(stream, err)
			}
			need = need[n:]
			for {
				resp, err := stream.Recv()
				if err != nil {
					return nil, err
				}
				if len(resp.EntryRevisions) > 0 {
					return nil, status.Error(codes.Internal, "server sent revisions while sending requested entries")
				}
				entries = append(entries, resp.Entries...)
				if !resp.More {
					break
				}
			}
		}
	}
	// Tell the server we are done and wait for its end of the stream, so
	// that it does not see a cancelled call.
	if err := stream.CloseSend(); err == nil {
		if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return entries, nil
}

// validEntries drops entries the agent could not use and duplicates.
func (c *Client) validEntries(entries []*types.Entry) []*types.Entry {
	seen := make(map[string]bool, len(entries))
	out := entries[:0:0]
	for _, e := range entries {
		if e == nil || e.Id == "" || seen[e.Id] {
			continue
		}
		if _, err := cache.EntryID(e); err != nil {
			c.log.Warn("Dropping entry with an invalid SPIFFE ID", "entry_id", e.Id, "error", err)
			continue
		}
		seen[e.Id] = true
		out = append(out, e)
	}
	return out
}

// X509Result is the outcome of one CSR of NewX509SVIDs.
type X509Result struct {
	// Chain is the issued SVID chain, leaf first, when Err is nil.
	Chain []*x509.Certificate
	// Err is the server's per-entry status, as a gRPC status error.
	Err error
}

// NewX509SVIDs asks for X509-SVIDs, MaxBatch at a time. The results are in
// the order of params. An error means a whole batch failed; the results of
// earlier batches are still returned.
func (c *Client) NewX509SVIDs(ctx context.Context, params []*svidv1.NewX509SVIDParams) ([]X509Result, error) {
	conn, err := c.agentConn()
	if err != nil {
		return nil, err
	}
	cl := svidv1.NewSVIDClient(conn)
	out := make([]X509Result, 0, len(params))
	for len(params) > 0 {
		n := min(MaxBatch, len(params))
		batch := params[:n]
		params = params[n:]
		results, err := c.newX509Batch(ctx, cl, batch)
		if err != nil {
			return out, err
		}
		out = append(out, results...)
	}
	return out, nil
}

func (c *Client) newX509Batch(ctx context.Context, cl svidv1.SVIDClient, batch []*svidv1.NewX509SVIDParams) ([]X509Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	resp, err := cl.BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: batch})
	if err != nil {
		return nil, fmt.Errorf("client: batch new x509 svid: %w", err)
	}
	if len(resp.Results) != len(batch) {
		return nil, fmt.Errorf("client: batch new x509 svid: %d results for %d requests", len(resp.Results), len(batch))
	}
	out := make([]X509Result, len(batch))
	for i, r := range resp.Results {
		if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
			out[i].Err = status.Error(code, r.GetStatus().GetMessage())
			continue
		}
		if r.Svid == nil {
			out[i].Err = status.Error(codes.Internal, "OK result without an SVID")
			continue
		}
		chain, err := ParseChain(r.Svid.CertChain)
		if err != nil {
			out[i].Err = status.Error(codes.Internal, err.Error())
			continue
		}
		out[i].Chain = chain
	}
	return out, nil
}

// NewJWTSVID asks for a JWT-SVID of an entry.
func (c *Client) NewJWTSVID(ctx context.Context, entryID string, audience []string) (*types.JWTSVID, error) {
	conn, err := c.agentConn()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	resp, err := svidv1.NewSVIDClient(conn).NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: entryID, Audience: audience})
	if err != nil {
		return nil, fmt.Errorf("client: new jwt svid: %w", err)
	}
	if resp.Svid == nil || resp.Svid.Token == "" {
		return nil, errors.New("client: new jwt svid: response without a token")
	}
	return resp.Svid, nil
}

// GetBundle returns the bundle of the agent's trust domain.
func (c *Client) GetBundle(ctx context.Context) (*spiffebundle.Bundle, *types.Bundle, error) {
	conn, err := c.agentConn()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("client: get bundle: %w", err)
	}
	sb, err := ParseBundle(c.cfg.TrustDomain, b)
	if err != nil {
		return nil, nil, fmt.Errorf("client: get bundle: %w", err)
	}
	return sb, b, nil
}

// GetFederatedBundle returns the bundle of a federated trust domain. A
// missing bundle is a NotFound status.
func (c *Client) GetFederatedBundle(ctx context.Context, td spiffeid.TrustDomain) (*spiffebundle.Bundle, *types.Bundle, error) {
	conn, err := c.agentConn()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	b, err := bundlev1.NewBundleClient(conn).GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
	if err != nil {
		return nil, nil, fmt.Errorf("client: get federated bundle %q: %w", td, err)
	}
	sb, err := ParseBundle(td, b)
	if err != nil {
		return nil, nil, fmt.Errorf("client: get federated bundle %q: %w", td, err)
	}
	return sb, b, nil
}
