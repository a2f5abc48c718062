package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/protobuf/proto"
)

// authorityCommand is one of SPIRE's "localauthority x509|jwt ..." and
// "upstreamauthority ..." commands: at most one ID flag, one
// localauthority/v1 call, and SPIRE's output. The commands differ only in
// data, so they are rows of authorityCommands rather than eleven types.
type authorityCommand struct {
	syn string
	// idFlag names the ID flag ("authorityID", "subjectKeyID"); empty for
	// show and prepare.
	idFlag, idUsage, idMissing string
	call                       func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error)
	// errPrefix heads a failed call's error, in SPIRE's words.
	errPrefix string
	pretty    func(e *env, resp proto.Message) error

	id  string
	out outputFormat
}

func (c *authorityCommand) synopsis() string { return c.syn }

func (c *authorityCommand) appendFlags(fs *flag.FlagSet) {
	if c.idFlag != "" {
		fs.StringVar(&c.id, c.idFlag, "", c.idUsage)
	}
	addOutputFlag(fs, &c.out)
}

func (c *authorityCommand) run(ctx context.Context, e *env, cl *clients) error {
	if c.idFlag != "" && c.id == "" {
		return errors.New(c.idMissing)
	}
	resp, err := c.call(ctx, localauthorityv1.NewLocalAuthorityClient(cl.conn), c.id)
	if err != nil {
		return fmt.Errorf("%s: %w", c.errPrefix, err)
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	return c.pretty(e, resp)
}

// printAuthorityState prints one authority as SPIRE's authoritycommon
// does; X.509 authorities also say which upstream certificate signed them.
func printAuthorityState(e *env, s *localauthorityv1.AuthorityState, x509 bool) {
	e.printf("  Authority ID: %s\n", s.GetAuthorityId())
	e.printf("  Expires at: %s\n", time.Unix(s.GetExpiresAt(), 0).UTC())
	if !x509 {
		return
	}
	if s.GetUpstreamAuthoritySubjectKeyId() != "" {
		e.printf("  Upstream authority Subject Key ID: %s\n", s.GetUpstreamAuthoritySubjectKeyId())
		return
	}
	e.printf("  Upstream authority ID: No upstream authority\n")
}

// printStates prints the active, prepared and old authorities of a show.
func printStates(e *env, kind string, x509 bool, active, prepared, old *localauthorityv1.AuthorityState) {
	for i, s := range []struct {
		title string
		state *localauthorityv1.AuthorityState
	}{{"Active", active}, {"Prepared", prepared}, {"Old", old}} {
		if i > 0 {
			e.printf("\n")
		}
		e.printf("%s %s authority:\n", s.title, kind)
		if s.state != nil {
			printAuthorityState(e, s.state, x509)
		} else {
			e.printf("  No %s %s authority found\n", lower(s.title), kind)
		}
	}
}

func lower(s string) string {
	switch s {
	case "Active":
		return "active"
	case "Prepared":
		return "prepared"
	}
	return "old"
}

// printOne prints the single authority a prepare, activate, taint or
// revoke answers with, under SPIRE's title.
func printOne(e *env, title string, s *localauthorityv1.AuthorityState, x509 bool) error {
	e.printf("%s:\n", title)
	if s == nil {
		return fmt.Errorf("internal error: expected to have %s information", lowerFirst(title))
	}
	printAuthorityState(e, s, x509)
	return nil
}

// lowerFirst turns "Tainted X.509 authority" into "tainted X.509 authority"
// for SPIRE's internal-error wording.
func lowerFirst(s string) string {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return s
	}
	return string(s[0]+'a'-'A') + s[1:]
}

