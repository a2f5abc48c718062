package api

import (
	"github.com/spiffe-hw/spire-hw/wire/push"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/debug/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"google.golang.org/grpc"
)

// Register adds every service to s, SPIRE's and, unless
// Config.NoChangeNotices, our notice stream (wire/push). The server must be built with the
// API's interceptors (UnaryInterceptor, StreamInterceptor), which
// authenticate and authorize each call.
func (a *API) Register(s grpc.ServiceRegistrar) {
	agentv1.RegisterAgentServer(s, &AgentService{api: a})
	entryv1.RegisterEntryServer(s, &EntryService{api: a})
	svidv1.RegisterSVIDServer(s, &SVIDService{api: a})
	bundlev1.RegisterBundleServer(s, &BundleService{api: a})
	debugv1.RegisterDebugServer(s, &DebugService{api: a})
	loggerv1.RegisterLoggerServer(s, &LoggerService{api: a})
	localauthorityv1.RegisterLocalAuthorityServer(s, &LocalAuthorityService{api: a})
	trustdomainv1.RegisterTrustDomainServer(s, &TrustDomainService{api: a})
	if !a.cfg.NoChangeNotices {
		// Off, the service is unknown, as on SPIRE's server: agents get
		// Unimplemented and poll, and no feed ever runs.
		push.RegisterServer(s, &NoticeService{api: a})
	}
}
