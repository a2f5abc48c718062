package external

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// facade gives every error the prefix SPIRE's facades give it, the plugin
// type and name, so a log line says which plugin failed.
type facade struct {
	name   string
	prefix string
}

func newFacade(typ, name string) facade {
	return facade{name: name, prefix: typ + "(" + name + "): "}
}

// wrapErr prefixes an error that came out of the plugin, keeping its gRPC
// code and details: the caller decides on the code, not the adapter.
func (f facade) wrapErr(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		pb := st.Proto()
		if strings.HasPrefix(pb.Message, f.prefix) {
			return err
		}
		pb.Message = f.prefix + strings.TrimPrefix(pb.Message, f.name+": ")
		return status.FromProto(pb).Err()
	}
	if strings.HasPrefix(err.Error(), f.prefix) {
		return err
	}
	return fmt.Errorf("%s%w", f.prefix, err)
}

// errorf makes a gRPC status error with the plugin prefix.
func (f facade) errorf(code codes.Code, format string, args ...any) error {
	return status.Errorf(code, f.prefix+format, args...)
}