// authorityCommands are SPIRE's localauthority and upstreamauthority
// commands, by full name.
var authorityCommands = map[string]func() command{
	"localauthority x509 show": func() command {
		return &authorityCommand{
			syn:       "Shows the local X.509 authorities",
			errPrefix: "could not get X.509 authorities",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, _ string) (proto.Message, error) {
				return c.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
			},
			pretty: func(e *env, m proto.Message) error {
				r := m.(*localauthorityv1.GetX509AuthorityStateResponse)
				printStates(e, "X.509", true, r.Active, r.Prepared, r.Old)
				return nil
			},
		}
	},
	"localauthority x509 prepare": func() command {
		return &authorityCommand{
			syn:       "Prepares a new X.509 authority for use by generating a new key and injecting the resulting CA certificate into the bundle",
			errPrefix: "could not prepare X.509 authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, _ string) (proto.Message, error) {
				return c.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Prepared X.509 authority", m.(*localauthorityv1.PrepareX509AuthorityResponse).PreparedAuthority, true)
			},
		}
	},
	"localauthority x509 activate": func() command {
		return &authorityCommand{
			syn:    "Activates a prepared X.509 authority for use, which will cause it to be used for all X.509 signing operations serviced by this server going forward",
			idFlag: "authorityID", idUsage: "The authority ID of the X.509 authority to activate", idMissing: "an authority ID is required",
			errPrefix: "could not activate X.509 authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Activated X.509 authority", m.(*localauthorityv1.ActivateX509AuthorityResponse).ActivatedAuthority, true)
			},
		}
	},
	"localauthority x509 taint": func() command {
		return &authorityCommand{
			syn:    "Marks the previously active X.509 authority as being tainted",
			idFlag: "authorityID", idUsage: "The authority ID of the X.509 authority to taint", idMissing: "an authority ID is required",
			errPrefix: "could not taint X.509 authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Tainted X.509 authority", m.(*localauthorityv1.TaintX509AuthorityResponse).TaintedAuthority, true)
			},
		}
	},
	"localauthority x509 revoke": func() command {
		return &authorityCommand{
			syn:    "Revokes the previously active X.509 authority by removing it from the bundle and propagating this update throughout the cluster",
			idFlag: "authorityID", idUsage: "The authority ID of the X.509 authority to revoke", idMissing: "an authority ID is required",
			errPrefix: "could not revoke X.509 authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Revoked X.509 authority", m.(*localauthorityv1.RevokeX509AuthorityResponse).RevokedAuthority, true)
			},
		}
	},
	"localauthority jwt show": func() command {
		return &authorityCommand{
			syn:       "Shows the local JWT authorities",
			errPrefix: "could not get JWT authorities",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, _ string) (proto.Message, error) {
				return c.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{})
			},
			pretty: func(e *env, m proto.Message) error {
				r := m.(*localauthorityv1.GetJWTAuthorityStateResponse)
				printStates(e, "JWT", false, r.Active, r.Prepared, r.Old)
				return nil
			},
		}
	},
	"localauthority jwt prepare": func() command {
		return &authorityCommand{
			syn:       "Prepares a new JWT authority for use by generating a new key and injecting it into the bundle",
			errPrefix: "could not prepare JWT authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, _ string) (proto.Message, error) {
				return c.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Prepared JWT authority", m.(*localauthorityv1.PrepareJWTAuthorityResponse).PreparedAuthority, false)
			},
		}
	},
	"localauthority jwt activate": func() command {
		return &authorityCommand{
			syn:    "Activates a prepared JWT authority for use, which will cause it to be used for all JWT signing operations serviced by this server going forward",
			idFlag: "authorityID", idUsage: "The authority ID of the JWT authority to activate", idMissing: "an authority ID is required",
			errPrefix: "could not activate JWT authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Activated JWT authority", m.(*localauthorityv1.ActivateJWTAuthorityResponse).ActivatedAuthority, false)
			},
		}
	},
	"localauthority jwt taint": func() command {
		return &authorityCommand{
			syn:    "Marks the previously active JWT authority as being tainted",
			idFlag: "authorityID", idUsage: "The authority ID of the JWT authority to taint", idMissing: "an authority ID is required",
			errPrefix: "could not taint JWT authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Tainted JWT authority", m.(*localauthorityv1.TaintJWTAuthorityResponse).TaintedAuthority, false)
			},
		}
	},
	"localauthority jwt revoke": func() command {
		return &authorityCommand{
			syn:    "Revokes the previously active JWT authority by removing it from the bundle and propagating this update throughout the cluster",
			idFlag: "authorityID", idUsage: "The authority ID of the JWT authority to revoke", idMissing: "an authority ID is required",
			errPrefix: "could not revoke JWT authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				return printOne(e, "Revoked JWT authority", m.(*localauthorityv1.RevokeJWTAuthorityResponse).RevokedAuthority, false)
			},
		}
	},
	"upstreamauthority taint": func() command {
		return &authorityCommand{
			syn:       "Marks the provided X.509 upstream authority as being tainted",
			idFlag:    "subjectKeyID",
			idUsage:   "The X.509 Subject Key Identifier (or SKID) of the authority's CA certificate of the upstream X.509 authority to taint",
			idMissing: "the Subject Key ID of the X.509 upstream authority is required",
			errPrefix: "could not taint X.509 upstream authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				e.printf("Tainted X.509 upstream authority:\n")
				e.printf("  Subject Key ID: %s\n", m.(*localauthorityv1.TaintX509UpstreamAuthorityResponse).UpstreamAuthoritySubjectKeyId)
				return nil
			},
		}
	},
	"upstreamauthority revoke": func() command {
		return &authorityCommand{
			syn:       "Revokes the previously active X.509 upstream authority by removing it from the bundle and propagating this update throughout the cluster",
			idFlag:    "subjectKeyID",
			idUsage:   "The X.509 Subject Key Identifier (or SKID) of the authority's CA certificate of the X.509 upstream authority to revoke",
			idMissing: "the Subject Key ID of the X.509 upstream authority is required",
			errPrefix: "could not revoke X.509 upstream authority",
			call: func(ctx context.Context, c localauthorityv1.LocalAuthorityClient, id string) (proto.Message, error) {
				return c.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: id})
			},
			pretty: func(e *env, m proto.Message) error {
				e.printf("Revoked X.509 upstream authority:\n")
				e.printf("  Subject Key ID: %s\n", m.(*localauthorityv1.RevokeX509UpstreamAuthorityResponse).UpstreamAuthoritySubjectKeyId)
				return nil
			},
		}
	},
}

// init adds the authority commands to the command table; they live in their
// own table so that cli.go lists families, not every row.
func init() {
	for name, f := range authorityCommands {
		commandFactories[name] = f
	}
}
