package api

import "google.golang.org/grpc/credentials"

// LocalAuthInfo is what the admin socket's transport records of a local
// caller: the credentials the kernel took at its connect(2)
// (SO_PEERCRED). The audit log reports them as SPIRE's caller_uid,
// caller_gid and caller_path.
type LocalAuthInfo struct {
	credentials.CommonAuthInfo
	PID      int32
	UID, GID uint32
}

// AuthType implements credentials.AuthInfo.
func (LocalAuthInfo) AuthType() string { return "local" }
