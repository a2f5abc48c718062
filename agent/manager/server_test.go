package manager

// An in-test SPIRE-compatible server: real certificates, real TLS over a
// real socket, the SDK's generated services. It implements only what the
// agent calls, with knobs for the protocol variants.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe-hw/spire-hw/wire/push"
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
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// testCA signs everything the fake server hands out.
type testCA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	jwtKey *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwtKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u := testTD.ID().URL()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, jwtKey: jwtKey}
}

func (ca *testCA) sign(id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Second), NotAfter: time.Now().Add(ttl),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func (ca *testCA) signCSR(id spiffeid.ID, csrDER []byte, ttl time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return ca.sign(id, csr.PublicKey, ttl)
}

func (ca *testCA) bundle() *types.Bundle {
	pub, _ := x509.MarshalPKIXPublicKey(ca.jwtKey.Public())
	return &types.Bundle{
		TrustDomain:     testTD.Name(),
		X509Authorities: []*types.X509Certificate{{Asn1: ca.cert.Raw}},
		JwtAuthorities:  []*types.JWTKey{{PublicKey: pub, KeyId: "k1"}},
		SequenceNumber:  1,
	}
}

// fakeServer is the server side of the agent's protocol.
type fakeServer struct {
	agentv1.UnimplementedAgentServer
	entryv1.UnimplementedEntryServer
	svidv1.UnimplementedSVIDServer
	bundlev1.UnimplementedBundleServer

	ca       *testCA
	agentTTL time.Duration
	svidTTL  time.Duration

	mu               sync.Mutex
	token            string
	challenge        []byte // if set, AttestAgent asks it and wants it reversed
	reattestable     bool
	entries          []*types.Entry
	pageSize         int  // SyncAuthorizedEntries page size; 0 = send all
	noSync           bool // answer Unimplemented to SyncAuthorizedEntries
	denyAgent        bool // PermissionDenied to agent calls (a banned agent)
	attestations     int
	renewals         int
	requestedIDs     []string
	x509Calls        int
	jwtCalls         int
	federatedAsked   []string
	federatedBundles map[string]*types.Bundle
	// tainted marks the CA's X.509 authority and JWT key tainted in the
	// bundle, as localauthority taint does (the CA goes on signing).
	tainted bool
	// syncs counts entry fetches (GetAuthorizedEntries and
	// SyncAuthorizedEntries).
	syncs int
	// syncAt is when each of them came.
	syncAt []time.Time
	// notices, if set, serves our notice stream (wire/push); a server
	// without it answers Unimplemented, as SPIRE's.
	notices *fakeNotices
}

func (s *fakeServer) AttestAgent(stream agentv1.Agent_AttestAgentServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	p := req.GetParams()
	if p == nil || p.Data == nil || p.Params == nil {
		return status.Error(codes.InvalidArgument, "missing params")
	}
	s.mu.Lock()
	token, challenge, reattestable := s.token, s.challenge, s.reattestable
	s.mu.Unlock()
	if p.Data.Type != "join_token" || token == "" || string(p.Data.Payload) != token {
		return status.Error(codes.PermissionDenied, "bad join token")
	}
	if challenge != nil {
		if err := stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Challenge{Challenge: challenge}}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if string(resp.GetChallengeResponse()) != reverse(string(challenge)) {
			return status.Error(codes.PermissionDenied, "wrong challenge response")
		}
	}
	id := spiffeid.RequireFromPath(testTD, "/spire/agent/join_token/"+token)
	cert, err := s.ca.signCSR(id, p.Params.Csr, s.agentTTL)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.attestations++
	if !reattestable {
		s.token = "" // join tokens are single use
	}
	s.mu.Unlock()
	return stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Result_{
		Result: &agentv1.AttestAgentResponse_Result{Svid: &types.X509SVID{CertChain: [][]byte{cert.Raw}}, Reattestable: reattestable},
	}})
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// agentID authorises a call: it needs a client certificate for an agent.
func (s *fakeServer) agentID(ctx context.Context) (spiffeid.ID, error) {
	s.mu.Lock()
	deny := s.denyAgent
	s.mu.Unlock()
	if deny {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, "agent is banned")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no client certificate")
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

func (s *fakeServer) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest) (*agentv1.RenewAgentResponse, error) {
	id, err := s.agentID(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := s.ca.signCSR(id, req.GetParams().GetCsr(), s.agentTTL)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.renewals++
	s.mu.Unlock()
	return &agentv1.RenewAgentResponse{Svid: &types.X509SVID{CertChain: [][]byte{cert.Raw}}}, nil
}

func (s *fakeServer) snapshot() []*types.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	s.syncAt = append(s.syncAt, time.Now())
	out := make([]*types.Entry, len(s.entries))
	for i, e := range s.entries {
		out[i] = proto.Clone(e).(*types.Entry)
	}
	return out
}

func (s *fakeServer) GetAuthorizedEntries(ctx context.Context, _ *entryv1.GetAuthorizedEntriesRequest) (*entryv1.GetAuthorizedEntriesResponse, error) {
	if _, err := s.agentID(ctx); err != nil {
		return nil, err
	}
	return &entryv1.GetAuthorizedEntriesResponse{Entries: s.snapshot()}, nil
}

