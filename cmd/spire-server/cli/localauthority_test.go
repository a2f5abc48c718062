package cli

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeAuthority answers localauthority/v1 with fixed states and records
// the IDs it was sent.
type fakeAuthority struct {
	localauthorityv1.UnimplementedLocalAuthorityServer
	got []string
}

var (
	stActive   = &localauthorityv1.AuthorityState{AuthorityId: "aaaa", ExpiresAt: 1700000000}
	stPrepared = &localauthorityv1.AuthorityState{AuthorityId: "bbbb", ExpiresAt: 1700003600, UpstreamAuthoritySubjectKeyId: "cccc"}
)

func (f *fakeAuthority) GetX509AuthorityState(context.Context, *localauthorityv1.GetX509AuthorityStateRequest) (*localauthorityv1.GetX509AuthorityStateResponse, error) {
	return &localauthorityv1.GetX509AuthorityStateResponse{Active: stActive, Prepared: stPrepared}, nil
}

func (f *fakeAuthority) GetJWTAuthorityState(context.Context, *localauthorityv1.GetJWTAuthorityStateRequest) (*localauthorityv1.GetJWTAuthorityStateResponse, error) {
	return &localauthorityv1.GetJWTAuthorityStateResponse{Active: stActive, Old: stPrepared}, nil
}

func (f *fakeAuthority) TaintX509Authority(_ context.Context, r *localauthorityv1.TaintX509AuthorityRequest) (*localauthorityv1.TaintX509AuthorityResponse, error) {
	f.got = append(f.got, r.AuthorityId)
	if r.AuthorityId == stActive.AuthorityId {
		return nil, status.Error(codes.InvalidArgument, "unable to taint current local authority")
	}
	return &localauthorityv1.TaintX509AuthorityResponse{TaintedAuthority: stActive}, nil
}

func (f *fakeAuthority) RevokeJWTAuthority(_ context.Context, r *localauthorityv1.RevokeJWTAuthorityRequest) (*localauthorityv1.RevokeJWTAuthorityResponse, error) {
	f.got = append(f.got, r.AuthorityId)
	return &localauthorityv1.RevokeJWTAuthorityResponse{RevokedAuthority: &localauthorityv1.AuthorityState{AuthorityId: r.AuthorityId}}, nil
}

func (f *fakeAuthority) TaintX509UpstreamAuthority(_ context.Context, r *localauthorityv1.TaintX509UpstreamAuthorityRequest) (*localauthorityv1.TaintX509UpstreamAuthorityResponse, error) {
	f.got = append(f.got, r.SubjectKeyId)
	return &localauthorityv1.TaintX509UpstreamAuthorityResponse{UpstreamAuthoritySubjectKeyId: r.SubjectKeyId}, nil
}

func TestAuthorityCommands(t *testing.T) {
	dir, err := os.MkdirTemp("", "la")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &fakeAuthority{}
	localauthorityv1.RegisterLocalAuthorityServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	for _, tt := range []struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{args: []string{"localauthority", "x509", "show"}, wantStdout: `Active X.509 authority:
  Authority ID: aaaa
  Expires at: 2023-11-14 22:13:20 +0000 UTC
  Upstream authority ID: No upstream authority

Prepared X.509 authority:
  Authority ID: bbbb
  Expires at: 2023-11-14 23:13:20 +0000 UTC
  Upstream authority Subject Key ID: cccc

Old X.509 authority:
  No old X.509 authority found
`},
		{args: []string{"localauthority", "jwt", "show"}, wantStdout: `Active JWT authority:
  Authority ID: aaaa
  Expires at: 2023-11-14 22:13:20 +0000 UTC

Prepared JWT authority:
  No prepared JWT authority found

Old JWT authority:
  Authority ID: bbbb
  Expires at: 2023-11-14 23:13:20 +0000 UTC
`},
		{args: []string{"localauthority", "x509", "taint", "-authorityID", "bbbb"}, wantStdout: `Tainted X.509 authority:
  Authority ID: aaaa
  Expires at: 2023-11-14 22:13:20 +0000 UTC
  Upstream authority ID: No upstream authority
`},
		{args: []string{"localauthority", "x509", "taint", "-authorityID", "aaaa"}, wantCode: 1,
			wantStderr: "Error: could not taint X.509 authority: rpc error: code = InvalidArgument desc = unable to taint current local authority\n"},
		{args: []string{"localauthority", "x509", "taint"}, wantCode: 1, wantStderr: "Error: an authority ID is required\n"},
		{args: []string{"localauthority", "jwt", "revoke", "-authorityID", "kid1", "-output", "json"},
			wantStdout: `{"revoked_authority":{"authority_id":"kid1","expires_at":"0","upstream_authority_subject_key_id":""}}` + "\n"},
		{args: []string{"upstreamauthority", "taint", "-subjectKeyID", "ffee"}, wantStdout: "Tainted X.509 upstream authority:\n  Subject Key ID: ffee\n"},
		{args: []string{"upstreamauthority", "revoke"}, wantCode: 1, wantStderr: "Error: the Subject Key ID of the X.509 upstream authority is required\n"},
		{args: []string{"localauthority", "jwt", "prepare"}, wantCode: 1,
			wantStderr: "Error: could not prepare JWT authority: rpc error: code = Unimplemented desc = method PrepareJWTAuthority not implemented\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runAuthorityCommand(t, tt.args, "-socketPath", sock)
			if code != tt.wantCode || stdout != tt.wantStdout || stderr != tt.wantStderr {
				t.Fatalf("code %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
		})
	}
	if strings.Join(fake.got, ",") != "bbbb,aaaa,kid1,ffee" {
		t.Fatalf("server received %v", fake.got)
	}
}

// runAuthorityCommand runs a command by its words, as the dispatcher hands
// it over, so that this test does not depend on how the tree is parsed.
func runAuthorityCommand(t *testing.T, words []string, extra ...string) (int, string, string) {
	t.Helper()
	n := 2
	if words[0] == "localauthority" {
		n = 3
	}
	name := strings.Join(words[:n], " ")
	f, ok := commandFactories[name]
	if !ok {
		t.Fatalf("%s: not registered", name)
	}
	var stdout, stderr strings.Builder
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
	code := runCommand(name, f(), append(words[n:], extra...), e)
	return code, stdout.String(), stderr.String()
}

// TestAuthorityCommandsListed: each command has SPIRE's name and flags.
func TestAuthorityCommandsListed(t *testing.T) {
	for _, name := range []string{
		"localauthority x509 show", "localauthority x509 prepare", "localauthority x509 activate",
		"localauthority x509 taint", "localauthority x509 revoke",
		"localauthority jwt show", "localauthority jwt prepare", "localauthority jwt activate",
		"localauthority jwt taint", "localauthority jwt revoke",
		"upstreamauthority taint", "upstreamauthority revoke",
	} {
		f, ok := commandFactories[name]
		if !ok {
			t.Errorf("%s: not registered", name)
			continue
		}
		c := f().(*authorityCommand)
		verb := name[strings.LastIndex(name, " ")+1:]
		wantFlag := map[string]string{"show": "", "prepare": "", "activate": "authorityID", "taint": "authorityID", "revoke": "authorityID"}[verb]
		if strings.HasPrefix(name, "upstreamauthority") {
			wantFlag = "subjectKeyID"
		}
		if c.idFlag != wantFlag {
			t.Errorf("%s: ID flag %q, want %q", name, c.idFlag, wantFlag)
		}
	}
}
