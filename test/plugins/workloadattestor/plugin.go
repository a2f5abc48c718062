package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultLabel is the label selector value when the configuration has none.
const defaultLabel = "ext"

// config is the plugin's HCL configuration.
type config struct {
	Label    string `hcl:"label"`
	LogCalls bool   `hcl:"log_calls"`
}

// settings is what Configure leaves for Attest.
type settings struct {
	label       string
	trustDomain string
	logCalls    bool
	faults      fault.Faults
}

// Plugin is the workload attestor. The zero value is not configured; use New.
type Plugin struct {
	workloadattestorv1.UnimplementedWorkloadAttestorServer
	configv1.UnimplementedConfigServer

	// procDir is the proc file system; a field so a test could point it
	// elsewhere, though the tests here read the real one.
	procDir string
	log     hclog.Logger

	mu  sync.RWMutex
	set *settings
}

// New returns an unconfigured plugin reading /proc.
func New() *Plugin {
	return &Plugin{procDir: "/proc", log: hclog.NewNullLogger()}
}

// SetLogger implements pluginsdk.NeedsLogger.
func (p *Plugin) SetLogger(log hclog.Logger) {
	p.log = log
}

// Configure implements the Config service.
func (p *Plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg config
	faults, err := fault.Configure(req, &cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Label == "" {
		cfg.Label = defaultLabel
	}
	set := &settings{label: cfg.Label, trustDomain: req.GetCoreConfiguration().GetTrustDomain(), logCalls: cfg.LogCalls, faults: faults}
	p.mu.Lock()
	p.set = set
	p.mu.Unlock()
	p.log.Info("Configured", "label", set.label, "trust_domain", set.trustDomain, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// Attest implements the WorkloadAttestor service. A pid with no process is
// an error (NotFound), not an empty answer: SPIRE's unix attestor also
// fails (with Internal) when the process is gone, and an attestor must not
// vouch for a workload it cannot see.
func (p *Plugin) Attest(_ context.Context, req *workloadattestorv1.AttestRequest) (*workloadattestorv1.AttestResponse, error) {
	p.mu.RLock()
	set := p.set
	p.mu.RUnlock()
	if set == nil {
		return nil, status.Error(codes.FailedPrecondition, "not configured")
	}
	set.faults.Serve()

	if req.GetPid() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid pid %d", req.GetPid())
	}
	data, err := os.ReadFile(filepath.Join(p.procDir, strconv.Itoa(int(req.GetPid())), "status"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, status.Errorf(codes.NotFound, "no process with pid %d", req.GetPid())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "read process status: %v", err)
	}
	uid, err := realID(data, "Uid:")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "pid %d: %v", req.GetPid(), err)
	}
	gid, err := realID(data, "Gid:")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "pid %d: %v", req.GetPid(), err)
	}
	if set.logCalls {
		p.log.Debug("Attested workload", "pid", req.GetPid(), "uid", uid, "gid", gid)
	}
	return &workloadattestorv1.AttestResponse{SelectorValues: []string{
		"uid:" + uid,
		"gid:" + gid,
		"label:" + set.label,
		"trust_domain:" + set.trustDomain,
	}}, nil
}

// realID returns the first (real) id of the status line that starts with
// key; the line holds real, effective, saved and file-system ids.
func realID(status []byte, key string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, key))
		if len(fields) == 0 {
			return "", fmt.Errorf("empty %s line", key)
		}
		if _, err := strconv.ParseUint(fields[0], 10, 32); err != nil {
			return "", fmt.Errorf("bad %s line %q: %w", key, line, err)
		}
		return fields[0], nil
	}
	return "", fmt.Errorf("no %s line", key)
}
