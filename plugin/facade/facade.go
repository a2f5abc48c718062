// Package facade gives the errors of the adapters that front external
// plugins (server/keymanager/external, agent/workloadattestor/external, ...)
// the form SPIRE's plugin facades give them: "<type>(<name>): <message>",
// with the gRPC status code and details of the original kept.
//
// Operators grep SPIRE's logs for these prefixes, and callers decide on the
// code (a plugin's NotFound stays NotFound), so an adapter wraps every error
// that came out of its plugin with WrapErr and makes its own refusals with
// Errorf. It imports nothing of this project, so both the server and the
// agent can use it.
package facade

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Facade names one loaded plugin for its error messages.
type Facade struct {
	// Type is the plugin type, as SPIRE spells it in the prefix
	// ("keymanager", "nodeattestor"); it is lower-cased, as SPIRE does.
	Type string
	// Name is the plugin's name in the configuration.
	Name string
}

// prefix is SPIRE's message prefix, "<type>(<name>): ".
func (f Facade) prefix() string {
	return strings.ToLower(f.Type) + "(" + f.Name + "): "
}

// WrapErr prefixes an error that came out of the plugin. A gRPC status keeps
// its code and details; a plugin's own "<name>: " prefix is replaced rather
// than repeated; an error that already has the prefix is returned as it is,
// so wrapping twice changes nothing. Any other error is wrapped with %w.
// A nil error stays nil.
func (f Facade) WrapErr(err error) error {
	if err == nil {
		return nil
	}
	prefix := f.prefix()
	if st, ok := status.FromError(err); ok {
		// The proto is edited, not the Status rebuilt from code and
		// message, so that the details survive.
		pb := st.Proto()
		if strings.HasPrefix(pb.GetMessage(), prefix) {
			return err
		}
		pb.Message = prefix + strings.TrimPrefix(pb.GetMessage(), f.Name+": ")
		return status.FromProto(pb).Err()
	}
	if strings.HasPrefix(err.Error(), prefix) {
		return err
	}
	return fmt.Errorf("%s%w", prefix, err)
}

// Errorf makes a gRPC status error with the given code and the prefix, for
// the adapter's own refusals (an empty or malformed plugin response, an
// invalid request).
func (f Facade) Errorf(code codes.Code, format string, args ...any) error {
	// The prefix goes in as an argument, not into the format, so that a
	// name with a '%' in it is printed as it is.
	return status.Errorf(code, "%s"+format, append([]any{f.prefix()}, args...)...)
}
