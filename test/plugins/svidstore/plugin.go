package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugin's HCL configuration.
type config struct {
	Dir string `hcl:"dir"`
}

// settings is what Configure leaves for the RPCs.
type settings struct {
	dir    string
	faults fault.Faults
}

// Record is the stored form of one X509-SVID.
type Record struct {
	SPIFFEID        string   `json:"spiffe_id"`
	Metadata        []string `json:"metadata"`
	CertChainSHA256 []string `json:"cert_chain_sha256"`
	ExpiresAt       int64    `json:"expires_at"`
}

// Plugin is the SVID store. Use New.
type Plugin struct {
	svidstorev1.UnimplementedSVIDStoreServer
	configv1.UnimplementedConfigServer

	log hclog.Logger

	mu  sync.RWMutex
	set *settings
	// fileMu orders writes and deletes, so a delete never races a put of the
	// record it is looking at.
	fileMu sync.Mutex
}

// New returns an unconfigured plugin.
func New() *Plugin {
	return &Plugin{log: hclog.NewNullLogger()}
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
	if cfg.Dir == "" {
		return nil, status.Error(codes.InvalidArgument, "dir is required")
	}
	if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
		return nil, status.Errorf(codes.InvalidArgument, "dir %q is not a directory", cfg.Dir)
	}
	p.mu.Lock()
	p.set = &settings{dir: cfg.Dir, faults: faults}
	p.mu.Unlock()
	p.log.Info("Configured", "dir", cfg.Dir, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// PutX509SVID implements the SVIDStore service.
func (p *Plugin) PutX509SVID(_ context.Context, req *svidstorev1.PutX509SVIDRequest) (*svidstorev1.PutX509SVIDResponse, error) {
	set, err := p.settings()
	if err != nil {
		return nil, err
	}
	set.faults.Serve()

	svid := req.GetSvid()
	if svid == nil {
		return nil, status.Error(codes.InvalidArgument, "missing SVID")
	}
	id, err := spiffeid.FromString(svid.GetSpiffeID())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "SPIFFE ID: %v", err)
	}
	if len(svid.GetCertChain()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty certificate chain")
	}
	rec := Record{SPIFFEID: id.String(), Metadata: append([]string{}, req.GetMetadata()...), ExpiresAt: svid.GetExpiresAt()}
	for _, der := range svid.GetCertChain() {
		sum := sha256.Sum256(der)
		rec.CertChainSHA256 = append(rec.CertChainSHA256, hex.EncodeToString(sum[:]))
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal record: %v", err)
	}
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	path := filepath.Join(set.dir, FileName(id.String()))
	if err := writeAtomic(path, data); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p.log.Debug("Stored SVID", "spiffe_id", id.String(), "path", path)
	return &svidstorev1.PutX509SVIDResponse{}, nil
}

// DeleteX509SVID implements the SVIDStore service.
func (p *Plugin) DeleteX509SVID(_ context.Context, req *svidstorev1.DeleteX509SVIDRequest) (*svidstorev1.DeleteX509SVIDResponse, error) {
	set, err := p.settings()
	if err != nil {
		return nil, err
	}
	set.faults.Serve()

	if len(req.GetMetadata()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "metadata is required")
	}
	want := sortedCopy(req.GetMetadata())
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	paths, err := filepath.Glob(filepath.Join(set.dir, "*.json"))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "list records: %v", err)
	}
	deleted := 0
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "read record: %v", err)
		}
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			// Not one of ours; a store leaves what it did not write.
			continue
		}
		if !slices.Equal(sortedCopy(rec.Metadata), want) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, status.Errorf(codes.Internal, "delete record: %v", err)
		}
		deleted++
		p.log.Debug("Deleted SVID", "spiffe_id", rec.SPIFFEID, "path", path)
	}
	if deleted == 0 {
		p.log.Warn("No stored SVID has this metadata", "metadata", strings.Join(want, ","))
	}
	return &svidstorev1.DeleteX509SVIDResponse{}, nil
}

func (p *Plugin) settings() (*settings, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.set == nil {
		return nil, status.Error(codes.FailedPrecondition, "not configured")
	}
	return p.set, nil
}

// FileName is the record's file name for a SPIFFE ID: every byte outside
// [A-Za-z0-9.-] becomes '_', so the name is one path element.
func FileName(spiffeID string) string {
	var b strings.Builder
	for i := 0; i < len(spiffeID); i++ {
		c := spiffeID[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String() + ".json"
}

// writeAtomic writes data to path by a temp file in the same directory and
// a rename, so a reader sees the old record or the new one, never half.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".svid-*.tmp")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
