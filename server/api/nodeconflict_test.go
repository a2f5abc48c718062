package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
)

// racingStore is the real SQLite store with another server's write landing
// between this server's read of a node and its write: other runs, once,
// just before the first UpdateAttestedNode, and writes straight to the
// store.
type racingStore struct {
	datastore.DataStore
	mu      sync.Mutex
	other   func()
	updates int
}

func (r *racingStore) UpdateAttestedNode(ctx context.Context, n *datastore.AttestedNode, expect datastore.NodeSerials) error {
	r.mu.Lock()
	other := r.other
	r.other = nil
	r.updates++
	r.mu.Unlock()
	if other != nil {
		other()
	}
	return r.DataStore.UpdateAttestedNode(ctx, n, expect)
}

// fixedAttestor attests every caller as one reattestable agent, as a
// hardware attestor does for one machine.
type fixedAttestor struct{ id spiffeid.ID }

func (fixedAttestor) Type() string { return "fixed" }

func (a fixedAttestor) Attest(context.Context, []byte, *x509.CertificateRequest, nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	return &nodeattestor.Result{AgentID: a.id, CanReattest: true, Selectors: []*types.Selector{{Type: "fixed", Value: "1"}}}, nil
}

type conflictFixture struct {
	st   datastore.DataStore
	ds   *racingStore
	a    *API
	svc  *AgentService
	id   spiffeid.ID
	log  *syncbuf.Buffer
	csr  []byte
	node *datastore.AttestedNode
}

// newConflictFixture is a server over a real SQLite store and CA with one
// attested node whose serials are cur and pending.
func newConflictFixture(t *testing.T, cur, pending string, canReattest bool) *conflictFixture {
	t.Helper()
	ctx := context.Background()
	st := sqlitetest.Open(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	m, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyManager: memory.New(), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	f := &conflictFixture{st: st, ds: &racingStore{DataStore: st}, id: spiffeid.RequireFromPath(td, "/spire/agent/fixed/n1"), log: &syncbuf.Buffer{}}
	f.a = New(Config{TrustDomain: td, DataStore: f.ds, CA: m, Log: slog.New(slog.NewTextHandler(f.log, nil)),
		Attestors: map[string]nodeattestor.Attestor{"fixed": fixedAttestor{id: f.id}}})
	f.svc = &AgentService{api: f.a}
	f.node = &datastore.AttestedNode{SPIFFEID: f.id.String(), AttestationType: "fixed", CertSerial: cur, CertNotAfter: time.Now().Add(time.Hour).Unix(),
		NewCertSerial: pending, CanReattest: canReattest, Selectors: []*types.Selector{{Type: "fixed", Value: "1"}}}
	if pending != "" {
		f.node.NewCertNotAfter = time.Now().Add(2 * time.Hour).Unix()
	}
	if err := st.CreateAttestedNode(ctx, f.node); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if f.csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key); err != nil {
		t.Fatal(err)
	}
	return f
}

// otherServer writes the node as another server would, from what it reads.
func (f *conflictFixture) otherServer(t *testing.T, change func(n *datastore.AttestedNode)) func() {
	return func() {
		n, err := f.st.FetchAttestedNode(context.Background(), f.id.String())
		if err != nil {
			t.Error(err)
			return
		}
		read := n.Serials()
		change(n)
		n.Selectors = nil
		if err := f.st.UpdateAttestedNode(context.Background(), n, read); err != nil {
			t.Errorf("the other server's write: %v", err)
		}
	}
}

func (f *conflictFixture) wantStored(t *testing.T, want datastore.NodeSerials) {
	t.Helper()
	n, err := f.st.FetchAttestedNode(context.Background(), f.id.String())
	if err != nil {
		t.Fatal(err)
	}
	if n.Serials() != want {
		t.Fatalf("stored serials %+v, want %+v", n.Serials(), want)
	}
}

func activate(n *datastore.AttestedNode) {
	n.CertSerial, n.CertNotAfter, n.NewCertSerial, n.NewCertNotAfter = n.NewCertSerial, n.NewCertNotAfter, "", 0
}

func (f *conflictFixture) renew(t *testing.T, serial int64) (*agentv1.RenewAgentResponse, error) {
	t.Helper()
	cert := &x509.Certificate{SerialNumber: big.NewInt(serial)}
	ctx := context.WithValue(context.Background(), callerKey{}, &Caller{Role: RoleAgent, ID: f.id, Cert: cert, Node: f.node})
	return f.svc.RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: f.csr}})
}