func (s *fakeServer) SyncAuthorizedEntries(stream entryv1.Entry_SyncAuthorizedEntriesServer) error {
	s.mu.Lock()
	noSync, page := s.noSync, s.pageSize
	s.mu.Unlock()
	if noSync {
		return status.Error(codes.Unimplemented, "not here")
	}
	if _, err := s.agentID(stream.Context()); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	entries := s.snapshot()
	if page == 0 || len(entries) < page {
		return stream.Send(&entryv1.SyncAuthorizedEntriesResponse{Entries: entries})
	}
	byID := map[string]*types.Entry{}
	for i := 0; i < len(entries); i += page {
		end := min(i+page, len(entries))
		var revs []*entryv1.EntryRevision
		for _, e := range entries[i:end] {
			revs = append(revs, &entryv1.EntryRevision{Id: e.Id, RevisionNumber: e.RevisionNumber})
			byID[e.Id] = e
		}
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesResponse{EntryRevisions: revs, More: end < len(entries)}); err != nil {
			return err
		}
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if len(req.Ids) > page {
			return status.Error(codes.InvalidArgument, "too many IDs")
		}
		s.mu.Lock()
		s.requestedIDs = append(s.requestedIDs, req.Ids...)
		s.mu.Unlock()
		var out []*types.Entry
		for _, id := range req.Ids {
			if e, ok := byID[id]; ok {
				out = append(out, e)
			}
		}
		// Two pages per request, to exercise "more".
		half := len(out) / 2
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesResponse{Entries: out[:half], More: true}); err != nil {
			return err
		}
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesResponse{Entries: out[half:]}); err != nil {
			return err
		}
	}
}

func (s *fakeServer) BatchNewX509SVID(ctx context.Context, req *svidv1.BatchNewX509SVIDRequest) (*svidv1.BatchNewX509SVIDResponse, error) {
	if _, err := s.agentID(ctx); err != nil {
		return nil, err
	}
	byID := map[string]*types.Entry{}
	for _, e := range s.snapshot() {
		byID[e.Id] = e
	}
	s.mu.Lock()
	s.x509Calls++
	s.mu.Unlock()
	resp := &svidv1.BatchNewX509SVIDResponse{}
	for _, p := range req.Params {
		e, ok := byID[p.EntryId]
		if !ok {
			resp.Results = append(resp.Results, &svidv1.BatchNewX509SVIDResponse_Result{Status: &types.Status{Code: int32(codes.NotFound), Message: "no entry"}})
			continue
		}
		id := spiffeid.RequireFromPath(testTD, e.SpiffeId.Path)
		cert, err := s.ca.signCSR(id, p.Csr, s.svidTTL)
		if err != nil {
			resp.Results = append(resp.Results, &svidv1.BatchNewX509SVIDResponse_Result{Status: &types.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}})
			continue
		}
		resp.Results = append(resp.Results, &svidv1.BatchNewX509SVIDResponse_Result{
			Status: &types.Status{}, Svid: &types.X509SVID{CertChain: [][]byte{cert.Raw}, ExpiresAt: cert.NotAfter.Unix()},
		})
	}
	return resp, nil
}

func (s *fakeServer) NewJWTSVID(ctx context.Context, req *svidv1.NewJWTSVIDRequest) (*svidv1.NewJWTSVIDResponse, error) {
	if _, err := s.agentID(ctx); err != nil {
		return nil, err
	}
	var entry *types.Entry
	for _, e := range s.snapshot() {
		if e.Id == req.EntryId {
			entry = e
		}
	}
	if entry == nil {
		return nil, status.Error(codes.NotFound, "no entry")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.ca.jwtKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	claims := jwt.Claims{
		Subject: spiffeid.RequireFromPath(testTD, entry.SpiffeId.Path).String(), Audience: req.Audience,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.jwtCalls++
	s.mu.Unlock()
	return &svidv1.NewJWTSVIDResponse{Svid: &types.JWTSVID{Token: token, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}}, nil
}

func (s *fakeServer) GetBundle(context.Context, *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	b := s.ca.bundle()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tainted {
		b.X509Authorities[0].Tainted, b.JwtAuthorities[0].Tainted = true, true
	}
	return b, nil
}

func (s *fakeServer) GetFederatedBundle(ctx context.Context, req *bundlev1.GetFederatedBundleRequest) (*types.Bundle, error) {
	if _, err := s.agentID(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.federatedAsked = append(s.federatedAsked, req.TrustDomain)
	if b, ok := s.federatedBundles[req.TrustDomain]; ok {
		return b, nil
	}
	return nil, status.Error(codes.NotFound, "no such bundle")
}

// serve starts the server on addr ("127.0.0.1:0" for any port) and returns
// the address and a stop function.
func (s *fakeServer) serve(t *testing.T, addr string) (string, func()) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := s.ca.sign(spiffeid.RequireFromPath(testTD, "/spire/server"), key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.cert)
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	agentv1.RegisterAgentServer(srv, s)
	entryv1.RegisterEntryServer(srv, s)
	svidv1.RegisterSVIDServer(srv, s)
	bundlev1.RegisterBundleServer(srv, s)
	if s.notices != nil {
		s.notices.srv = s
		push.RegisterServer(srv, s.notices)
	}
	go func() { _ = srv.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(srv.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}
