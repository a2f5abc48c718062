package endpoints

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"

	"github.com/spiffe-hw/spire-hw/internal/peercred"
	"github.com/spiffe-hw/spire-hw/server/api"
)

// localCreds are the admin socket's transport credentials. They secure
// nothing themselves (the socket's file permissions authenticate its
// callers, and the bytes never leave the kernel); they record the caller's
// SO_PEERCRED for the audit log. A caller whose credentials cannot be read
// is still served, with none recorded: the audit line then lacks them.
type localCreds struct{}

func (localCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := api.LocalAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	if u, err := peercred.Read(c); err == nil {
		info.PID, info.UID, info.GID = u.Pid, u.Uid, u.Gid
	}
	return c, info, nil
}

func (localCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("endpoints: admin socket credentials only serve")
}

func (localCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "local"}
}

func (localCreds) Clone() credentials.TransportCredentials { return localCreds{} }

func (localCreds) OverrideServerName(string) error { return nil }