// TestRenewLosesToActivation is the lost update of issue 14: server A
// renews the agent from its read (10 current, 11 pending) while server B
// activates 11 for the same agent. Without the condition A would write
// 10 back as current and the agent, holding 11, would be locked out; with
// it A answers Aborted, logs why, and the row keeps B's values.
func TestRenewLosesToActivation(t *testing.T) {
	f := newConflictFixture(t, "10", "11", false)
	f.ds.other = f.otherServer(t, activate)
	_, err := f.renew(t, 10)
	if status.Code(err) != codes.Aborted || !strings.Contains(status.Convert(err).Message(), "changed concurrently") {
		t.Fatalf("renewal that lost the race: %v, want Aborted", err)
	}
	f.wantStored(t, datastore.NodeSerials{CertSerial: "11"})
	if out := f.log.String(); !strings.Contains(out, "Node write refused") || !strings.Contains(out, f.id.String()) {
		t.Fatalf("refusal not logged with its agent:\n%s", out)
	}
	// Renewing again with 10 is now refused as not active; with 11 it
	// works, and sets the new serial pending.
	if _, err := f.renew(t, 10); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("renewal with the replaced SVID: %v", err)
	}
	resp, err := f.renew(t, 11)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(resp.Svid.CertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	f.wantStored(t, datastore.NodeSerials{CertSerial: "11", NewCertSerial: cert.SerialNumber.String()})
}

// TestActivationRace: an activation overtaken by another write is decided
// again on a fresh read, once: the same activation through another server
// (the agent's calls reaching both at once) passes; a renewal or a ban
// that won is obeyed, not overwritten.
func TestActivationRace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		other  func(n *datastore.AttestedNode)
		code   codes.Code
		stored datastore.NodeSerials
	}{
		{"same activation elsewhere", activate, codes.OK, datastore.NodeSerials{CertSerial: "11"}},
		{"renewal elsewhere", func(n *datastore.AttestedNode) { n.NewCertSerial = "12" }, codes.PermissionDenied, datastore.NodeSerials{CertSerial: "10", NewCertSerial: "12"}},
		{"ban elsewhere", func(n *datastore.AttestedNode) { n.CertSerial, n.NewCertSerial = "", "" }, codes.PermissionDenied, datastore.NodeSerials{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newConflictFixture(t, "10", "11", false)
			f.ds.other = f.otherServer(t, tc.other)
			n, err := f.a.authenticateAgent(context.Background(), f.id, &x509.Certificate{SerialNumber: big.NewInt(11)})
			if status.Code(err) != tc.code {
				t.Fatalf("activation: %v, want %v", err, tc.code)
			}
			if err == nil && n.CertSerial != "11" {
				t.Fatalf("authenticated as %+v", n)
			}
			f.wantStored(t, tc.stored)
		})
	}
}

// TestBanWinsOverRenewal: a ban whose read a renewal through another
// server overtook reads again and bans.
func TestBanWinsOverRenewal(t *testing.T) {
	f := newConflictFixture(t, "10", "", false)
	f.ds.other = f.otherServer(t, func(n *datastore.AttestedNode) { n.NewCertSerial = "11" })
	if _, err := f.svc.BanAgent(context.Background(), &agentv1.BanAgentRequest{Id: idToProto(f.id)}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	f.wantStored(t, datastore.NodeSerials{})
	if f.ds.updates != 2 {
		t.Fatalf("%d node writes, want 2 (the refused one and the retry)", f.ds.updates)
	}
}

// TestAttestRace: a re-attestation overtaken by another write reads again:
// a ban made meanwhile stands, and anything else is replaced by the node
// the caller just proved, whose serial is the one stored.
func TestAttestRace(t *testing.T) {
	t.Run("ban elsewhere", func(t *testing.T) {
		f := newConflictFixture(t, "10", "", true)
		f.ds.other = f.otherServer(t, func(n *datastore.AttestedNode) { n.CertSerial, n.NewCertSerial = "", "" })
		err := f.attest(t)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
			t.Fatalf("attestation racing a ban: %v, want PermissionDenied (banned)", err)
		}
		f.wantStored(t, datastore.NodeSerials{})
	})
	t.Run("attestation elsewhere", func(t *testing.T) {
		f := newConflictFixture(t, "10", "", true)
		f.ds.other = f.otherServer(t, func(n *datastore.AttestedNode) { n.CertSerial = "20" })
		stream := &attestStream{ctx: context.Background(), in: f.attestRequest()}
		if err := f.svc.AttestAgent(stream); err != nil {
			t.Fatalf("attestation racing another: %v", err)
		}
		cert, err := x509.ParseCertificate(stream.out[len(stream.out)-1].GetResult().GetSvid().GetCertChain()[0])
		if err != nil {
			t.Fatal(err)
		}
		f.wantStored(t, datastore.NodeSerials{CertSerial: cert.SerialNumber.String()})
	})
}

func (f *conflictFixture) attestRequest() []*agentv1.AttestAgentRequest {
	return []*agentv1.AttestAgentRequest{{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "fixed", Payload: []byte("x")},
		Params: &agentv1.AgentX509SVIDParams{Csr: f.csr},
	}}}}
}

func (f *conflictFixture) attest(t *testing.T) error {
	t.Helper()
	return f.svc.AttestAgent(&attestStream{ctx: context.Background(), in: f.attestRequest()})
}
